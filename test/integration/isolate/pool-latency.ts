/**
 * Prints per-call latency of a trivial tool through the isolate backend with the warm
 * pool and code cache on and off. Measures only; asserts nothing (not a test file).
 *
 *   node_modules/.bin/node --no-node-snapshot test/integration/isolate/pool-latency.ts [calls] [gapMs]
 *
 * Calls are sequential, with a short pause between them so that the pool can refill
 * (the pool's purpose: an idle server answering one call at a time), and then as a
 * burst of parallel calls, where the pool can serve only its first few.
 */
import {performance} from 'node:perf_hooks';
import {pino} from 'pino';
import {IsolateBackend, type IsolateBackendOptions} from '../../../src/backends/isolate/isolate-backend.ts';

const CALLS = Number(process.argv[2] ?? 300);
/** Pause between sequential calls, in ms (default 2). */
const GAP_MS = Number(process.argv[3] ?? 2);
const TOOL = 'export default (args) => ({sum: args.a + args.b})';
const LIMITS = {timeoutMs: 2000, memoryMb: 32, outputBytes: 65536};

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
const format = (values: number[]): string => {
  const sorted = [...values].sort((a, b) => a - b);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return `mean ${mean.toFixed(2)} ms  p50 ${percentile(sorted, 0.5).toFixed(2)}  p95 ${percentile(sorted, 0.95).toFixed(2)}  p99 ${percentile(sorted, 0.99).toFixed(2)}`;
};

async function measure(label: string, options: IsolateBackendOptions): Promise<void> {
  const backend = new IsolateBackend({logger: pino({level: 'silent'}), poolMemoryMb: [LIMITS.memoryMb], ...options});
  await backend.start();
  const call = async (n: number): Promise<number> => {
    const started = performance.now();
    const result = await backend.run({kind: 'isolate', id: `bench-${n}`, source: TOOL, filename: 'bench.js', args: {a: n, b: 1}, limits: LIMITS}, {signal: new AbortController().signal});
    if (result.stdout !== JSON.stringify({sum: n + 1})) throw new Error(`wrong result ${JSON.stringify(result)}`);
    return performance.now() - started;
  };
  for (let n = 0; n < 20; n++) await call(n); // warm-up: JIT of the worker, code cache
  const sequential: number[] = [];
  for (let n = 0; n < CALLS; n++) {
    sequential.push(await call(n));
    await new Promise((resolve) => setTimeout(resolve, GAP_MS));
  }
  const burstStarted = performance.now();
  const burst = await Promise.all(Array.from({length: 50}, (_, n) => call(n)));
  const burstTotal = performance.now() - burstStarted;
  const stats = backend.stats();
  await backend.close();
  console.log(`${label}`);
  console.log(`  sequential (${CALLS} calls): ${format(sequential)}`);
  console.log(`  burst of 50 parallel: ${format(burst)}; all done in ${burstTotal.toFixed(1)} ms`);
  console.log(`  pooled ${stats.pooled}/${stats.completed}, code cache hits ${stats.codeCacheHits}`);
}

console.log(`node ${process.version}, ${CALLS} sequential calls of a trivial tool ${GAP_MS} ms apart, memoryMb ${LIMITS.memoryMb}`);
await measure('pool off, code cache off', {poolSize: 0, codeCacheBytes: 0});
await measure('pool off, code cache on ', {poolSize: 0});
await measure('pool on (4), code cache on', {poolSize: 4});
