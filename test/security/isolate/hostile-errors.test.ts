/**
 * Hostile thrown values. isolated-vm copies an error that escapes a task (an unhandled
 * rejection; a throw during module evaluation did too before the module rewrite,
 * module-wrap.ts, moved the top level inside the prelude's try/catch) out of the isolate *after* its timeout has
 * ended; a Proxy whose traps loop hangs that copy, and disposing the isolate does not
 * stop the thread (seen with isolated-vm 7.0.1's prebuilt binary; toolcell's patch, built
 * by scripts/build-isolated-vm.mjs, makes dispose() stop it). The call must still end at
 * its deadline, and a worker that burns a wedged thread must be replaced.
 */
// invariant: isolate:errors:hostile-values-contained
// invariant: isolate:prelude:owns-what-it-touches
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, expectPatchedIsolatedVm, run, startBackend, waitFor, type CapturedLog} from '../../integration/isolate/helpers.ts';

describe('hostile thrown values', () => {
  let backend: IsolateBackend;
  let log: CapturedLog;
  before(async () => {
    ({backend, log} = await startBackend());
  });
  after(() => backend.close());

  const expectWorkerReplaced = async (source: string): Promise<void> => {
    const [pid] = backend.workerPids();
    assert.ok(pid);
    const result = await run(backend, source);
    assert.equal(result.timedOut, true, JSON.stringify(result));
    assert.equal(result.failed, true);
    assertBounded(result);
    await assertStillServes(backend);
    await waitFor(() => !backend.workerPids().includes(pid), 4000, 'the wedged worker to be retired');
    assert.ok(log.lines.some((line) => line.msg === 'isolate worker has a wedged isolate thread; starting a replacement and retiring it'));
    await assertStillServes(backend);
  };

  test('a Proxy with looping traps thrown during module evaluation ends at timeoutMs and costs no worker restart (caught inside the isolate)', async () => {
    const pids = backend.workerPids();
    const restarts = backend.stats().restarts;
    const result = await run(backend, 'throw new Proxy({}, {get() { for (;;); }, getPrototypeOf() { for (;;); }});');
    assert.equal(result.failed, true, JSON.stringify(result));
    assert.ok(result.timedOut || result.error !== undefined, JSON.stringify(result));
    assertBounded(result);
    // A wedged thread is reported 1 s after the isolate's disposal: wait past that.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    assert.deepEqual(backend.workerPids(), pids);
    assert.equal(backend.stats().restarts, restarts);
    await assertStillServes(backend);
  });

  // With isolated-vm's prebuilt binary the copy of the reason wedges its thread past dispose();
  // with toolcell's patch built (scripts/build-isolated-vm.mjs) dispose() stops the trap and
  // the worker must stay: each build is held to what it can do, never to less.
  const patched = expectPatchedIsolatedVm();
  test(`an unhandled rejection with a looping Proxy reason ends at timeoutMs and its worker is ${patched ? 'kept (patched isolated-vm)' : 'replaced'}`, async () => {
    const source = 'export default () => { Promise.reject(new Proxy({}, {get() { for (;;); }})); return 1; }';
    if (!patched) {
      await expectWorkerReplaced(source);
      return;
    }
    const pids = backend.workerPids();
    const restarts = backend.stats().restarts;
    const result = await run(backend, source);
    assert.equal(result.timedOut, true, JSON.stringify(result));
    assert.equal(result.failed, true);
    assertBounded(result);
    // A wedged thread is reported 1 s after the isolate's disposal: wait past that.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    assert.deepEqual(backend.workerPids(), pids);
    assert.equal(backend.stats().restarts, restarts);
    await assertStillServes(backend);
  });

  test('a thrown Proxy caught by the prelude is described without running its get trap', async () => {
    const result = await run(backend, 'export default () => { throw new Proxy({}, {get() { for (;;); }}); }');
    assert.equal(result.failed, true, JSON.stringify(result));
    assertBounded(result);
    await assertStillServes(backend);
  });

  test('a thrown Proxy whose descriptor traps loop is stopped at its deadline (the tool\'s own code)', async () => {
    const result = await run(backend, 'export default () => { throw new Proxy({}, {getOwnPropertyDescriptor() { for (;;); }, getPrototypeOf() { for (;;); }}); }');
    assert.equal(result.failed, true, JSON.stringify(result));
    assertBounded(result);
    await assertStillServes(backend);
  });

  test('an unhandled rejection with an Error fails the call with that error', async () => {
    const result = await run(backend, 'export default () => { Promise.reject(new TypeError("forgotten")); return 1; }');
    assert.equal(result.failed, true);
    assert.deepEqual(result.error, {name: 'TypeError', message: 'forgotten'});
    await assertStillServes(backend);
  });

  test('an error whose toString throws is still described', async () => {
    const result = await run(backend, 'export default () => { throw {get message() { throw new Error("no"); }, toString() { throw new Error("no"); }}; }');
    assert.equal(result.failed, true);
    assert.equal(result.error?.name, 'Error');
    assert.equal(typeof result.error?.message, 'string');
    await assertStillServes(backend);
  });

  test('an error with a huge message is cut', async () => {
    const result = await run(backend, 'export default () => { throw new Error("m".repeat(10 * 2 ** 20)); }', {limits: {memoryMb: 64}});
    assert.equal(result.failed, true);
    assert.ok((result.error?.message.length ?? 0) <= 4096);
    await assertStillServes(backend);
  });
});

