/**
 * Shared helpers of the isolate backend tests (integration and security).
 * Fixtures are inline ES module source strings, like an esbuild bundle of a tool.
 */
import assert from 'node:assert/strict';
import {performance} from 'node:perf_hooks';
import {pino} from 'pino';
import type {ExecutionResult, IsolateJob, IsolateLimits} from '../../../src/backends/backend.ts';
import {IsolateBackend, type IsolateBackendOptions} from '../../../src/backends/isolate/isolate-backend.ts';
import type {Logger} from '../../../src/log.ts';

/** Small limits for hostile tests. */
export const LIMITS: IsolateLimits = {timeoutMs: 800, memoryMb: 32, outputBytes: 64 * 1024};

/** A hostile call must end within its timeout plus this, in ms (issue requirement). */
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

/** Runs an inline module and returns the result with the wall time the call took (ms). */
export async function run(
  backend: IsolateBackend, source: string,
  options: {args?: unknown; limits?: Partial<IsolateLimits>; signal?: AbortSignal} = {},
): Promise<ExecutionResult & {elapsedMs: number}> {
  const started = performance.now();
  const result = await backend.run(job(source, 'args' in options ? options.args : {}, options.limits), {signal: options.signal ?? new AbortController().signal});
  return {...result, elapsedMs: performance.now() - started};
}

/** Asserts that a hostile call ended within its timeout plus the slack. */
export function assertBounded(result: {elapsedMs: number}, timeoutMs: number = LIMITS.timeoutMs): void {
  assert.ok(result.elapsedMs <= timeoutMs + HAZARD_SLACK_MS,
    `the call took ${Math.round(result.elapsedMs)} ms; allowed ${timeoutMs} + ${HAZARD_SLACK_MS} ms`);
}

/** Asserts that the backend still answers a normal call with the right value. */
export async function assertStillServes(backend: IsolateBackend): Promise<void> {
  const a = Math.floor(Math.random() * 1000);
  const result = await run(backend, 'export default (args) => ({sum: args.a + args.b})', {args: {a, b: 7}});
  assert.equal(result.failed, false, `normal call failed: ${JSON.stringify(result)}`);
  assert.deepEqual(JSON.parse(result.stdout), {sum: a + 7});
}

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
