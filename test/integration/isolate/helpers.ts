/**
 * Shared helpers of the isolate backend tests (integration and security).
 * Fixtures are inline ES module source strings, like an esbuild bundle of a tool.
 */
import assert from 'node:assert/strict';
import {existsSync, readFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';
import {performance} from 'node:perf_hooks';
import {pino} from 'pino';
import type {ExecutionResult, IsolateJob, IsolateLimits} from '../../../src/backends/backend.ts';
import {IsolateBackend, ISOLATE_WAIT_SLACK_MS, type IsolateBackendOptions} from '../../../src/backends/isolate/isolate-backend.ts';
import type {Logger} from '../../../src/log.ts';

/** Small limits for hostile tests. */
export const LIMITS: IsolateLimits = {timeoutMs: 800, memoryMb: 32, outputBytes: 64 * 1024};

/**
 * A hostile call's own running time (the isolate's, which its deadline counts) must end
 * within its timeout plus this, in ms (issue requirement): the deadline's own overshoot
 * (its check timer, isolated-vm's step timeout), not the host's scheduling.
 */
export const HAZARD_SLACK_MS = 500;

/** Log lines written by a backend, parsed, for assertions on warnings. */
export interface CapturedLog {
  logger: Logger;
  lines: Array<Record<string, unknown>>;
}

/** A pino logger at debug level that keeps its lines in memory instead of writing them. */
export function captureLog(): CapturedLog {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({level: 'debug'}, {
    write(chunk: string) {
      lines.push(JSON.parse(chunk) as Record<string, unknown>);
    },
  });
  return {logger, lines};
}

/** A started backend with a captured log. */
export async function startBackend(options: IsolateBackendOptions = {}): Promise<{backend: IsolateBackend; log: CapturedLog}> {
  const log = captureLog();
  const backend = new IsolateBackend({logger: log.logger, ...options});
  await backend.start();
  return {backend, log};
}

let seq = 0;

/** An isolate job for an inline module. */
export function job(source: string, args: unknown, limits: Partial<IsolateLimits> = {}): IsolateJob {
  return {kind: 'isolate', id: `test-${++seq}`, source, filename: 'fixtures/tool.js', args, limits: {...LIMITS, ...limits}};
}

/**
 * Measures how late this process's timers fire while a call runs: the largest delay of
 * a 10 ms interval timer beyond its period, in ms. It is near 0 on a quiet host and
 * grows when the host's CPUs are oversubscribed (every process, the worker included,
 * then waits for a CPU). Returns a function that stops the probe and gives that delay.
 */
function probeHostLag(): () => number {
  const periodMs = 10;
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - periodMs);
    last = now;
  }, periodMs);
  return () => {
    clearInterval(timer);
    worst = Math.max(worst, performance.now() - last - periodMs);
    return Math.max(0, worst);
  };
}

/**
 * Runs an inline module and returns the result with the wall time the call took
 * (`elapsedMs`) and the host's scheduling delay seen meanwhile (`hostLagMs`, see
 * `assertBounded`), both in ms.
 */
export async function run(
  backend: IsolateBackend, source: string,
  options: {args?: unknown; limits?: Partial<IsolateLimits>; signal?: AbortSignal} = {},
): Promise<ExecutionResult & {elapsedMs: number; hostLagMs: number}> {
  const started = performance.now();
  const stopProbe = probeHostLag();
  try {
    const result = await backend.run(job(source, 'args' in options ? options.args : {}, options.limits), {signal: options.signal ?? new AbortController().signal});
    return {...result, elapsedMs: performance.now() - started, hostLagMs: stopProbe()};
  } finally {
    stopProbe();
  }
}

/**
 * Scheduling delays a call's end may take on its way (the worker's timer, the isolate's
 * disposal, the worker's reply, the supervisor, this test), each as late as this
 * process's own timers were: the slack grows by this many times the measured delay.
 */
const HOP_FACTOR = 4;

/**
 * Asserts that a hostile call ended within what the README's `timeoutMs` row promises.
 * With the call's own time (`ownTimeMs`, reported by the isolate's worker): that own time
 * is at most `timeoutMs + HAZARD_SLACK_MS` (a deadline that is not enforced lets it grow),
 * and the wall clock from submission at most `timeoutMs + ISOLATE_WAIT_SLACK_MS` (the
 * absolute backstop from ready) plus `HOP_FACTOR` times the host's scheduling delay seen
 * during the call (`hostLagMs`: the hops before the isolate is ready and after the call
 * ended). Without an own time (the call never ran in an isolate, or its worker died), the
 * wall clock from submission must stay within `timeoutMs + HAZARD_SLACK_MS` plus that lag.
 */
