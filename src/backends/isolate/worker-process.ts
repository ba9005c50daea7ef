// The host side of one isolate worker process: spawn, calls in flight, backstop, death and restart.
import {fork, type ChildProcess} from 'node:child_process';
import {performance} from 'node:perf_hooks';
import {fileURLToPath} from 'node:url';
import {makeResult, type ExecutionResult, type IsolateJob} from '../backend.ts';
import {ToolcellError} from '../../errors.ts';
import type {Logger} from '../../log.ts';
import {isMainThreadRunnable} from './main-thread-state.ts';
import {readRssBytes, watchRss} from './rss-watchdog.ts';
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
/** Times a late call's backstop waits another `backstopGraceMs` because the worker still answers pings. */
const MAX_LATE_PROBES = 5;

/**
 * Why a worker process ended, as far as the supervisor can tell:
 * - `memory`: the RSS watchdog killed it above its ceiling, or isolated-vm reported a
 *   catastrophic out-of-memory error (V8 gave up on an isolate, e.g. a growing `Map`,
 *   isolated-vm #527) and the worker killed itself;
 * - `catastrophic`: another isolated-vm catastrophic error;
 * - `unresponsive`: a call's backstop (or a cancel that was never acknowledged) found it
 *   frozen and killed it;
 * - `closed`: the backend is shutting down;
 * - `other`: it exited or was killed by something else (a signal from outside, a crash).
 */
export type WorkerDeathKind = 'memory' | 'catastrophic' | 'unresponsive' | 'closed' | 'other';

/** The end of a worker as seen by the calls that were in flight in it. */
export interface WorkerDeath {
  kind: WorkerDeathKind;
  /** Why the supervisor killed it, or 'exited on its own'; for the log only. */
  reason: string;
  pid: number | undefined;
  /**
   * Calls it held when it ended: those whose callers still waited, and those already
   * answered (cancelled) whose isolates it had not yet reported stopped.
   */
  inflight: number;
  /**
   * Some call in it had been stopped (deadline, cancel) before it ended: that call's
   * isolate thread may have kept running after its disposal (isolated-vm #107/#186),
   * so a call alone in it at its death is not necessarily the cause.
   */
  tainted: boolean;
}

/**
 * The rejection of a call whose worker ended under it (code BACKEND_UNAVAILABLE, message
 * `WORKER_STOPPED_MESSAGE` or the shutdown message). `death` says how; it is for the
 * backend's decision (re-run or not) and the log, never for the client.
 */
export class WorkerStoppedError extends ToolcellError {
  readonly death: WorkerDeath;
  constructor(message: string, death: WorkerDeath, options?: ErrorOptions) {
    super('BACKEND_UNAVAILABLE', message, {}, options);
    this.death = death;
  }
}

/** The line the worker writes to stderr before it kills itself on a catastrophic error (see worker.ts). */
export const CATASTROPHIC_PREFIX = 'toolcell isolate worker: isolated-vm catastrophic error: ';

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
   * `timeoutMs` (or after a cancel) makes the supervisor ping the worker; without an
   * answer within `backstopGraceMs` the call resolves `timedOut` and the worker is killed
   * as unresponsive (see `call`).
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
  /**
   * Called whenever the worker is done with a call (answered, acknowledged a cancel,
   * never got it, or exited), i.e. when `inflight` and `reservedMb` went down.
   */
  onRelease?: (worker: WorkerProcess) => void;
}

/** Why and how a worker process ended. */
export interface WorkerExitInfo {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why the supervisor killed it, or 'exited on its own'. */
  reason: string;
  kind: WorkerDeathKind;
  /** Calls that were in flight and were rejected. */
  inflight: number;
  /** Last lines the worker wrote to stderr (V8 / isolated-vm fatal messages). */
  stderrTail: string[];
  /** The worker had reported ready before it ended. */
  wasReady: boolean;
}