/**
 * Cheap wedges through accessors (issue 11 item 11): the prelude reads and writes only
 * what it owns, so a tool's getters and inherited setters never run inside it. Each
 * call must end promptly (far below its deadline) with the tool's own failure reported
 * as a failure, and the worker must not be restarted.
 */
describe('accessors the prelude must not run', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  /** A deadline the call must stay far below: reaching it would mean the prelude spun. */
  const DEADLINE_MS = 10_000;
  const expectPromptFailure = async (source: string, expected: {name: string; message: string}): Promise<void> => {
    const pids = backend.workerPids();
    const restarts = backend.stats().restarts;
    const result = await run(backend, source, {limits: {timeoutMs: DEADLINE_MS}});
    assert.equal(result.failed, true, JSON.stringify(result));
    assert.equal(result.timedOut, false, JSON.stringify(result));
    assert.ok(result.elapsedMs < DEADLINE_MS / 2, `took ${Math.round(result.elapsedMs)} ms`);
    assert.deepEqual(result.error, expected);
    await assertStillServes(backend);
    assert.deepEqual(backend.workerPids(), pids, 'the worker was not restarted');
    assert.equal(backend.stats().restarts, restarts);
  };
  const NO_MESSAGE = {name: 'Error', message: 'A value without a message (a string data property) was thrown.'};

  test('a thrown Error whose message getter spins fails promptly', async () => {
    await expectPromptFailure('export default () => { const e = new Error("x"); Object.defineProperty(e, "message", {get() { for (;;); }}); throw e; }', NO_MESSAGE);
  });

  test('a rejected Error whose name getter spins fails promptly, with its message', async () => {
    await expectPromptFailure('export default async () => { await null; const e = new TypeError("x"); Object.defineProperty(e, "name", {get() { for (;;); }}); throw e; }', {name: 'Error', message: 'x'});
  });

  test('a thrown object whose toString spins fails promptly', async () => {
    await expectPromptFailure('export default () => { throw {toString() { for (;;); }}; }', NO_MESSAGE);
  });

  test('an Object.prototype.error setter that spins cannot wedge the report of a failure', async () => {
    await expectPromptFailure('export default async () => { Object.defineProperty(Object.prototype, "error", {set(v) { for (;;); }, configurable: true}); throw new Error("own failure"); }',
      {name: 'Error', message: 'own failure'});
  });

  test('an Object.prototype.error setter that swallows cannot turn the tool\'s failure into success', async () => {
    await expectPromptFailure('export default async () => { Object.defineProperty(Object.prototype, "error", {set(v) {}, configurable: true}); throw new Error("own failure"); }',
      {name: 'Error', message: 'own failure'});
  });

  test('getters on Object.prototype named like descriptor fields (value, get, set) do not run', async () => {
    await expectPromptFailure(`export default () => {
      for (const key of ['value', 'get', 'set', 'name', 'message', 'stdout', 'stderr', 'truncated']) {
        Object.defineProperty(Object.prototype, key, {__proto__: null, get() { for (;;); }, set(v) { for (;;); }, configurable: true});
      }
      throw new RangeError("own failure");
    }`, {name: 'RangeError', message: 'own failure'});
  });

  test('console.log of an error whose stack getter spins prints name and message, promptly', async () => {
    const pids = backend.workerPids();
    const result = await run(backend, 'export default () => { const e = new Error("shown"); Object.defineProperty(e, "stack", {get() { for (;;); }}); console.log(e); return 1; }', {limits: {timeoutMs: DEADLINE_MS}});
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.equal(result.stderr, 'Error: shown\n');
    assert.deepEqual(backend.workerPids(), pids);
  });
});

