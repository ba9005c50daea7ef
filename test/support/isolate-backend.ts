// One real IsolateBackend per test file, and the small steps of calling a module in it and reading its value.
import assert from 'node:assert/strict';
import {after, before} from 'node:test';
import {pino} from 'pino';
import type {ExecutionResult, IsolateLimits} from '../../src/backends/backend.ts';
import {IsolateBackend, type IsolateBackendOptions} from '../../src/backends/isolate/isolate-backend.ts';

/**
 * Headroom of a test's own deadline over a call's `timeoutMs`, in ms: the backend ends a
 * call itself (its timer, then its backstop); this only keeps a broken backend from
 * hanging the test run on a busy host.
 */
const TEST_DEADLINE_SLACK_MS = 30_000;

/**
 * One {@link IsolateBackend} for the enclosing file or `describe`: started in `before`,
 * closed in `after` (whatever the tests asserted, so no worker process outlives the file).
 * Returns a stand-in that forwards every property and method to that backend (methods
 * bound to it, so its private fields work); touching it before `before` ran throws.
 * @param options the backend's options; the logger defaults to a silent one.
 */
export function useIsolateBackend(options: IsolateBackendOptions = {}): IsolateBackend {
  let backend: IsolateBackend | undefined;
  before(async () => {
    backend = new IsolateBackend({logger: pino({level: 'silent'}), ...options});
    await backend.start();
  });
  after(async () => {
    await backend?.close();
  });
  return new Proxy({} as IsolateBackend, {
    get(_target, property) {
      if (!backend) throw new Error('useIsolateBackend(): the backend exists only inside tests (after `before`)');
      const value: unknown = Reflect.get(backend, property, backend);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(backend) : value;
    },
  });
}

let seq = 0;

/**
 * Runs `source` (a self-contained ES module, like a tool bundle) once in `backend` with
 * `args` under `limits` (what a profile's limits become in policy/to-job.ts), as the
 * runtime would. Resolves with the backend's result as is (a throw, a timeout or an
 * overflow resolve with `failed: true`); the test's own deadline is `timeoutMs` plus
 * 30 s, so a backend that never answers fails the test instead of hanging the run.
 * @throws what `IsolateBackend.run` throws (ToolcellError when the sandbox failed).
 */
export function runModule(backend: IsolateBackend, source: string, args: unknown, limits: IsolateLimits, filename = 'test/tool.js'): Promise<ExecutionResult> {
  const signal = AbortSignal.timeout(limits.timeoutMs + TEST_DEADLINE_SLACK_MS);
  return backend.run({kind: 'isolate', id: `test-${process.pid}-${++seq}`, source, filename, args, limits}, {signal});
}

/**
 * The tool's return value: asserts first that the call did not fail (the message shows
 * the whole result), then parses `stdout` (the JSON text of the value; empty for `undefined`).
 */
export function valueOfResult(result: ExecutionResult): unknown {
  assert.equal(result.failed, false, `the call failed: ${JSON.stringify(result)}`);
  return result.stdout === '' ? undefined : JSON.parse(result.stdout) as unknown;
}

/**
 * What the tool threw, as `Name: message`: asserts first that the call failed with an
 * `error` and not by a limit (timeout, memory, output, cancel).
 */
export function errorOfResult(result: ExecutionResult): string {
  const {failed, error, timedOut, outOfMemory, truncated, isCanceled} = result;
  assert.deepEqual({failed, threw: error !== undefined, timedOut, outOfMemory, truncated, isCanceled},
    {failed: true, threw: true, timedOut: false, outOfMemory: false, truncated: false, isCanceled: false},
    `the call did not end with a throw: ${JSON.stringify(result)}`);
  return `${error!.name}: ${error!.message}`;
}
