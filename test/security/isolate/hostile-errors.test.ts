/**
 * Hostile thrown values. isolated-vm copies an error that escapes a task (a throw during
 * module evaluation, an unhandled rejection) out of the isolate *after* its timeout has
 * ended; a Proxy whose traps loop hangs that copy, and disposing the isolate does not
 * stop the thread (seen with isolated-vm 7.0.1). The call must still end at its deadline,
 * and the worker, which now burns a thread, must be replaced.
 */
// invariant: isolate:errors:hostile-values-contained
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, run, startBackend, waitFor, type CapturedLog} from '../../integration/isolate/helpers.ts';

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

  test('a Proxy with looping traps thrown during module evaluation ends at timeoutMs and its worker is replaced', async () => {
    await expectWorkerReplaced('throw new Proxy({}, {get() { for (;;); }, getPrototypeOf() { for (;;); }});');
  });

  test('an unhandled rejection with a looping Proxy reason ends at timeoutMs and its worker is replaced', async () => {
    await expectWorkerReplaced('export default () => { Promise.reject(new Proxy({}, {get() { for (;;); }})); return 1; }');
  });

  test('a thrown Proxy caught by the prelude is described under the timeout', async () => {
    const result = await run(backend, 'export default () => { throw new Proxy({}, {get() { for (;;); }}); }');
    assert.equal(result.timedOut, true);
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