/** A call sent (or about to be sent) to the worker, until the worker is done with it. */
interface Pending {
  /** The request as sent without its source. */
  request: RunRequest;
  source: string;
  /** Admission cost of the call in MB (see `reservedMb`), held until the worker is done with it. */
  costMb: number;
  /** The request was already sent again with its source after a `need-source`. */
  resent: boolean;
  /** `performance.now()` when the backend received the call, for `durationMs`. */
  started: number;
  /** The caller's promise, until it is settled; the call may stay here after that (see `#abandon`). */
  caller: {resolve: (result: ExecutionResult) => void; reject: (error: ToolcellError) => void} | undefined;
  /** Removes the caller's abort listener. */
  unlisten: () => void;
  /** The backstop timer (set once the request is sent) and when it fires (`performance.now()` ms). */
  backstop: NodeJS.Timeout | undefined;
  due: number;
  /**
   * `performance.now()` ms after which a worker that still answers pings no longer gets
   * more time for this call without limit: its own absolute backstop (`limits.backstopMs`
   * from when the isolate was ready) plus `backstopGraceMs` has passed.
   */
  hardDue: number;
  /** The call's egress (its job's), and the abort of its fetches in flight: aborted once the caller has its answer. */
  egress?: {fetch: NonNullable<IsolateJob['egress']>['fetch']; abort: AbortController};
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
 * per-call backstop kills it when it does not answer after the call's deadline or does
 * not acknowledge a cancel (see `call`). When it exits for any reason, every call whose
 * caller still waits is rejected at once with a `WorkerStoppedError`
 * (BACKEND_UNAVAILABLE, `WORKER_STOPPED_MESSAGE`) saying how it died, and `onExit` lets
 * the backend start a replacement.
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
  #killKind: WorkerDeathKind | undefined;
  #reservedMb = 0;
  #readyRssBytes: number | undefined;
  /** A call was stopped here (see `WorkerDeath.tainted`). */
  #tainted = false;
  readonly #onDrained: Array<() => void> = [];
  /** Pings waiting for their pong, by ping id. */
  readonly #pongs = new Map<string, (alive: boolean) => void>();
  #probe: Promise<boolean> | undefined;
  #closing = false;
  #retiring = false;
  #retireReason = 'retired';
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

  /** Resident set size of the process now, in bytes; undefined when not running or unreadable (no procfs). */
  rssBytes(): number | undefined {
    const pid = this.pid;
    return pid === undefined ? undefined : readRssBytes(pid);
  }