export function assertBounded(result: {elapsedMs: number; hostLagMs?: number; ownTimeMs?: number}, timeoutMs: number = LIMITS.timeoutMs): void {
  const lagMs = result.hostLagMs ?? 0;
  const lag = Math.round(HOP_FACTOR * lagMs);
  const took = `the call took ${Math.round(result.elapsedMs)} ms of wall clock (host lag ${Math.round(lagMs)} ms x ${HOP_FACTOR} = ${lag} ms)`;
  if (result.ownTimeMs === undefined) {
    assert.ok(result.elapsedMs <= timeoutMs + HAZARD_SLACK_MS + lag, `${took}, no own time reported; allowed ${timeoutMs} + ${HAZARD_SLACK_MS} + ${lag} ms`);
    return;
  }
  assert.ok(result.ownTimeMs <= timeoutMs + HAZARD_SLACK_MS,
    `the isolate ran ${Math.round(result.ownTimeMs)} ms of its own time; allowed ${timeoutMs} + ${HAZARD_SLACK_MS} ms (${took})`);
  assert.ok(result.elapsedMs <= timeoutMs + ISOLATE_WAIT_SLACK_MS + lag,
    `${took}; allowed ${timeoutMs} + ${ISOLATE_WAIT_SLACK_MS} (backstop) + ${lag} ms`);
}

/**
 * Deadline of calls that are not hostile, in ms: far above what they need, so that a
 * busy CI host (other processes burning CPU) cannot turn one into a TIMEOUT.
 */
export const GENEROUS_TIMEOUT_MS = 20_000;

/** Asserts that the backend still answers a normal call with the right value. */
export async function assertStillServes(backend: IsolateBackend): Promise<void> {
  const a = Math.floor(Math.random() * 1000);
  const result = await run(backend, 'export default (args) => ({sum: args.a + args.b})', {args: {a, b: 7}, limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
  assert.equal(result.failed, false, `normal call failed: ${JSON.stringify(result)}`);
  assert.deepEqual(JSON.parse(result.stdout), {sum: a + 7});
}

/** A name no earlier source of this run used (an identifier, so it can prefix declarations): keeps a test's sources out of every cache. */
export const freshSalt = (): string => `a${process.pid.toString(36)}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}_`;

/** A module over 64 Ki characters (rewritten on the rewrite thread, compiled in the compile slot) whose default export returns `a.n + 1`; `salt` makes it new. */
export const largeAddOne = (salt: string): string => `/*${' '.repeat(100_000)}${salt}*/\nexport default (a) => a.n + 1;\n`;

/** UTF-8 length in bytes. */
export const bytes = (text: string): number => Buffer.byteLength(text, 'utf8');

/** Sleeps `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `predicate` holds, polling every 20 ms, or fails after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** toolcell's patch to isolated-vm's native code that lets a spinning rejection reason stop at dispose(). */
export const UNHANDLED_REJECTION_PATCH = 'isolated-vm-7.0.1-unhandled-rejection.patch';
/** toolcell's patch to isolated-vm's native code that frees V8's buffer of a produced code cache. */
export const CACHED_DATA_LEAK_PATCH = 'isolated-vm-7.0.1-cached-data-leak.patch';

/**
 * True when the isolated-vm this project loads was built by scripts/build-isolated-vm.mjs with
 * `patch` (its record `build/toolcell-patches.json` next to `build/Release/isolated_vm.node`,
 * which node-gyp-build loads before any prebuild). False with the prebuilt binary of `npm ci`.
 */
export function isolatedVmPatched(patch: string = UNHANDLED_REJECTION_PATCH): boolean {
  const dir = path.dirname(createRequire(import.meta.url).resolve('isolated-vm/package.json'));
  try {
    const record = JSON.parse(readFileSync(path.join(dir, 'build', 'toolcell-patches.json'), 'utf8')) as {patches?: Array<{name?: unknown}>};
    return (record.patches ?? []).some((p) => p.name === patch) && existsSync(path.join(dir, 'build', 'Release', 'isolated_vm.node'));
  } catch {
    return false;
  }
}

/**
 * Whether tests hold the isolate backend to what the patched isolated-vm can do: when it is
 * the build that loads, or when `TOOLCELL_REQUIRE_PATCHED_ISOLATED_VM=1` says it must be (a CI
 * that runs scripts/build-isolated-vm.mjs sets it, so a missing build fails there instead of
 * turning into a todo). `patch` names the file in patches/ whose fix the test relies on.
 */
export function expectPatchedIsolatedVm(patch: string = UNHANDLED_REJECTION_PATCH): boolean {
  return isolatedVmPatched(patch) || process.env.TOOLCELL_REQUIRE_PATCHED_ISOLATED_VM === '1';
}
