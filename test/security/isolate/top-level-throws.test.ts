/**
 * Hostile values thrown at a module's top level, or rejecting its top-level await (issue
 * 11 leftover): isolated-vm copies such a value out of the isolate itself, after the
 * isolate's time limit (its task epilogue reads `message` and `stack` and converts them
 * to strings, running getters, Proxy traps, `toString`/`Symbol.toPrimitive`), and copies
 * a huge message whole. JavaScript cannot catch a module's top-level throw (no dynamic
 * import in isolated-vm 7.0.1), so the prelude cannot describe these values as it does
 * errors thrown by the default export (hostile-errors.test.ts).
 *
 * The fix: the tool module is rewritten (module-wrap.ts) so that its top level runs inside
 * a function the prelude calls in a try/catch, inside the isolate; the prelude describes
 * what it catches from own data properties only, under the call's deadline, so isolated-vm
 * never copies the tool's value. Asserted here for each variant beside 10 innocent calls in
 * flight in the same worker: the hostile call ends with its own code (TIMEOUT, or a failure
 * with a bounded error), every innocent call completes with its own result, the backend
 * answers afterwards, and the values whose accessors spin twice cost no worker restart
 * (same worker pids, same restart count).
 */
// invariant: isolate:errors:top-level-throws-contained
// invariant: isolate:errors:top-level-caught-in-isolate
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

/**
 * Sleeps without CPU until the wall-clock time `args.until` (ms since the epoch), then
 * returns `{n}`: surely in flight when the hostile call's value is copied.
 */
const INNOCENT = 'export default (args) => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, args.until - Date.now())); return {n: args.n}; }';
const INNOCENT_CALLS = 10;
const INNOCENT_SLEEP_MS = 4000;
/** Generous: a wedge costs the innocent calls nothing but latency, on a slow CI host. */
const INNOCENT_LIMITS = {timeoutMs: 20_000, memoryMb: 32};
const HOSTILE_LIMITS = {timeoutMs: 2000, memoryMb: 128};

const SPIN = '{ for (;;); }';
const VARIANTS: Record<string, string> = {
  'an Error with a 48 MB message': 'throw new Error("m".repeat(48 * 2 ** 20)); export default () => 1;',
  'an Error whose message and stack getters spin': `const e = new Error("x");
    Object.defineProperty(e, "message", {get() ${SPIN}}); Object.defineProperty(e, "stack", {get() ${SPIN}});
    throw e; export default () => 1;`,
  'a Proxy whose get trap spins': `throw new Proxy({}, {get() ${SPIN}}); export default () => 1;`,
  'a message whose Symbol.toPrimitive spins': `throw {message: {[Symbol.toPrimitive]() ${SPIN}}, stack: {toString() ${SPIN}}}; export default () => 1;`,
  'an object whose prototype chain has spinning accessors': `class E extends Error {}
    Object.defineProperty(E.prototype, "message", {get() ${SPIN}}); Object.defineProperty(E.prototype, "stack", {get() ${SPIN}});
    throw Object.create(E.prototype); export default () => 1;`,
  'a top-level await rejected with a spinning Proxy': `await Promise.reject(new Proxy({}, {get() ${SPIN}})); export default () => 1;`,
};

describe('hostile values thrown at module top level, beside innocent calls', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  for (const [name, source] of Object.entries(VARIANTS)) {
    test(`${name}: the call ends with its own code, no innocent call fails, the backend answers`, async () => {
      const hostile = run(backend, source, {limits: HOSTILE_LIMITS}).then((result) => ({result}), (error: unknown) => ({error}));
      const until = Date.now() + INNOCENT_SLEEP_MS;
      const innocent = await Promise.all(Array.from({length: INNOCENT_CALLS}, (_, n) => run(backend, INNOCENT, {args: {n, until}, limits: INNOCENT_LIMITS})
        .then((result) => ({n, result}), (error: unknown) => ({n, error}))));
      const failures = innocent.filter((o) => !('result' in o) || o.result.failed || o.result.stdout !== JSON.stringify({n: o.n}));
      assert.deepEqual(failures, [], `innocent calls failed: ${JSON.stringify(failures)}`);
      const outcome = await hostile;
      assert.ok('result' in outcome, `the hostile call rejected: ${String((outcome as {error: unknown}).error)}`);
      const {result} = outcome;
      assert.equal(result.failed, true, JSON.stringify(result));
      assert.ok(result.timedOut || result.outOfMemory || result.error !== undefined, `no code of its own: ${JSON.stringify(result)}`);
      assert.ok((result.error?.message.length ?? 0) <= 4096 && (result.error?.name.length ?? 0) <= 200, 'the error is bounded');
      await assertStillServes(backend);
    });
  }

  for (const name of ['a Proxy whose get trap spins', 'an Error whose message and stack getters spin', 'a top-level await rejected with a spinning Proxy']) {
    test(`${name}, beside innocent calls, costs no worker restart`, async () => {
      const restarts = backend.stats().restarts;
      const pids = backend.workerPids();
      const until = Date.now() + INNOCENT_SLEEP_MS;
      const innocent = Promise.all(Array.from({length: INNOCENT_CALLS}, (_, n) => run(backend, INNOCENT, {args: {n, until}, limits: INNOCENT_LIMITS})
        .then((result) => ({n, result}), (error: unknown) => ({n, error}))));
      const result = await run(backend, VARIANTS[name]!, {limits: HOSTILE_LIMITS});
      assert.equal(result.failed, true, JSON.stringify(result));
      assert.ok(result.timedOut || result.error !== undefined, `no code of its own: ${JSON.stringify(result)}`);
      const failures = (await innocent).filter((o) => !('result' in o) || o.result.failed || o.result.stdout !== JSON.stringify({n: o.n}));
      assert.deepEqual(failures, [], `innocent calls failed: ${JSON.stringify(failures)}`);
      // A wedged thread is reported 1 s after the isolate's disposal: wait past that.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      assert.deepEqual(backend.workerPids(), pids, 'the worker was replaced');
      assert.equal(backend.stats().restarts, restarts, 'the worker was restarted');
      await assertStillServes(backend);
    });
  }

  test('an ordinary Error thrown at top level reports its message and the line:column the author wrote', async () => {
    const source = '// line 1\nconst a = 1;\n\n   throw new Error("top " + a);\nexport default () => 1;\n';
    const result = await run(backend, source, {limits: HOSTILE_LIMITS});
    assert.equal(result.failed, true);
    assert.deepEqual(result.error, {name: 'Error', message: 'top 1'});
    // The line and column, as V8 sees them, through the stack the tool itself can read.
    const located = await run(backend, 'let where = "";\ntry {\n  null.x;\n} catch (e) { where = e.stack.split("\\n")[1]; }\nexport default () => where;\n', {limits: HOSTILE_LIMITS});
    assert.match(located.stdout, /:3:8\)?"$/, located.stdout);
  });

  test('a syntax error reports the author\'s line and column; imports are refused as before', async () => {
    const syntax = await run(backend, 'const a = 1;\n\nlet b = a a;\nexport default () => b;', {limits: HOSTILE_LIMITS});
    assert.equal(syntax.error?.name, 'SyntaxError', JSON.stringify(syntax));
    assert.match(syntax.error?.message ?? '', /:3:11\]$/);
    const imports = await run(backend, 'import x from "node:fs";\nexport default () => x;', {limits: HOSTILE_LIMITS});
    assert.match(imports.error?.message ?? '', /^Imports are not available to isolate tools \(the module imports "node:fs"\)/);
  });
});