  /**
   * Whether the process is as clean as when it started: no call held, and its RSS at most
   * `slackBytes` above the RSS it had when it reported ready. A worker not yet ready is
   * clean (nothing has run there); one whose RSS cannot be read (no procfs) is too, as
   * it has no RSS watchdog either.
   */
  isClean(slackBytes: number): boolean {
    if (this.#hasExited || this.#pending.size > 0) return false;
    if (!this.#isReady) return true;
    const now = this.rssBytes();
    const ready = this.#readyRssBytes;
    return now === undefined || ready === undefined || now <= ready + slackBytes;
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
   * Sends one job to the worker (once it is ready). Resolves the call's
   * `ExecutionResult`; an abort of `signal` resolves `isCanceled` at once and tells the
   * worker to dispose the isolate. The source goes along only when this worker has not
   * been sent it yet (or cannot keep it); a worker that lacks it asks again
   * (`need-source`) and gets the full request.
   *
   * Backstop (the one owner of "the worker is frozen"): from the moment the request is
   * sent, the worker should answer within `timeoutMs + backstopGraceMs`; after an abort it
   * should acknowledge the cancel within `backstopGraceMs`. When it does not, it is
   * pinged: a worker that answers the ping gets more time (its own deadline ends the
   * call, by `limits.backstopMs` at the latest; see `#armBackstop`); one that does not is killed as unresponsive and the
   * caller (if still waiting) gets `timedOut`. An abort never clears this timer: the call
   * stays counted here (`inflight`, `reservedMb`) until the worker has answered for it
   * or is gone.
   *
   * @param digest sha256 and UTF-8 size of `job.source`.
   * @param argsJson JSON text of the arguments, or null for undefined.
   * @param costMb admission cost in MB, counted in `reservedMb` until the worker is done with the call.
   * @param started `performance.now()` when the backend received the call, for `durationMs`.
   * @throws WorkerStoppedError (BACKEND_UNAVAILABLE) when the worker dies during the call;
   *   ToolcellError BACKEND_UNAVAILABLE when it could not start or create an isolate.
   */
  call(
    job: IsolateJob, digest: SourceDigest, argsJson: string | null, limits: WorkerLimits, signal: AbortSignal,
    started: number, costMb = 0,
  ): Promise<ExecutionResult> {
    const id = String(++this.#seq);
    const request: RunRequest = {
      type: 'run', id, jobId: job.id, sourceHash: digest.hash, filename: job.filename, argsJson, limits,
      ...(job.egress ? {fetch: true, contextJson: JSON.stringify({secrets: job.egress.secrets})} : {}),
    };
    return new Promise<ExecutionResult>((resolve, reject) => {
      const onAbort = (): void => {
        const pending = this.#pending.get(id);
        if (pending?.caller === undefined) return;
        this.#settle(pending, (caller) => caller.resolve(makeResult(performance.now() - started, {isCanceled: true})));
        if (pending.backstop === undefined) {
          this.#release(id); // never sent: nothing runs in the worker
          return;
        }
        this.#tainted = true;
        this.#send({type: 'cancel', id});
        pending.hardDue = Math.min(pending.hardDue, performance.now()); // a cancel is acknowledged at once
        this.#armBackstop(id, this.#options.backstopGraceMs, 'no acknowledgement of a cancel');
      };
      const pending: Pending = {
        request, source: job.source, costMb, resent: false, started, caller: {resolve, reject},
        unlisten: () => signal.removeEventListener('abort', onAbort), backstop: undefined, due: Infinity, hardDue: Infinity,
        ...(job.egress ? {egress: {fetch: job.egress.fetch, abort: new AbortController()}} : {}),
      };
      this.#pending.set(id, pending);
      this.#reservedMb += costMb;
      signal.addEventListener('abort', onAbort, {once: true});
      this.#updateRef();
      if (signal.aborted) {
        onAbort();
        return;
      }
      const sendNow = (): void => {
        if (this.#pending.get(id)?.caller === undefined) return;
        const keepable = digest.bytes <= this.#options.config.sourceCacheBytes;
        const message = keepable && this.#sent.has(digest.hash) ? request : {...request, source: job.source};
        if (keepable) this.#sent.add(digest.hash);
        pending.hardDue = performance.now() + limits.backstopMs + this.#options.backstopGraceMs;
        this.#armBackstop(id, limits.timeoutMs + this.#options.backstopGraceMs, `no answer ${this.#options.backstopGraceMs} ms after a call's deadline`);
        this.#send(message, (error) => this.#onSendError(id, error));
      };
      if (this.#isReady) sendNow();
      else {
        this.ready.then(sendNow, (error: unknown) => {
          const waiting = this.#pending.get(id);
          if (waiting?.caller === undefined) return;
          this.#settle(waiting, (caller) => caller.reject(error instanceof ToolcellError ? error
            : new ToolcellError('BACKEND_UNAVAILABLE', NOT_STARTED_MESSAGE)));
          this.#release(id);
        });
      }
    });
  }

  /**
   * MB reserved by the calls this worker holds (running, or cancelled and not yet
   * acknowledged): the sum of their `costMb`. The backend admits calls against it.
   */
  get reservedMb(): number {
    return this.#reservedMb;
  }

  /**
   * Resolves once the worker holds no call (every call answered or acknowledged), or
   * has exited. Each call is bounded by its backstop, so this is too.
   */
  drained(): Promise<void> {
    if (this.#pending.size === 0 || this.#hasExited) return Promise.resolve();
    return new Promise((resolve) => this.#onDrained.push(resolve));
  }

  /** Settles the caller's promise once and stops listening to its signal. */
  #settle(pending: Pending, settle: (caller: NonNullable<Pending['caller']>) => void): void {
    const caller = pending.caller;
    if (caller === undefined) return;
    pending.caller = undefined;
    pending.unlisten();
    pending.egress?.abort.abort();
    this.#lastFinishedAt = performance.now();
    settle(caller);
  }

  /** The worker is done with call `id` (answered, never got it, or is gone): forget it. */
  #release(id: string): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    clearTimeout(pending.backstop);
    pending.unlisten();
    pending.egress?.abort.abort();
    this.#pending.delete(id);
    this.#reservedMb -= pending.costMb;
    if (!this.#hasExited) this.#updateRef(); // #onExit updates once for all
    if (this.#pending.size === 0) for (const resolve of this.#onDrained.splice(0)) resolve();
    if (this.#retiring && this.#pending.size === 0) this.kill(this.#retireReason);
    if (!this.#hasExited) this.#options.onRelease?.(this); // #onExit notifies once for all
  }

  /**
   * (Re)sets the backstop of call `id` to fire in `ms` unless an earlier one is set. When
   * it fires, the worker is asked whether its main thread runs (`#ping`): if it answers
   * within `backstopGraceMs`, its own deadline will end the call (the call waited for a
   * CPU or a thread, which its deadline does not count, or a busy host made it late, or
   * it is draining), so the backstop waits another grace: without limit until the call's
   * `hardDue`, then at most `MAX_LATE_PROBES` times. A worker that does not answer but
   * whose main thread is runnable (`isMainThreadRunnable`: waiting for a CPU) is treated
   * the same way. One that does not answer otherwise (stopped, blocked), or after those
   * probes, makes the caller (if still waiting) resolve `timedOut`, and it is killed as
   * unresponsive.
   */
  #armBackstop(id: string, ms: number, why: string): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    const due = performance.now() + ms;
    if (pending.backstop !== undefined && pending.due <= due) return;
    pending.due = due;
    clearTimeout(pending.backstop);
    pending.backstop = setTimeout(() => this.#late(id, pending, why, 0), ms);
  }

  #late(id: string, pending: Pending, why: string, probes: number): void {
    if (this.#pending.get(id) !== pending) return;
    const giveUp = (): void => {
      if (this.#pending.get(id) !== pending) return;
      this.#settle(pending, (caller) => caller.resolve(makeResult(performance.now() - pending.started, {timedOut: true})));
      this.kill(`unresponsive: ${why}`, 'unresponsive');
    };
    if (probes >= MAX_LATE_PROBES) {
      giveUp();
      return;
    }
    void this.#ping().then((answered) => {
      if (this.#pending.get(id) !== pending) return;
      // No answer from a main thread that is runnable: it waits for a CPU (many CPU-bound
      // isolates in it on an overloaded host), it is not frozen (stopped: `T`; blocked: `S`).
      const pid = this.pid;
      const alive = answered || (pid !== undefined && isMainThreadRunnable(pid) === true);
      if (!alive) {
        giveUp();
        return;
      }
      const grace = this.#options.backstopGraceMs;
      // A worker that answers is not frozen: until the call's own absolute backstop has
      // passed (it may legitimately run that long, see `WorkerLimits.backstopMs`), waiting
      // costs no probe.
      const counted = performance.now() >= pending.hardDue ? probes + 1 : probes;
      pending.due = performance.now() + grace;
      pending.backstop = setTimeout(() => this.#late(id, pending, why, counted), grace);
    });
  }

  /**
   * Asks the worker to answer (`ping`/`pong`); resolves true when it does within
   * `backstopGraceMs`, false otherwise (or when the message cannot be sent). One probe at
   * a time is shared by every late call.
   */
  #ping(): Promise<boolean> {
    if (this.#probe !== undefined) return this.#probe;
    const id = `ping-${++this.#seq}`;
    const probe = new Promise<boolean>((resolve) => {
      const done = (alive: boolean): void => {
        clearTimeout(timer);
        this.#pongs.delete(id);
        if (this.#probe === probe) this.#probe = undefined;
        resolve(alive);
      };
      const timer = setTimeout(() => done(false), this.#options.backstopGraceMs);
      this.#pongs.set(id, done);
      this.#send({type: 'ping', id}, () => done(false));
    });
    this.#probe = probe;
    return probe;
  }

  #onSendError(id: string, error: Error): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#settle(pending, (caller) => caller.reject(new WorkerStoppedError(WORKER_STOPPED_MESSAGE, {
      kind: 'other', reason: 'its IPC channel failed', pid: this.pid, inflight: 1, tainted: this.#tainted,
    }, {cause: error})));
    this.#release(id);
  }

  /**
   * Stops routing work here: kills the process once its last call has finished (each
   * call is bounded by its own deadline and backstop). `reason` goes into the exit log.
   */
  retire(reason: string): void {
    this.#retiring = true;
    this.#retireReason = reason;
    if (this.#pending.size === 0) this.kill(reason);
  }

  /** Whether `retire()` was called. */
  get isRetiring(): boolean {
    return this.#retiring;
  }

  /**
   * Kills the process with SIGKILL; `reason` goes into the exit log and `kind` into the
   * `WorkerDeath` of the calls in flight. The first reason given wins. Idempotent.
   */
  kill(reason: string, kind: WorkerDeathKind = 'other'): void {
    this.#killReason ??= reason;
    this.#killKind ??= kind;
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
        onExceeded: (rss) => this.kill(`RSS ${Math.round(rss / 2 ** 20)} MB above the ceiling of ${this.#options.memoryCeilingMb} MB`, 'memory'),
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
        this.#readyRssBytes = this.rssBytes();
        this.#isReady = true;
        this.#resolveReady();
        return;
      case 'log':
        this.#options.log[message.level]({pid: this.#child?.pid, worker: message.data}, message.msg);
        return;
      case 'pong':
        this.#pongs.get(message.id)?.(true);
        return;
      case 'fetch': {
        // A request the tool made (untrusted JSON text): performed by the job's egress, under its policy and limits.
        const pending = this.#pending.get(message.id);
        const egress = pending?.caller === undefined ? undefined : pending.egress;
        if (egress === undefined || egress.abort.signal.aborted) {
          this.#send({type: 'fetch-result', id: message.id, fetchId: message.fetchId, responseJson: JSON.stringify({ok: false, message: 'toolcell egress: this call has no network grant, or it has ended.'})});
          return;
        }
        void egress.fetch(message.requestJson, egress.abort.signal).then((responseJson) => {
          if (this.#pending.get(message.id) === pending && !egress.abort.signal.aborted) {
            this.#send({type: 'fetch-result', id: message.id, fetchId: message.fetchId, responseJson});
          }
        });
        return;
      }
      case 'wedged':
        this.#tainted = true;
        // The cause is the call that owned the isolate (its result, TIMEOUT or its own, is already out).
        this.#options.log.warn({pid: this.#child?.pid, causeCallId: message.id}, 'an isolate thread did not stop after its isolate was disposed; replacing the worker');
        this.#options.onWedged(this);
        return;
      case 'need-source': {
        const pending = this.#pending.get(message.id);
        if (pending?.caller === undefined) return; // cancelled or timed out meanwhile (its result or backstop will follow)
        if (pending.resent) {
          // A resent request carries its source: a second ask is not legitimate. The
          // call's backstop ends it if the worker never answers.
          this.#options.log.warn({pid: this.#child?.pid, jobId: pending.request.jobId}, 'isolate worker asked twice for a source; ignored');
          return;
        }
        pending.resent = true;
        this.#options.onSourceResend?.();
        this.#send({...pending.request, source: pending.source}, (error) => this.#onSendError(message.id, error));
        if (Buffer.byteLength(pending.source, 'utf8') <= this.#options.config.sourceCacheBytes) this.#sent.add(pending.request.sourceHash);
        else this.#sent.delete(pending.request.sourceHash);
        return;
      }
      case 'failure': {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return;
        if (pending.caller !== undefined) {
          this.#options.log.warn({pid: this.#child?.pid, jobId: pending.request.jobId, detail: message.message}, 'isolate worker could not run a call');
        }
        this.#settle(pending, (caller) => caller.reject(new ToolcellError('BACKEND_UNAVAILABLE', NOT_CREATED_MESSAGE)));
        this.#release(message.id);
        return;
      }
      case 'result': {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return;
        if (pending.caller === undefined) {
          // The caller already has its answer (cancelled or timed out): this acknowledges it.
          this.#release(message.id);
          return;
        }
        this.#options.onOutcome(message.outcome);
        if (message.outcome.timedOut) this.#tainted = true;
        const result = toResult(message.outcome, pending.request.limits.outputBytes, performance.now() - pending.started);
        this.#options.log.debug({
          jobId: pending.request.jobId, durationMs: Math.round(result.durationMs), failed: result.failed,
          timedOut: result.timedOut, outOfMemory: result.outOfMemory, truncated: result.truncated,
          pooled: message.outcome.pooled, codeCacheHit: message.outcome.codeCacheHit, ownTimeMs: message.outcome.ownTimeMs,
        }, 'isolate call finished');
        this.#settle(pending, (caller) => caller.resolve(result));
        this.#release(message.id);
      }
    }
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#hasExited) return;
    this.#hasExited = true;
    this.#stopWatch?.();
    const reason = this.#killReason ?? 'exited on its own';
    const kind: WorkerDeathKind = this.#closing ? 'closed' : this.#killKind ?? this.#deathFromStderr();
    const waiting = [...this.#pending.values()].filter((p) => p.caller !== undefined);
    const info: WorkerExitInfo = {
      pid: this.#child?.pid, code, signal, reason, kind, inflight: waiting.length, stderrTail: [...this.#stderrTail],
      wasReady: this.#isReady,
    };
    const death: WorkerDeath = {kind, reason, pid: info.pid, inflight: this.#pending.size, tainted: this.#tainted};
    const message = this.#closing ? BACKEND_CLOSED_MESSAGE : WORKER_STOPPED_MESSAGE;
    const cause = new Error(`isolate worker ${info.pid ?? '?'} ended: ${reason} (code ${code}, signal ${signal})`);
    for (const pending of waiting) {
      this.#settle(pending, (caller) => caller.reject(this.#isReady || pending.backstop !== undefined
        ? new WorkerStoppedError(message, death, {cause})
        : new ToolcellError('BACKEND_UNAVAILABLE', NOT_STARTED_MESSAGE, {}, {cause})));
    }
    this.#rejectReady(new ToolcellError('BACKEND_UNAVAILABLE', NOT_STARTED_MESSAGE));
    for (const done of [...this.#pongs.values()]) done(false);
    this.#child?.removeAllListeners('message');
    for (const id of [...this.#pending.keys()]) this.#release(id);
    this.#updateRef();
    this.#options.onExit(this, info);
    this.#options.onRelease?.(this);
    this.#resolveExited();
  }

  /** `memory` or `catastrophic` when the worker's last words were a catastrophic error (worker.ts), else `other`. */
  #deathFromStderr(): WorkerDeathKind {
    const last = this.#stderrTail.findLast((line) => line.startsWith(CATASTROPHIC_PREFIX));
    if (last === undefined) return 'other';
    return /out[- ]of[- ]memory|heap|allocation/i.test(last.slice(CATASTROPHIC_PREFIX.length)) ? 'memory' : 'catastrophic';
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
  if (outcome.ownTimeMs !== undefined) result.ownTimeMs = outcome.ownTimeMs;
  return result;
}
