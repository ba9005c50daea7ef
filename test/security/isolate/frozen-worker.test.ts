/**
 * A frozen isolate worker (SIGSTOP: a stand-in for a worker whose main thread no longer
 * runs) must be replaced, whoever notices first: dispatch's deadline (which cancels the
 * call) or the backend's backstop. The backstop has one owner (WorkerProcess) and a
 * cancel never clears it, so with dispatch's default settings, and with a short
 * dispatch grace that fires first, a call times out and later calls succeed on a
 * replacement worker.
 */
// invariant: isolate:worker:frozen-replaced
import assert from 'node:assert/strict';
import {afterEach, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {DEFAULT_DISPATCH, Dispatcher, type DispatcherOptions} from '../../../src/dispatch/dispatcher.ts';
import {isAlive} from '../../support/processes.ts';
import {job, startBackend, waitFor} from '../../integration/isolate/helpers.ts';

describe('a frozen isolate worker', () => {
  let backend: IsolateBackend | undefined;
  let frozen: number | undefined;
  afterEach(async () => {
    if (frozen !== undefined && isAlive(frozen)) process.kill(frozen, 'SIGKILL');
    frozen = undefined;
    await backend?.close();
    backend = undefined;
  });

  const scenario = async (options: DispatcherOptions, cancelAfterMs?: number): Promise<void> => {
    ({backend} = await startBackend());
    const dispatcher = new Dispatcher({isolate: backend}, options);
    const [pid] = backend.workerPids();
    assert.ok(pid);
    frozen = pid;
    process.kill(pid, 'SIGSTOP');
    const controller = new AbortController();
    if (cancelAfterMs !== undefined) setTimeout(() => controller.abort(), cancelAfterMs);
    const first = await dispatcher.run(job('export default () => 1', {}, {timeoutMs: 500}), controller.signal);
    assert.equal(first.failed, true);
    assert.ok(cancelAfterMs === undefined ? first.timedOut : first.isCanceled, JSON.stringify(first));
    await waitFor(() => !isAlive(pid), 5000, 'the frozen worker to be killed');
    // Later calls go through dispatch's default settings: the short grace of one scenario is
    // the condition of the first call only; with it, a later call that waits for the
    // replacement worker to start on a busy host would be cancelled by dispatch after 100 ms
    // of slack (seen: 5.1 s beside two CPU burners), which says nothing about the frozen worker.
    const laterDispatcher = new Dispatcher({isolate: backend}, DEFAULT_DISPATCH);
    for (let i = 0; i < 3; i++) {
      const later = await laterDispatcher.run(job('export default (args) => args.i * 2', {i}, {timeoutMs: 5000}), new AbortController().signal);
      assert.equal(later.failed, false, JSON.stringify(later));
      assert.equal(later.stdout, String(i * 2));
    }
    const [replacement] = backend.workerPids();
    assert.ok(replacement !== undefined && replacement !== pid, 'a replacement worker serves');
  };

  test('with dispatch\'s default settings: the call times out, later calls succeed on a replacement', async () => {
    await scenario(DEFAULT_DISPATCH);
  });

  test('with a dispatch grace shorter than the backstop (dispatch cancels first): the worker is still replaced', async () => {
    await scenario({...DEFAULT_DISPATCH, isolate: {concurrency: 16, maxQueued: 256}, graceMs: 100});
  });

  test('a client cancel of a call in a frozen worker does not leave the worker frozen', async () => {
    await scenario(DEFAULT_DISPATCH, 100);
  });
});
