/**
 * Memory-heavy neighbours: calls that each respect their `memoryMb` must also fit their
 * worker together. Six calls each holding 120 MB in a 128 MB profile beside ten innocent
 * calls, in a worker whose RSS ceiling is 640 MB (all sixteen at once would need about
 * 2 GB of limits, and the six heavy ones alone about 800 MB of RSS): the backend admits
 * calls by memory budget, so every call completes, none is killed by the ceiling, and no
 * worker is restarted.
 */
// invariant: isolate:memory:admitted-by-budget
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

/** Holds an `args.mb` MB buffer, filled (counted by the heap limit), for `args.ms` ms without CPU, then returns `args.n`. */
const HOLD = `export default (args) => {
  const keep = [];
  keep.push(new Uint8Array(args.mb << 20).fill(1));
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, args.ms);
  return {n: args.n, held: keep[0].length >> 20};
}`;
/** Generous: admitted calls wait for each other's memory, on a slow CI host. */
const LIMITS = {timeoutMs: 20_000, memoryMb: 128};

describe('memory-heavy neighbours', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workerMemoryCeilingMb: 640, rssPollMs: 20}));
  });
  after(() => backend.close());

  test('six calls holding 120 MB each beside ten innocent calls: all complete, no worker is killed', async () => {
    const [pid] = backend.workerPids();
    const heavy = Array.from({length: 6}, (_, n) => run(backend, HOLD, {args: {n, mb: 120, ms: 1000}, limits: LIMITS}));
    const innocent = Array.from({length: 10}, (_, n) => run(backend, HOLD, {args: {n, mb: 0, ms: 0}, limits: LIMITS}));
    const results = await Promise.all([...heavy, ...innocent]);
    results.forEach((result, i) => {
      assert.equal(result.failed, false, `call ${i}: ${JSON.stringify(result)}`);
      const value = JSON.parse(result.stdout) as {held: number};
      assert.equal(value.held, i < 6 ? 120 : 0);
    });
    const stats = backend.stats();
    assert.equal(stats.restarts, 0, 'no worker was killed');
    assert.equal(stats.reruns, 0);
    assert.deepEqual(backend.workerPids(), [pid]);
    await assertStillServes(backend);
  });

  test('a call waiting for budget ends at once when its signal aborts, and when the backend closes', async () => {
    const {backend: small} = await startBackend({workerMemoryCeilingMb: 256, workerMemoryBudgetMb: 140});
    try {
      // One 128 MB call (cost 132 MB) fills the 140 MB budget; the next must wait.
      const holding = run(small, HOLD, {args: {n: 0, mb: 1, ms: 1500}, limits: LIMITS});
      const controller = new AbortController();
      const waiting = run(small, HOLD, {args: {n: 1, mb: 1, ms: 0}, limits: LIMITS, signal: controller.signal});
      setTimeout(() => controller.abort(), 200);
      const aborted = await waiting;
      assert.equal(aborted.isCanceled, true, JSON.stringify(aborted));
      assert.ok(aborted.elapsedMs < 1200, `it waited for the budget after its abort: ${Math.round(aborted.elapsedMs)} ms`);
      const unavailable = (error: unknown): boolean => (error as {code?: string}).code === 'BACKEND_UNAVAILABLE';
      const refused = assert.rejects(run(small, HOLD, {args: {n: 2, mb: 1, ms: 0}, limits: LIMITS}), unavailable);
      const stopped = assert.rejects(holding, unavailable);
      await small.close();
      await refused;
      await stopped;
    } finally {
      await small.close();
    }
  });
});
