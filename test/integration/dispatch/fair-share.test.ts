// Fair share through the real Dispatcher and isolate backend: 20 flooding principals cannot starve a quiet one; it is served within one round of its arrival.
// invariant: dispatch:fair-share:quiet-principal-served
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {Dispatcher, type DispatcherOptions} from '../../../src/dispatch/dispatcher.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {job, startBackend} from '../isolate/helpers.ts';

/** A tool that spins for a few ms, so that calls pile up behind 2 slots. */
const SPIN = 'export default () => { const t = Date.now(); while (Date.now() - t < 4) {} return "done"; }';
const FLOODERS = 20;
const PER_FLOODER = 15;
const QUIET_CALLS = 5;

let backend: IsolateBackend;
before(async () => {
  ({backend} = await startBackend());
});
after(async () => {
  await backend?.close();
});

const options = (maxQueued: number): DispatcherOptions => ({
  isolate: {concurrency: 2, maxQueued},
  container: {concurrency: 1, maxQueued: 1},
  // Generous: the order is asserted, not the time; a slow shared host must not turn waits into TIMEOUTs.
  queueWaitMs: 120_000,
  graceMs: 30_000,
});

/**
 * Floods the dispatcher from 20 principals, then sends the quiet principal's calls one after
 * another while the flood still waits. Returns, for each quiet call, how many calls started
 * between its arrival and its own start, and how many flood calls were waiting when it arrived.
 */
async function floodAndCallQuietly(dispatcher: Dispatcher) {
  const starts: string[] = [];
  const never = new AbortController().signal;
  // Each flood call's outcome is captured at once: a BUSY refusal must not wait unhandled.
  const flood: Promise<PromiseSettledResult<unknown>>[] = [];
  for (let round = 0; round < PER_FLOODER; round++) {
    for (let f = 0; f < FLOODERS; f++) {
      const principal = `key:flood-${f}`;
      flood.push(dispatcher.run(job(SPIN, {}, {timeoutMs: 5_000}), never, () => starts.push(principal), undefined, principal)
        .then((value) => ({status: 'fulfilled', value}) as const, (reason: unknown) => ({status: 'rejected', reason}) as const));
    }
  }
  const quiet: {waitedBehind: number; queuedAtArrival: number; ok: boolean}[] = [];
  try {
    for (let i = 0; i < QUIET_CALLS; i++) {
      const arrivedAfter = starts.length;
      const queuedAtArrival = dispatcher.stats().isolate.queued;
      let startedAt = -1;
      const result = await dispatcher.run(job(SPIN, {}, {timeoutMs: 5_000}), never, () => {
        startedAt = starts.length;
        starts.push('key:quiet');
      }, undefined, 'key:quiet');
      quiet.push({waitedBehind: startedAt - arrivedAfter, queuedAtArrival, ok: !result.failed && result.stdout.includes('done')});
    }
  } finally {
    // Every flood call ends (or the test times out) before the dispatcher is dropped.
    await Promise.all(flood);
  }
  return {quiet, settled: await Promise.all(flood)};
}

test('20 flooding principals cannot starve a quiet one: each quiet call starts within one round of its arrival', async () => {
  const dispatcher = new Dispatcher({isolate: backend}, options(1000));
  const {quiet, settled} = await floodAndCallQuietly(dispatcher);
  assert.equal(quiet.length, QUIET_CALLS);
  for (const [i, call] of quiet.entries()) {
    assert.ok(call.ok, `quiet call ${i} succeeded`);
    // The test means something only while the flood still waits (FIFO would put the quiet call behind all of it).
    assert.ok(call.queuedAtArrival > 2 * FLOODERS, `quiet call ${i} arrived while ${call.queuedAtArrival} flood calls waited`);
    // One round: every other waiting principal starts at most one call (weight 1) before it.
    assert.ok(call.waitedBehind <= FLOODERS, `quiet call ${i} started after ${call.waitedBehind} other calls (at most ${FLOODERS})`);
  }
  assert.ok(settled.every((s) => s.status === 'fulfilled'), 'with room in the queue, every flood call completes too');
});

test('with the queue full of flood calls, the quiet principal is still admitted (a flooder\'s newest call is pushed out with BUSY)', async () => {
  const dispatcher = new Dispatcher({isolate: backend}, options(60));
  const {quiet, settled} = await floodAndCallQuietly(dispatcher);
  for (const [i, call] of quiet.entries()) {
    assert.ok(call.ok, `quiet call ${i} succeeded`);
    assert.ok(call.waitedBehind <= FLOODERS, `quiet call ${i} started after ${call.waitedBehind} other calls (at most ${FLOODERS})`);
  }
  const busy = settled.filter((s) => s.status === 'rejected' && s.reason instanceof ToolcellError && s.reason.code === 'BUSY').length;
  const other = settled.filter((s) => s.status === 'rejected' && !(s.reason instanceof ToolcellError && s.reason.code === 'BUSY'));
  assert.ok(busy > 0, 'the flood overflowed the queue');
  assert.deepEqual(other, [], 'flood calls either completed or were refused BUSY');
  // The backend still answers afterwards.
  const after = await dispatcher.run(job(SPIN, {}), new AbortController().signal);
  assert.ok(after.stdout.includes('done'));
});
