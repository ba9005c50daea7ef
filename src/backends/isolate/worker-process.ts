import {fork, type ChildProcess} from 'node:child_process';
import {performance} from 'node:perf_hooks';
import {fileURLToPath} from 'node:url';
import type {ExecutionResult, IsolateJob} from '../backend.ts';
import {ToolcellError} from '../../errors.ts';
import type {Logger} from '../../log.ts';
import {watchRss} from './rss-watchdog.ts';
import {SentSources, type SourceDigest} from './source-cache.ts';
import {cutUtf8} from './utf8-cut.ts';
import {
  parseWorkerMessage, type RunRequest, type SupervisorMessage, type WorkerConfig, type WorkerLimits, type WorkerOutcome,
} from './worker-protocol.ts';

/**
 * The worker entry next to this module, with this module's extension: `worker.ts` when
 * running from `src/` (Node 24 strips the types), `worker.js` when running from `dist/`.
 */
export const WORKER_PATH: string = fileURLToPath(new URL(`./worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));

/** Message of the rejection of every call in flight when its worker dies. */
export const WORKER_STOPPED_MESSAGE = 'The isolate worker stopped during this call and was restarted; the call did not complete.';
const BACKEND_CLOSED_MESSAGE = 'The isolate backend was shut down during this call; the call did not complete.';
const NOT_CREATED_MESSAGE = 'The isolate sandbox could not be created for this call.';
const NOT_STARTED_MESSAGE = 'The isolate worker could not be started.';
const MAX_STDERR_LINE = 1000;
/** Source hashes remembered per worker as sent (the worker's own cache is bounded in bytes). */
const SENT_SOURCES_MAX = 1024;
const STDERR_TAIL_LINES = 10;

/** Options of one worker process. */
export interface WorkerProcessOptions {
  /** Node 24 binary that runs the worker. */
  nodePath: string;
  /** Worker entry file; defaults to `WORKER_PATH`. */
  workerPath?: string;
  config: WorkerConfig;
  /** Hard RSS ceiling of the worker process in MB; above it the worker is killed (SIGKILL). */
  memoryCeilingMb: number;
  /** RSS poll interval in ms. */
  rssPollMs: number;
  /** The worker must report ready within this many ms, else it is killed. */
  startTimeoutMs: number;
  /**
   * A call whose worker has not answered `backstopGraceMs` after the call's own
   * `timeoutMs` resolves `timedOut` and the worker is killed as unresponsive.
   */
  backstopGraceMs: number;
  /** Spawn after this many ms (restart back-off). */
  delayMs: number;
  log: Logger;
  /** Called once when the process has exited (for any reason), after in-flight calls were rejected. */
  onExit: (worker: WorkerProcess, info: WorkerExitInfo) => void;
  /** Called once when the worker reports a wedged isolate thread. */
  onWedged: (worker: WorkerProcess) => void;
  /** Called for every call that completed in the worker. */
  onOutcome: (outcome: WorkerOutcome) => void;
  /** Called when a request is sent again with its source after the worker asked for it. */
  onSourceResend?: () => void;
}

/** Why and how a worker process ended. */
export interface WorkerExitInfo {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why the supervisor killed it, or 'exited on its own'. */
  reason: string;
  /** Calls that were in flight and were rejected. */
  inflight: number;
  /** Last lines the worker wrote to stderr (V8 / isolated-vm fatal messages). */
  stderrTail: string[];
  /** The worker had reported ready before it ended. */
  wasReady: boolean;
}

interface Pending {
  /** The request as sent without its source. */
  request: RunRequest;
  source: string;
  onSendError: (error: Error) => void;
  /** The request was already sent again with its source after a `need-source`. */
  resent: boolean;
  resolve: (result: ExecutionResult) => void;
  reject: (error: ToolcellError) => void;
  finish: () => void;
  started: number;
}

/** A result for a call that ended without an outcome from the worker. */
export function emptyResult(durationMs: number, flags: Partial<ExecutionResult>): ExecutionResult {
  return {
    failed: true, timedOut: false, isCanceled: false, outOfMemory: false, truncated: false,
    stdout: '', stderr: '', durationMs, ...flags,
  };
}

/**
 * One isolate worker process and the calls in flight in it. Spawned with
 * `child_process.fork(workerPath, [config], {execPath: nodePath, execArgv:
 * ['--no-node-snapshot'], stdio: ['ignore', 'ignore', 'pipe', 'ipc']})`: the worker's
 * stdout goes nowhere (on stdio, the server's stdout is the MCP protocol), its stderr is
 * read line by line into the log, and its environment is empty (nothing of the
 * server's environment reaches the process that runs tool code).
 *
 * Supervision: an RSS watchdog (`watchRss`) kills it above `memoryCeilingMb`; a
 * per-call backstop kills it when it does not answer after the call's deadline. When
 * it exits for any reason, every call in flight is rejected at once with
 * `ToolcellError('BACKEND_UNAVAILABLE', WORKER_STOPPED_MESSAGE)` and `onExit` lets the
 * backend start a replacement.
 *
 * The child, its IPC channel and its stderr pipe are ref'd only while calls are in
 * flight (or a caller waits for readiness), so an idle backend never keeps the
 * server's event loop alive.
 */
export class WorkerProcess {
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  readonly #options: WorkerProcessOptions;
  readonly #pending = new Map<string, Pending>();
  readonly #stderrTail: string[] = [];
  readonly #sent = new SentSources(SENT_SOURCES_MAX);
  #child: ChildProcess | undefined;
  #stopWatch: (() => void) | undefined;
  #spawnTimer: NodeJS.Timeout | undefined;
  #seq = 0;
  #holds = 0;
  #lastFinishedAt = performance.now();
  #isReady = false;
  #hasExited = false;
  #killReason: string | undefined;
  #closing = false;
  #retiring = false;
  #resolveReady: () => void = () => {};
  #rejectReady: (error: ToolcellError) => void = () => {};
  #resolveExited: () => void = () => {};

  constructor(options: WorkerProcessOptions) {
    this.#options = options;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.exited = new Promise<void>((resolve) => {
      this.#resolveExited = resolve;
    });
    if (options.delayMs > 0) {
      this.#spawnTimer = setTimeout(() => this.#spawn(), options.delayMs);
      this.#spawnTimer.unref();
    } else this.#spawn();
  }

  /** PID of the process, once spawned and while it runs. */
  get pid(): number | undefined {
    return this.#hasExited ? undefined : this.#child?.pid;
  }

  /** Calls in flight. */
  get inflight(): number {
    return this.#pending.size;
  }

  /**
   * `performance.now()` (ms) when a call in this worker last ended (result, failure,
   * cancellation, backstop or exit), or when the worker was created if none has yet.
   * A worker that finished a call has work of its own right after it (disposing that
   * call's isolate, refilling its warm pool), so the backend prefers the one that
   * finished longest ago.
   */
  get lastFinishedAt(): number {
    return this.#lastFinishedAt;
  }

  get isReady(): boolean {
    return this.#isReady && !this.#hasExited;
  }

  get hasExited(): boolean {
    return this.#hasExited;
  }

  /**
   * Waits until the worker is ready, keeping the event loop alive meanwhile.
   * @throws ToolcellError BACKEND_UNAVAILABLE when it exits or times out before that.
   */
  async whenReady(): Promise<void> {
    this.#holds++;
    this.#updateRef();
    try {
      await this.ready;
    } finally {
      this.#holds--;
      this.#updateRef();
    }
  }

  /**
   * Sends one job to the worker. Resolves the call's `ExecutionResult`; an abort of
   * `signal` resolves `isCanceled` at once and tells the worker to dispose the isolate.
   * The source goes along only when this worker has not been sent it yet (or cannot keep
   * it); a worker that lacks it asks again (`need-source`) and gets the full request.
   * @param digest sha256 and UTF-8 size of `job.source`.
   * @param argsJson JSON text of the arguments, or null for undefined.
   * @param started `performance.now()` when the backend received the call, for `durationMs`.
   * @throws ToolcellError BACKEND_UNAVAILABLE when the worker dies during the call or
   *   could not create an isolate.
   */
  call(
    job: IsolateJob, digest: SourceDigest, argsJson: string | null, limits: WorkerLimits, signal: AbortSignal, started: number,
  ): Promise<ExecutionResult> {
    const id = String(++this.#seq);
    const request: RunRequest = {
      type: 'run', id, jobId: job.id, sourceHash: digest.hash, filename: job.filename, argsJson, limits,
    };
    const keepable = digest.bytes <= this.#options.config.sourceCacheBytes;
    const send = keepable && this.#sent.has(digest.hash) ? request : {...request, source: job.source};
    if (keepable) this.#sent.add(digest.hash);
    return new Promise<ExecutionResult>((resolve, reject) => {
      const duration = (): number => performance.now() - started;
      const finish = (): void => {
        clearTimeout(backstop);
        signal.removeEventListener('abort', onAbort);
        this.#pending.delete(id);
        this.#lastFinishedAt = performance.now();
        this.#updateRef();
        if (this.#retiring && this.#pending.size === 0) this.kill('retired after reporting a wedged isolate thread');
      };
      const onAbort = (): void => {
        if (!this.#pending.has(id)) return;
        finish();
        this.#send({type: 'cancel', id});
        resolve(emptyResult(duration(), {isCanceled: true}));
      };
      const backstop = setTimeout(() => {
        if (!this.#pending.has(id)) return;
        finish();
        resolve(emptyResult(duration(), {timedOut: true}));
        this.kill(`unresponsive: no answer ${this.#options.backstopGraceMs} ms after a call's deadline`);
      }, limits.timeoutMs + this.#options.backstopGraceMs);
      const onSendError = (error: Error): void => {
        if (!this.#pending.has(id)) return;
        finish();
        reject(new ToolcellError('BACKEND_UNAVAILABLE', WORKER_STOPPED_MESSAGE, {}, {cause: error}));
      };
      this.#pending.set(id, {request, source: job.source, resolve, reject, finish, onSendError, resent: false, started});
      signal.addEventListener('abort', onAbort, {once: true});
      this.#updateRef();
      this.#send(send, onSendError);
    });
  }

  /**
   * Stops routing work here: kills the process once its last call has finished (each
   * call is bounded by its own deadline and backstop).
   */
  retire(): void {
    this.#retiring = true;
    if (this.#pending.size === 0) this.kill('retired after reporting a wedged isolate thread');
  }

  /** Kills the process with SIGKILL; `reason` goes into the exit log. Idempotent. */
  kill(reason: string): void {
    this.#killReason ??= reason;
    if (this.#spawnTimer) clearTimeout(this.#spawnTimer);
    if (this.#child === undefined) {
      this.#onExit(null, null);
      return;
    }
    if (!this.#hasExited) this.#child.kill('SIGKILL');
  }

  /** Rejects calls in flight as shut down, kills the process and waits for its exit. */
  async close(): Promise<void> {
    this.#closing = true;
    this.#holds++;
    this.#updateRef();
    try {
      this.kill('backend closed');
      await this.exited;
    } finally {
      this.#holds--;
    }
  }

  #spawn(): void {
    this.#spawnTimer = undefined;
    const env: NodeJS.ProcessEnv = {};
    if (process.env.TZ !== undefined) env.TZ = process.env.TZ;
    if (process.env.NODE_V8_COVERAGE !== undefined) env.NODE_V8_COVERAGE = process.env.NODE_V8_COVERAGE;
    let child: ChildProcess;
    try {
      child = fork(this.#options.workerPath ?? WORKER_PATH, [JSON.stringify(this.#options.config)], {
        execPath: this.#options.nodePath,
        execArgv: ['--no-node-snapshot'],
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        serialization: 'json',
        env,
      });
    } catch (error) {
      this.#options.log.warn({err: error}, 'isolate worker could not be spawned');
      this.#onExit(null, null);
      return;
    }
    this.#child = child;
    child.on('message', (raw) => this.#onMessage(raw));
    child.on('exit', (code, signal) => this.#onExit(code, signal));
    child.on('error', (error) => {
      this.#options.log.warn({err: error, pid: child.pid}, 'isolate worker process error');
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) this.#onExit(child.exitCode, child.signalCode);
    });
    let partial = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      partial += chunk;
      let newline: number;
      while ((newline = partial.indexOf('\n')) >= 0) {
        this.#stderrLine(partial.slice(0, newline));
        partial = partial.slice(newline + 1);
      }
      if (partial.length > MAX_STDERR_LINE) {
        this.#stderrLine(partial);
        partial = '';
      }
    });
    const pid = child.pid;
    if (pid !== undefined) {
      this.#stopWatch = watchRss(pid, {
        ceilingBytes: this.#options.memoryCeilingMb * 2 ** 20,
        intervalMs: this.#options.rssPollMs,
        onExceeded: (rss) => this.kill(`RSS ${Math.round(rss / 2 ** 20)} MB above the ceiling of ${this.#options.memoryCeilingMb} MB`),
      });
    }
    const startTimer = setTimeout(() => {
      if (!this.#isReady) this.kill(`not ready within ${this.#options.startTimeoutMs} ms`);
    }, this.#options.startTimeoutMs);
    startTimer.unref();
    void this.ready.then(() => clearTimeout(startTimer), () => clearTimeout(startTimer));
    this.#updateRef();
  }

  #stderrLine(line: string): void {
    const text = line.slice(0, MAX_STDERR_LINE);
    if (text.trim() === '') return;
    this.#stderrTail.push(text);
    if (this.#stderrTail.length > STDERR_TAIL_LINES) this.#stderrTail.shift();
    this.#options.log.warn({pid: this.#child?.pid, workerStderr: text}, 'isolate worker wrote to stderr');
  }

  #send(message: SupervisorMessage, onError?: (error: Error) => void): void {
    const child = this.#child;
    if (child === undefined || this.#hasExited || !child.connected) {
      onError?.(new Error('isolate worker channel is closed'));
      return;
    }
    try {
      child.send(message, (error) => {
        if (error) onError?.(error);
      });
    } catch (error) {
      onError?.(error as Error);
    }
  }

  #onMessage(raw: unknown): void {
    const message = parseWorkerMessage(raw);
    if (message === undefined) {
      this.#options.log.warn({pid: this.#child?.pid}, 'isolate worker sent a malformed message; dropped');
      return;
    }
    switch (message.type) {
      case 'ready':
        this.#isReady = true;
        this.#resolveReady();
        return;
      case 'log':
        this.#options.log[message.level]({pid: this.#child?.pid, worker: message.data}, message.msg);
        return;
      case 'wedged':
        this.#options.log.warn({pid: this.#child?.pid}, 'an isolate thread did not stop after its isolate was disposed; replacing the worker');
        this.#options.onWedged(this);
        return;
      case 'need-source': {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return; // cancelled or timed out meanwhile
        if (pending.resent) {
          // A resent request carries its source: a second ask is not legitimate. The
          // call's backstop ends it if the worker never answers.
          this.#options.log.warn({pid: this.#child?.pid, jobId: pending.request.jobId}, 'isolate worker asked twice for a source; ignored');
          return;
        }
        pending.resent = true;
        this.#options.onSourceResend?.();
        this.#send({...pending.request, source: pending.source}, pending.onSendError);
        if (Buffer.byteLength(pending.source, 'utf8') <= this.#options.config.sourceCacheBytes) this.#sent.add(pending.request.sourceHash);
        else this.#sent.delete(pending.request.sourceHash);
        return;
      }
      case 'failure': {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return;
        pending.finish();
        this.#options.log.warn({pid: this.#child?.pid, jobId: pending.request.jobId, detail: message.message}, 'isolate worker could not run a call');
        pending.reject(new ToolcellError('BACKEND_UNAVAILABLE', NOT_CREATED_MESSAGE));
        return;
      }
      case 'result': {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return; // cancelled or timed out by the backstop meanwhile
        pending.finish();
        this.#options.onOutcome(message.outcome);
        const result = toResult(message.outcome, pending.request.limits.outputBytes, performance.now() - pending.started);
        this.#options.log.debug({
          jobId: pending.request.jobId, durationMs: Math.round(result.durationMs), failed: result.failed,
          timedOut: result.timedOut, outOfMemory: result.outOfMemory, truncated: result.truncated,
          pooled: message.outcome.pooled, codeCacheHit: message.outcome.codeCacheHit,
        }, 'isolate call finished');
        pending.resolve(result);
      }
    }
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#hasExited) return;
    this.#hasExited = true;
    this.#stopWatch?.();
    const inflight = [...this.#pending.values()];
    const message = this.#closing ? BACKEND_CLOSED_MESSAGE : WORKER_STOPPED_MESSAGE;
    const reason = this.#killReason ?? 'exited on its own';
    const info: WorkerExitInfo = {
      pid: this.#child?.pid, code, signal, reason, inflight: inflight.length, stderrTail: [...this.#stderrTail],
      wasReady: this.#isReady,
    };
    for (const pending of inflight) {
      pending.finish();
      pending.reject(new ToolcellError('BACKEND_UNAVAILABLE', message, {}, {cause: new Error(`isolate worker ${info.pid ?? '?'} ended: ${reason} (code ${code}, signal ${signal})`)}));
    }
    this.#rejectReady(new ToolcellError('BACKEND_UNAVAILABLE', NOT_STARTED_MESSAGE));
    this.#child?.removeAllListeners('message');
    this.#updateRef();
    this.#options.onExit(this, info);
    this.#resolveExited();
  }

  #updateRef(): void {
    const busy = !this.#hasExited && (this.#pending.size > 0 || this.#holds > 0);
    if (busy) this.#spawnTimer?.ref();
    else this.#spawnTimer?.unref();
    const child = this.#child;
    if (child === undefined) return;
    const stderr = child.stderr as unknown as {ref?: () => void; unref?: () => void} | null;
    if (busy) {
      child.ref();
      child.channel?.ref();
      stderr?.ref?.();
    } else {
      child.unref();
      child.channel?.unref();
      stderr?.unref?.();
    }
  }
}

/**
 * Turns a worker's outcome into the backend's result, enforcing the byte caps again on
 * this side (the worker runs hostile code and is not trusted).
 */
function toResult(outcome: WorkerOutcome, outputBytes: number, durationMs: number): ExecutionResult {
  const stdout = cutUtf8(outcome.stdout, outputBytes);
  const stderr = cutUtf8(outcome.stderr, outputBytes);
  const truncated = outcome.truncated || stdout.cut || stderr.cut;
  const result: ExecutionResult = {
    failed: outcome.failed || outcome.timedOut || outcome.outOfMemory || truncated || outcome.error !== undefined,
    timedOut: outcome.timedOut,
    isCanceled: false,
    outOfMemory: outcome.outOfMemory,
    truncated,
    stdout: stdout.text,
    stderr: stderr.text,
    durationMs,
  };
  if (outcome.error) result.error = {name: outcome.error.name.slice(0, 200), message: outcome.error.message.slice(0, 4096)};
  return result;
}
