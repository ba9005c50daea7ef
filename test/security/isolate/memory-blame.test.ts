/**
 * Memory a call leaves behind must never be charged to a later, innocent call (red-team
 * finding 1 on the isolate hardening). The attack: a tool whose module throws a 150 MB
 * message at top level, called three times (isolated-vm copies the thrown value out of
 * the isolate, outside its memoryLimit), then an honest call that holds 100 MB of its
 * own 128 MB, alone, strictly afterwards, in the same worker (RSS ceiling 1024 MB).
 * Before the fix the worker kept each copy resident (about 290 MB per call), the honest
 * call pushed it over the ceiling and, being alone, was blamed: MEMORY_LIMIT.
 *
 * Second attack on the blame itself: a worker made to hold memory no call in flight owns
 * (sources kept in its source cache), then an honest call alone in it crosses the
 * ceiling. Being alone is not evidence: it must run again on a clean worker and complete.
 */
// invariant: isolate:memory:thrown-copies-not-resident
// invariant: isolate:memory:blame-needs-evidence
import assert from 'node:assert/strict';
import {after, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {readRssBytes} from '../../../src/backends/isolate/rss-watchdog.ts';
import {assertStillServes, run, sleep, startBackend} from '../../integration/isolate/helpers.ts';

const STANDARD = {timeoutMs: 10_000, memoryMb: 128, outputBytes: 1 << 20};
const TOP_LEVEL_THROW = 'throw new Error("y".repeat(2 ** 27 + 2 ** 24)); export default () => 1;';
/** Holds `args.mb` MB (filled, counted by the heap limit) for `args.ms` ms without CPU, then returns ok. */
const HONEST = `export default (args) => {
  const a = new Uint8Array(args.mb << 20).fill(1);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, args.ms);
  return {ok: true, mb: a.length >> 20};
}`;
const MB = 2 ** 20;
/** Most filler calls the second test makes before its honest call (about 4 MB of cached source each). */
const MAX_FILLERS = 60;

describe('memory left in a worker by a finished call', () => {
  let backend: IsolateBackend | undefined;
  after(() => backend?.close());

  test('top-level throws of huge messages leave nothing resident; a later honest call completes', async () => {
    ({backend} = await startBackend({workers: 1}));
    const [pid] = backend.workerPids();
    assert.ok(pid);
    await sleep(500);
    const baseline = readRssBytes(pid) ?? 0;
    for (let i = 0; i < 3; i++) {
      const hostile = await run(backend, TOP_LEVEL_THROW, {limits: STANDARD});
      assert.equal(hostile.failed, true, JSON.stringify(hostile).slice(0, 300));
      assert.ok((hostile.error?.message.length ?? 0) <= 4096);
    }
    // What the worker copied must be collected within a second of the last call.
    let rss = readRssBytes(pid) ?? 0;
    for (let waited = 0; waited < 3000 && rss > baseline + 64 * MB; waited += 100) {
      await sleep(100);
      rss = readRssBytes(pid) ?? 0;
    }
    assert.ok(rss <= baseline + 64 * MB, `worker RSS ${Math.round(rss / MB)} MB stayed above its baseline ${Math.round(baseline / MB)} MB + 64 MB`);
    const honest = await run(backend, HONEST, {args: {mb: 100, ms: 300}, limits: STANDARD});
    assert.equal(honest.failed, false, JSON.stringify(honest));
    assert.equal(backend.stats().causes, 0, 'no call was taken as the cause of anything');
    assert.deepEqual(backend.workerPids(), [pid], 'the worker was not restarted');
    await assertStillServes(backend);
    await backend.close();
    backend = undefined;
  });

  test('a call alone in a worker that dies of memory others left is re-run on a clean worker, not blamed', async (t) => {
    // The worker's baseline, measured on a probe, sets the ceiling: the honest call fits a
    // fresh worker with room to spare, but not one holding the sources below.
    const probe = await startBackend({workers: 1});
    await sleep(500);
    const fresh = readRssBytes(probe.backend.workerPids()[0] ?? 0) ?? 100 * MB;
    await probe.backend.close();
    const ceilingMb = Math.ceil(fresh / MB) + 150;
    ({backend} = await startBackend({workers: 1, workerMemoryCeilingMb: ceilingMb, rssPollMs: 20, sourceCacheBytes: 256 * MB}));
    // Distinct 4 MB sources, kept by the worker's source cache (with the heap their
    // parses left committed: memory no call owns), until the worker holds enough that the
    // honest call (about 64 MB at its peak) crosses the ceiling. Small ones, so that one
    // fits a fresh worker far below the ceiling (a 16 MB source peaks at about +150 MB,
    // as high as the ceiling: its re-run died too, and was blamed). A filler that crosses
    // the ceiling itself is re-run on a clean worker; filling then goes on in the new one.
    const target = (ceilingMb - 40) * MB;
    let pid = backend.workerPids()[0] ?? -1;
    for (let i = 0; i < MAX_FILLERS && (readRssBytes(pid) ?? 0) < target; i++) {
      const filler = `// ${String(i % 10).repeat(4 * MB)} ${i}\nexport default () => ${i};`;
      const r = await run(backend, filler, {limits: STANDARD});
      assert.equal(r.failed, false, JSON.stringify(r).slice(0, 300));
      pid = backend.workerPids()[0] ?? -1;
    }
    const held = readRssBytes(pid) ?? 0;
    const honest = await run(backend, HONEST, {args: {mb: 60, ms: 500}, limits: {...STANDARD, memoryMb: 96}});
    const died = !backend.workerPids().includes(pid);
    t.diagnostic(`worker RSS before the honest call: ${Math.round(held / MB)} MB (ceiling ${ceilingMb} MB); it died under it: ${died}; re-runs: ${backend.stats().reruns}`);
    assert.equal(honest.failed, false, `the honest call was failed (worker died: ${died}): ${JSON.stringify(honest)}`);
    assert.equal(honest.outOfMemory, false);
    if (died) assert.ok(backend.stats().reruns >= 1, 'the worker died under the honest call, which was re-run');
    assert.equal(backend.stats().causes, 0, 'no call was taken as the cause');
    await assertStillServes(backend);
  });
});
