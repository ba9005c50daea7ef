/**
 * Hostile values thrown at a module's top level, or rejecting its top-level await (issue
 * 11 leftover): isolated-vm copies such a value out of the isolate itself, after the
 * isolate's time limit (its task epilogue reads `message` and `stack` and converts them
 * to strings, running getters, Proxy traps, `toString`/`Symbol.toPrimitive`), and copies
 * a huge message whole. JavaScript cannot catch a module's top-level throw (no dynamic
 * import in isolated-vm 7.0.1), so the prelude cannot describe these values as it does
 * errors thrown by the default export (hostile-errors.test.ts).
 *
 * What holds today, asserted here for each variant beside 10 innocent calls in flight in
 * the same worker: the hostile call ends with its own code (TIMEOUT, or a failure with a
 * bounded error), every innocent call completes with its own result, and the backend
 * answers afterwards. What does not hold yet (marked todo): that such a call costs no
 * worker restart. A value whose accessors spin twice (a Proxy's `get` trap, getters on both
 * `message` and `stack`) keeps the copying thread spinning after the isolate's disposal
 * ended the first spin, so the worker is retired (see isolate:errors:hostile-values-contained).
 */
// invariant: isolate:errors:top-level-throws-contained
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

  test('a value whose accessors spin twice costs no worker restart', {todo: 'isolated-vm copies the value outside the time limit; needs a catch inside the isolate (no dynamic import in isolated-vm 7.0.1)'}, async () => {
    const restarts = backend.stats().restarts;
    const pids = backend.workerPids();
    await run(backend, VARIANTS['a Proxy whose get trap spins']!, {limits: HOSTILE_LIMITS});
    await new Promise((resolve) => setTimeout(resolve, 2000));
    assert.deepEqual(backend.workerPids(), pids);
    assert.equal(backend.stats().restarts, restarts);
  });
});
