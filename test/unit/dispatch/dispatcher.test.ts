import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {Backend, ExecutionResult, IsolateJob} from '../../../src/backends/backend.ts';
import {START_TIMEOUT_MS} from '../../../src/backends/container/container-backend.ts';
import {DEFAULT_DISPATCH, Dispatcher} from '../../../src/dispatch/dispatcher.ts';
import {ToolcellError} from '../../../src/errors.ts';

const ok = (extra: Partial<ExecutionResult> = {}): ExecutionResult => ({
  failed: false, timedOut: false, isCanceled: false, outOfMemory: false, truncated: false, stdout: '1', stderr: '', durationMs: 1, ...extra,
});

/** A backend whose calls last `ms` unless aborted; records concurrency. */
function fakeBackend(ms: number) {
  const state = {running: 0, maxRunning: 0, started: 0, ignoreAbort: false};
  const backend: Backend<IsolateJob> = {
    kind: 'isolate',
    async run(_job, {signal}) {
      state.started++;
      state.running++;
      state.maxRunning = Math.max(state.maxRunning, state.running);
      try {
        return await new Promise<ExecutionResult>((resolve) => {
          const timer = setTimeout(() => resolve(ok()), ms);
          if (!state.ignoreAbort) {
            signal.addEventListener('abort', () => {
              clearTimeout(timer);
              setTimeout(() => resolve(ok({isCanceled: true, failed: true})), 20);
            }, {once: true});
          }
        });
      } finally {
        state.running--;
      }
    },
    async close() {},
  };
  return {backend, state};
}

const job = (timeoutMs = 1000): IsolateJob => ({kind: 'isolate', id: 'j', source: '', filename: 'f.js', args: {}, limits: {timeoutMs, memoryMb: 16, outputBytes: 100}});
const options = (concurrency: number, maxQueued: number, queueWaitMs = 5000) =>
  ({isolate: {concurrency, maxQueued}, container: {concurrency: 1, maxQueued: 1}, queueWaitMs, graceMs: 50});

test('a full queue answers BUSY at once, and every call is answered', async () => {
  const {backend} = fakeBackend(50);
  const d = new Dispatcher({isolate: backend}, options(2, 3));
  const never = new AbortController().signal;
  const settled = await Promise.allSettled(Array.from({length: 10}, () => d.run(job(), never)));
  const done = settled.filter((s) => s.status === 'fulfilled').length;
  const busy = settled.filter((s) => s.status === 'rejected' && (s.reason as ToolcellError).code === 'BUSY').length;
  assert.equal(done, 5, '2 running + 3 queued complete');
  assert.equal(busy, 5);
  assert.equal(done + busy, 10, 'no call lost');
});

test('concurrency is bounded and the slot is held until the sandbox has stopped', async () => {
  const {backend, state} = fakeBackend(30);
  const d = new Dispatcher({isolate: backend}, options(3, 100));
  const controllers = Array.from({length: 12}, () => new AbortController());
  const calls = controllers.map((c) => d.run(job(), c.signal));
  setTimeout(() => controllers.slice(0, 6).forEach((c) => c.abort()), 5);
  await Promise.allSettled(calls);
  assert.ok(state.maxRunning <= 3, `at most 3 ran at once, saw ${state.maxRunning}`);
});

test('a call cancelled while queued never starts and ends CANCELLED', async () => {
  const {backend, state} = fakeBackend(100);
  const d = new Dispatcher({isolate: backend}, options(1, 10));
  const first = d.run(job(), new AbortController().signal);
  const c = new AbortController();
  const second = d.run(job(), c.signal);
  c.abort();
  await assert.rejects(second, (e: unknown) => e instanceof ToolcellError && e.code === 'CANCELLED');
  await first;
  assert.equal(state.started, 1);
});

test('a queued call stopped with a CANCELLED reason (server shutdown) ends with that reason, not as a client cancellation', async () => {
  const {backend, state} = fakeBackend(100);
  const d = new Dispatcher({isolate: backend}, options(1, 10));
  const first = d.run(job(), new AbortController().signal);
  const stop = new AbortController();
  const second = d.run(job(), AbortSignal.any([new AbortController().signal, stop.signal]));
  stop.abort(new ToolcellError('CANCELLED', 'The server is shutting down; the call was stopped.'));
  await assert.rejects(second, (e: unknown) => e instanceof ToolcellError && e.code === 'CANCELLED' && /shutting down/.test(e.message));
  const third = d.run(job(), stop.signal);
  await assert.rejects(third, (e: unknown) => e instanceof ToolcellError && /shutting down/.test(e.message));
  await first;
  assert.equal(state.started, 1);
});

test('a call that waits longer than queueWaitMs ends TIMEOUT without starting', async () => {
  const {backend, state} = fakeBackend(200);
  const d = new Dispatcher({isolate: backend}, options(1, 10, 50));
  const first = d.run(job(), new AbortController().signal);
  await assert.rejects(d.run(job(), new AbortController().signal), (e: unknown) => e instanceof ToolcellError && e.code === 'TIMEOUT');
  await first;
  assert.equal(state.started, 1);
});

test('cancelling a running call reaches the backend, which reports isCanceled', async () => {
  const {backend} = fakeBackend(10_000);
  const d = new Dispatcher({isolate: backend}, options(1, 1));
  const c = new AbortController();
  const call = d.run(job(), c.signal);
  setTimeout(() => c.abort(), 10);
  const result = await call;
  assert.equal(result.isCanceled, true);
});

test('the backstop deadline stops a backend that ignores its own timeout and reports timedOut', async () => {
  const {backend} = fakeBackend(10_000);
  const d = new Dispatcher({isolate: backend}, options(1, 1));
  const result = await d.run(job(30), new AbortController().signal);
  assert.equal(result.timedOut, true);
  assert.equal(result.isCanceled, false);
});

test('a missing backend is BACKEND_UNAVAILABLE', async () => {
  const d = new Dispatcher({}, options(1, 1));
  await assert.rejects(d.run(job(), new AbortController().signal), (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE');
});

test('a backend\'s own graceMs replaces the global one for the last-resort deadline', async () => {
  const {backend} = fakeBackend(300);
  // Global grace 50 ms would stop the 300 ms call of a 30 ms job; the isolate queue's 1 s does not.
  const d = new Dispatcher({isolate: backend}, {...options(1, 1), isolate: {concurrency: 1, maxQueued: 1, graceMs: 1000}});
  const result = await d.run(job(30), new AbortController().signal);
  assert.equal(result.timedOut, false, JSON.stringify(result));
  assert.equal(result.failed, false);
});

test('by default both backends get a long slack: each owns its deadline, and the container backend also its start budget', () => {
  assert.ok((DEFAULT_DISPATCH.isolate.graceMs ?? 0) >= DEFAULT_DISPATCH.queueWaitMs);
  assert.ok((DEFAULT_DISPATCH.container.graceMs ?? 0) > START_TIMEOUT_MS, 'the slack covers creating and starting a container');
});
