// `node --no-node-snapshot bench/fair-share.mjs` (after `npm run build`): a quiet principal's queue wait while 20
// principals flood one isolate backend, through the real Dispatcher and isolate backend, FIFO (every call in one
// flow, as before fair share) against deficit round robin (one flow per principal), in one run on this machine.
// Each flooder keeps FLOOD_DEPTH calls outstanding (closed loop); the quiet principal sends one call at a time,
// QUIET_GAP_MS apart. Queue wait = from the call's arrival at the dispatcher to its start (onStart).
// Writes bench/results/fair-share.json. Options: BENCH_QUICK=1 for a short run.
import {mkdirSync, writeFileSync} from 'node:fs';
import {cpus, totalmem} from 'node:os';
import {fileURLToPath} from 'node:url';
import {IsolateBackend} from '../dist/backends/isolate/isolate-backend.js';
import {Dispatcher, DEFAULT_PRINCIPAL} from '../dist/dispatch/dispatcher.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const quick = process.env.BENCH_QUICK === '1';
const FLOODERS = 20;
const FLOOD_DEPTH = 8;
const QUIET_CALLS = quick ? 40 : 100;
const QUIET_GAP_MS = 20;
const CONCURRENCY = 2;
/** A tool that spins for 2 ms of wall clock: enough for the flood to pile up behind 2 slots. */
const SPIN = 'export default () => { const t = Date.now(); while (Date.now() - t < 2) {} return "done"; }';

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const stats = (samples) => {
  const s = [...samples].sort((a, b) => a - b);
  return {n: s.length, p50: round(pct(s, 50)), p99: round(pct(s, 99)), max: round(s.at(-1))};
};
let seq = 0;
const job = () => ({kind: 'isolate', id: `bench-${++seq}`, source: SPIN, filename: 'bench/spin.js', args: {},
  limits: {timeoutMs: 5000, memoryMb: 32, outputBytes: 4096}});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One scenario: `fair` false sends every call as one principal (FIFO), true as its own principal (DRR). */
async function scenario(backend, fair) {
  const dispatcher = new Dispatcher({isolate: backend}, {
    isolate: {concurrency: CONCURRENCY, maxQueued: FLOODERS * FLOOD_DEPTH + 16},
    container: {concurrency: 1, maxQueued: 1},
    queueWaitMs: 120_000,
    graceMs: 30_000,
  });
  const never = new AbortController().signal;
  let stopping = false;
  let floodCalls = 0;
  let floodErrors = 0;
  const flooder = async (f) => {
    const principal = fair ? `key:flood-${f}` : DEFAULT_PRINCIPAL;
    while (!stopping) {
      try {
        await dispatcher.run(job(), never, undefined, undefined, principal);
        floodCalls++;
      } catch {
        floodErrors++;
      }
    }
  };
  const loops = [];
  for (let f = 0; f < FLOODERS; f++) for (let d = 0; d < FLOOD_DEPTH; d++) loops.push(flooder(f));
  await sleep(200);
  const waits = [];
  let quietErrors = 0;
  const started = performance.now();
  for (let i = 0; i < QUIET_CALLS; i++) {
    const arrived = performance.now();
    let startedAt;
    try {
      const result = await dispatcher.run(job(), never, () => (startedAt = performance.now()), undefined, fair ? 'key:quiet' : DEFAULT_PRINCIPAL);
      if (result.failed) quietErrors++;
    } catch {
      quietErrors++;
    }
    if (startedAt !== undefined) waits.push(startedAt - arrived);
    await sleep(QUIET_GAP_MS);
  }
  const seconds = (performance.now() - started) / 1000;
  stopping = true;
  await Promise.all(loops);
  return {scheduler: fair ? 'drr' : 'fifo', quietWaitMs: stats(waits), quietErrors, floodCallsPerSec: round(floodCalls / seconds, 1), floodErrors};
}

const backend = new IsolateBackend({});
await backend.start();
try {
  // Alternate, so that a change in the host's load hits both schedulers alike.
  const results = [];
  for (const fair of [false, true, false, true]) results.push(await scenario(backend, fair));
  const merge = (name) => {
    const rs = results.filter((r) => r.scheduler === name);
    return {scheduler: name, runs: rs};
  };
  const machine = {cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: round(totalmem() / 2 ** 30, 1), node: process.version};
  const out = {when: new Date().toISOString(), machine, flooders: FLOODERS, floodDepth: FLOOD_DEPTH, quietCalls: QUIET_CALLS,
    quietGapMs: QUIET_GAP_MS, concurrency: CONCURRENCY, results: [merge('fifo'), merge('drr')]};
  mkdirSync(`${root}bench/results`, {recursive: true});
  writeFileSync(`${root}bench/results/fair-share.json`, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`machine: ${machine.cpus} CPUs (${machine.cpuModel}), Node ${machine.node}`);
  console.log(`${FLOODERS} flooders x ${FLOOD_DEPTH} outstanding, isolate concurrency ${CONCURRENCY}, quiet principal: ${QUIET_CALLS} calls ${QUIET_GAP_MS} ms apart`);
  console.log('scheduler  quiet wait p50 ms  p99 ms  max ms  quiet errors  flood calls/s');
  for (const r of results) {
    console.log(`${r.scheduler.padEnd(9)}  ${String(r.quietWaitMs.p50).padStart(16)}  ${String(r.quietWaitMs.p99).padStart(6)}  ${String(r.quietWaitMs.max).padStart(6)}  ${String(r.quietErrors).padStart(12)}  ${String(r.floodCallsPerSec).padStart(13)}`);
  }
} finally {
  await backend.close();
}
