// The isolate backend: routes each call to a supervised worker process and maps its answer to a result.
import {existsSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {performance} from 'node:perf_hooks';
import {fileURLToPath} from 'node:url';
import PQueue from 'p-queue';
import {makeResult, type Backend, type ExecutionResult, type IsolateJob} from '../backend.ts';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog, type Logger} from '../../log.ts';
import {SourceDigests, type SourceDigest} from './source-cache.ts';
import {WorkerProcess, WorkerStoppedError, type WorkerDeath, type WorkerExitInfo} from './worker-process.ts';
import type {WorkerConfig, WorkerLimits, WorkerOutcome} from './worker-protocol.ts';

/** Options of `IsolateBackend`; every field is optional. */
export interface IsolateBackendOptions {
  /**
   * Number of isolate worker processes; calls go to the one with the fewest calls in
   * flight, and among those to the one that finished a call longest ago. Default 1.
   */
  workers?: number;
  /**
   * Quarantine workers (spawned on first need): each re-runs one suspect at a time, alone,
   * after a worker died under several calls (see the class docstring). More of them
   * shorten the innocent calls' wait after a crash; each is one more process. Default 2.
   */
  quarantineWorkers?: number;
  /**
   * Hard ceiling of each worker's resident memory, in MB (default 1024). An RSS watchdog
   * reads `/proc/<pid>/status` every `rssPollMs` and kills the worker above it; the calls
   * in flight there are then re-run or blamed (see the class docstring). Needed because
   * isolated-vm's `memoryLimit` is a guideline (hostile code may use 2-3x, and
   * allocations such as huge strings are not always counted). Linux only (procfs).
   */
  workerMemoryCeilingMb?: number;
  /** RSS poll interval of the watchdog, in ms. Default 50. */
  rssPollMs?: number;
  /**
   * Memory budget of each worker for admission, in MB: a call is sent to a worker only
   * while the sum of the admission costs of the calls it holds (each `memoryMb` plus
   * `ISOLATE_OVERHEAD_MB`) stays within this; other calls wait in the backend (bounded
   * by their signal) until one fits. A call whose cost alone exceeds the budget runs
   * only in an otherwise empty worker. Default: the ceiling minus 256 MB (the worker's
   * own Node heap, its warm pool, code and source caches), at least half the ceiling.
   */
  workerMemoryBudgetMb?: number;
  /**
   * Warm pool: isolates (with context and prelude) created ahead of demand, per
   * `memoryMb` value, each used by exactly one call. 0 turns the pool off. Default 2.
   */
  poolSize?: number;
  /** Distinct `memoryMb` values the pool keeps warm (least recently used evicted). Default 4. */
  poolMaxKeys?: number;
  /** `memoryMb` values to warm as soon as a worker starts. Default none (warmed on first use). */
  poolMemoryMb?: number[];
  /**
   * Byte budget of the per-worker V8 code cache (compiled code data keyed by the sha256
   * of the source; never a context, global or module instance). 0 turns it off. Default 32 MiB.
   */
  codeCacheBytes?: number;
  /**
   * Byte budget (UTF-8) of each worker's source cache: module sources kept by their
   * sha256 so that each distinct source crosses the IPC channel once per worker, not
   * with every call. Only source text is kept (code as data). 0 sends the source with
   * every call. Default 32 MiB.
   */
  sourceCacheBytes?: number;
  /**
   * Keep `WebAssembly` in the isolates. Default false: WebAssembly memory is not counted
   * by isolated-vm's `memoryLimit` (seen here: 640 MB of wasm memory in a 32 MB isolate),
   * so it is removed from the global before tool code runs.
   */
  allowWebAssembly?: boolean;
  /** A worker must report ready within this many ms of its spawn. Default 15000. */
  startTimeoutMs?: number;
  /**
   * Grace after a call's `timeoutMs` (or after a cancel) before the backend pings the
   * worker, and how long it waits for the answer, in ms. A worker that does not answer
   * is killed as unresponsive and the call resolves `timedOut` (so a frozen worker is
   * replaced about `timeoutMs + 2 x backstopGraceMs` after a call was sent); one that
   * answers gets another grace, up to 5 times, for its own deadline timer to end the
   * call (a busy host makes answers late). Default 1000.
   */
  backstopGraceMs?: number;
  /**
   * Node binary for the workers. Default: `process.execPath` when this process runs
   * Node >= 24, else the nearest `node_modules/.bin/node` (the `node@24` dependency).
   */
  nodePath?: string;
  /** Logger; the backend logs under `component: 'isolate-backend'`. Default: the toolcell logger. */
  logger?: Logger;
}

/** Counters of an `IsolateBackend`, for tests and metrics. */
export interface IsolateBackendStats {
  /** Calls that completed inside a worker (not counting cancelled, killed or backstopped ones). */
  completed: number;
  /** Of those, calls that got a warm isolate from the pool. */
  pooled: number;
  /** Of those, calls whose module compiled from cached V8 code data. */
  codeCacheHits: number;
  /** Worker processes started to replace one that stopped or was retired. */
  restarts: number;
  /** Requests sent again with their source because a worker no longer had it (`need-source`). */
  sourceResends: number;
  /** Calls re-run alone in a quarantine worker because their worker died under them. */
  reruns: number;
  /** Calls taken as the cause of a worker's death (they killed a clean quarantine worker when alone in it). */
  causes: number;
}

const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/**
 * How long past `timeoutMs` of wall clock (from when its isolate is ready) a call whose own
 * running time has not reached `timeoutMs` may still run, in ms: the worker's absolute
 * backstop (`WorkerLimits.backstopMs`). Time an isolate waits for a CPU, an isolated-vm
 * thread or the worker's main thread is not the tool's, so the deadline does not count it
 * (see `runInIsolate`), but nothing runs for ever. Kept below dispatch's isolate slack
 * (`DEFAULT_DISPATCH.isolate.graceMs`, 30 s) minus the supervisor's backstop graces, so that
 * dispatch does not cancel a call this backend still legitimately runs. Does NOT bound a
 * call's total time: admission waits and a quarantine re-run come on top (dispatch's
 * slack bounds those).
 */
export const ISOLATE_WAIT_SLACK_MS = 20_000;
/** Bounds of the supervisor's memo of source digests (entries; total UTF-16 code units). */
const DIGEST_MEMO_ENTRIES = 256;
const DIGEST_MEMO_CHARS = 64 * 2 ** 20;
/** Restarts within this window (ms) count towards the back-off. */
const RESTART_WINDOW_MS = 30_000;
/**
 * Resident memory an isolate costs beyond its V8 heap limit, in MB, for admission: the
 * context, the prelude and its compiled code, and isolated-vm's per-isolate state (an
 * idle isolate with one context is about 1 MiB RSS here, MACHINE.md), with headroom.
 */
export const ISOLATE_OVERHEAD_MB = 4;
/**
 * Growth of a quarantine worker's RSS over its RSS at start (MB) up to which it still
 * counts as clean for the next suspect (its warm pool and caches; what a finished call
 * left is collected by the worker, see worker-memory.ts).
 */
const QUARANTINE_CLEAN_SLACK_MB = 64;
/** Message of a call that stopped its worker when it ran alone there for a reason other than memory. */
export const CAUSE_MESSAGE = 'The isolate worker stopped while running this call alone, so the call is taken as the cause of that; it did not complete.';

/** Admission cost of a call in MB (see `IsolateBackendOptions.workerMemoryBudgetMb`). */
export function admissionCostMb(memoryMb: number): number {
  return memoryMb + ISOLATE_OVERHEAD_MB;
}

function defaultNodePath(): string {
  const major = Number(process.versions.node.split('.')[0]);
  if (major >= 24) return process.execPath;
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', '.bin', 'node');
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return process.execPath;
  }
}

function invalid(message: string): ToolcellError {
  return new ToolcellError('INTERNAL', `Invalid isolate job: ${message}`);
}

/** Checks the job's limits and fills `cpuTimeMs`; throws ToolcellError INTERNAL when one is unusable. */
function resolveLimits(job: IsolateJob): WorkerLimits {
  const {timeoutMs, memoryMb, outputBytes, cpuTimeMs} = job.limits;
  const positive = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
  if (!positive(timeoutMs) || timeoutMs > MAX_TIMEOUT_MS) throw invalid('limits.timeoutMs must be a positive number of ms');
  if (cpuTimeMs !== undefined && (!positive(cpuTimeMs) || cpuTimeMs > MAX_TIMEOUT_MS)) throw invalid('limits.cpuTimeMs must be a positive number of ms');
  if (!Number.isInteger(memoryMb) || memoryMb < 8) throw invalid('limits.memoryMb must be an integer of at least 8 (isolated-vm minimum)');
  if (!Number.isInteger(outputBytes) || outputBytes < 0) throw invalid('limits.outputBytes must be a non-negative integer');
  if (typeof job.source !== 'string' || typeof job.filename !== 'string') throw invalid('source and filename must be strings');
  const backstopMs = Math.min(MAX_TIMEOUT_MS, timeoutMs + ISOLATE_WAIT_SLACK_MS);
  return {timeoutMs, backstopMs, cpuTimeMs: cpuTimeMs ?? timeoutMs, memoryMb, outputBytes};
}

/**
 * Runs JavaScript tools, one call per fresh V8 isolate (isolated-vm 7), inside one or
 * more isolate worker processes that this backend spawns, watches and restarts.
 *
 * Per call (`run`): the job's `source` (a self-contained ES module) is compiled in a new
 * isolate whose `memoryLimit` is `limits.memoryMb`; imports are refused; the default
 * export is called with a copy of `args` (JSON text, parsed inside the isolate); its
 * awaited value is serialised with `JSON.stringify` inside the isolate into `stdout`;
 * `console.*` lines, collected inside the isolate by a pure-JS prelude, become `stderr`.
 * Nothing of the host (no Reference, Callback or host function) is reachable from tool
 * code; only copies cross. The isolate is disposed after the call and never reused; the
 * warm pool hands out isolates prepared ahead of demand, each exactly once.
 *
 * Limits: `timeoutMs` of the isolate's own running time (isolated-vm `timeout` plus a
 * timer in the worker that disposes the isolate; an absolute wall-clock bound of
 * `timeoutMs + ISOLATE_WAIT_SLACK_MS`; plus a backstop here), CPU `cpuTimeMs ?? timeoutMs`
 * (`isolate.cpuTime`), both reported `timedOut`; `memoryMb` → `outOfMemory`;
 * `outputBytes` caps the result JSON and the console text each → `truncated`. All of
 * these set `failed`.
 *
 * Admission (memory): each worker takes calls only while the sum of their admission
 * costs (`memoryMb + ISOLATE_OVERHEAD_MB`) fits its `workerMemoryBudgetMb`, so that
 * calls that each respect their `memoryMb` also fit the worker together; a call that
 * fits nowhere waits here, first come first served, until its signal aborts (it then
 * resolves `isCanceled`; dispatch reports a deadline as TIMEOUT). Otherwise calls run
 * in parallel (each isolate on isolated-vm's thread pool); dispatch bounds concurrency.
 *
 * A worker that dies under calls (V8 aborting on a growing `Map`, isolated-vm #527; the
 * RSS ceiling; a kill from outside) does not fail its innocent calls. Every call in
 * flight there is a *suspect*; isolate calls have no side effects, so each suspect is
 * run again, alone, in a quarantine worker (`quarantineWorkers` of them, each running one
 * call at a time). A suspect that completes there returns its result as if nothing
 * happened; one that kills its quarantine worker too is the cause and ends with `outOfMemory` (memory) or a failure
 * naming the crash (`CAUSE_MESSAGE`). Blame needs that evidence: a quarantine worker
 * runs one suspect only and starts clean (fresh, its RSS near its RSS at start; a used
 * one is replaced first), and a call that was alone in its shared worker when that died is a
 * suspect like any other (the worker may have held what earlier calls left). Each call runs at most twice, so one hostile
 * call costs at most one re-run of each call that shared its worker, one at a time. A
 * re-run gets its full `timeoutMs` again (the deadline measures the tool's own
 * execution, and the first run was cut short by a neighbour); the caller's signal still
 * bounds the whole call.
 *
 * Time: `timeoutMs` and `cpuTimeMs` are measured in the worker from the start of the
 * tool's own execution (after its isolate is ready), not from dispatch, so time spent
 * waiting for memory budget or for the quarantine worker is not the tool's; `timeoutMs`
 * counts the isolate's own running time (`isolate.wallTime`), so neither is time its
 * isolate waits for a CPU, a thread or the worker's main thread (see `watchDeadline`,
 * own-time-deadline.ts). The backstop (one owner: `WorkerProcess`) kills a worker that does not answer
 * `backstopGraceMs` after a call's deadline or after a cancel.
 *
 * Does NOT guarantee: that `memoryMb` is exact. isolated-vm calls it a guideline, and
 * seen here with isolated-vm 7.0.1: `keep.push(new Array(n))` in a loop ignores both the
 * limit and termination (isolated-vm #107/#186), and a growing `Map` makes V8 abort the
 * isolate (#527). The worker's RSS ceiling and `onCatastrophicError` are the hard bound;
 * the quarantine re-run above keeps that from failing the neighbours' calls, at the
 * price of their latency (a re-run waits for the suspects before it). A timed-out
 * call's console text is kept only when the isolate could still be drained.
 */
export class IsolateBackend implements Backend<IsolateJob> {
  readonly kind = 'isolate' as const;
  readonly #log: Logger;
  readonly #options: Required<Omit<IsolateBackendOptions, 'logger' | 'nodePath'>> & {nodePath: string};
  readonly #config: WorkerConfig;
  /** The shared workers (indexes 0 to workers - 1), then the quarantine workers. */
  readonly #slots: (WorkerProcess | undefined)[];
  /** Retired workers still finishing their calls, with their slot index. */
  readonly #retiring = new Map<WorkerProcess, number>();
  /** sha256 of each source seen, so a source is hashed once, not per call. */
  readonly #digests = new SourceDigests(DIGEST_MEMO_ENTRIES, DIGEST_MEMO_CHARS);
  readonly #restartTimes: number[][];
  readonly #stats: IsolateBackendStats = {completed: 0, pooled: 0, codeCacheHits: 0, restarts: 0, sourceResends: 0, reruns: 0, causes: 0};
  /** Calls waiting for memory budget, first come first served. */
  readonly #waiting: Array<{costMb: number; grant: (worker: WorkerProcess) => void; refuse: (error: ToolcellError) => void}> = [];
  /** Suspects waiting for, or running in, a quarantine worker: one per worker at a time. */
  readonly #quarantine: PQueue;
  /** Quarantine slot indexes running a suspect. */
  readonly #quarantineBusy = new Set<number>();
  /** Quarantine workers that were given a suspect: each runs one only (see `#cleanQuarantineWorker`). */
  readonly #quarantineUsed = new WeakSet<WorkerProcess>();
  #closed = false;
  #closing: Promise<void> | undefined;

  /**
   * Creates the backend; spawns nothing until `start()` or the first `run()`.
   * @throws RangeError for an option out of range.
   */
  constructor(options: IsolateBackendOptions = {}) {
    this.#log = (options.logger ?? rootLog).child({component: 'isolate-backend'});
    const int = (value: number | undefined, fallback: number, min: number, name: string): number => {
      const v = value ?? fallback;
      if (!Number.isInteger(v) || v < min) throw new RangeError(`IsolateBackend option ${name} must be an integer >= ${min}`);
      return v;
    };
    const ceilingMb = int(options.workerMemoryCeilingMb, 1024, 64, 'workerMemoryCeilingMb');
    this.#options = {
      workers: int(options.workers, 1, 1, 'workers'),
      quarantineWorkers: int(options.quarantineWorkers, 2, 1, 'quarantineWorkers'),
      workerMemoryCeilingMb: ceilingMb,
      workerMemoryBudgetMb: int(options.workerMemoryBudgetMb, Math.max(Math.floor(ceilingMb / 2), ceilingMb - 256), 8, 'workerMemoryBudgetMb'),
      rssPollMs: int(options.rssPollMs, 50, 5, 'rssPollMs'),
      poolSize: int(options.poolSize, 2, 0, 'poolSize'),
      poolMaxKeys: int(options.poolMaxKeys, 4, 1, 'poolMaxKeys'),
      poolMemoryMb: (options.poolMemoryMb ?? []).map((mb) => int(mb, 0, 8, 'poolMemoryMb[]')),
      codeCacheBytes: int(options.codeCacheBytes, 32 * 2 ** 20, 0, 'codeCacheBytes'),
      sourceCacheBytes: int(options.sourceCacheBytes, 32 * 2 ** 20, 0, 'sourceCacheBytes'),
      allowWebAssembly: options.allowWebAssembly ?? false,
      startTimeoutMs: int(options.startTimeoutMs, 15_000, 100, 'startTimeoutMs'),
      backstopGraceMs: int(options.backstopGraceMs, 1000, 50, 'backstopGraceMs'),
      nodePath: options.nodePath ?? defaultNodePath(),
    };
    if (this.#options.workerMemoryBudgetMb > ceilingMb) throw new RangeError('IsolateBackend option workerMemoryBudgetMb must not exceed workerMemoryCeilingMb');
    this.#config = {
      poolSize: this.#options.poolSize,
      poolMaxKeys: this.#options.poolMaxKeys,
      poolMemoryMb: this.#options.poolMemoryMb,
      codeCacheBytes: this.#options.codeCacheBytes,
      sourceCacheBytes: this.#options.sourceCacheBytes,
      removeWebAssembly: !this.#options.allowWebAssembly,
    };
    const slots = this.#options.workers + this.#options.quarantineWorkers;
    this.#slots = Array.from({length: slots}, () => undefined);
    this.#restartTimes = Array.from({length: slots}, () => []);
    this.#quarantine = new PQueue({concurrency: this.#options.quarantineWorkers});
  }

  /**
   * Spawns the shared workers (if not yet running) and waits until all are ready. The
   * quarantine workers are spawned on first need.
   * @throws ToolcellError BACKEND_UNAVAILABLE when a worker cannot start; the backend
   *   keeps trying on later calls.
   */
  async start(): Promise<void> {
    if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The isolate backend is closed.');
    await Promise.all(Array.from({length: this.#options.workers}, (_, index) => this.#slot(index).whenReady()));
  }

  /**
   * Runs `job` in a fresh isolate in a worker process; see the class docstring.
   * Aborting `options.signal` disposes the isolate at once (or takes the call out of the
   * admission wait) and resolves `isCanceled: true`.
   * @throws ToolcellError BACKEND_UNAVAILABLE when a worker could not start or could not
   *   create an isolate, when the call's re-run could not complete for a reason other
   *   than the call itself, or the backend is closed; INTERNAL when the job's limits are
   *   unusable; INVALID_ARGUMENTS when `args` cannot be written as JSON.
   */
  async run(job: IsolateJob, options: {signal: AbortSignal}): Promise<ExecutionResult> {
    const started = performance.now();
    const {signal} = options;
    if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The isolate backend is closed.');
    const limits = resolveLimits(job);
    let argsJson: string | null;
    try {
      argsJson = job.args === undefined ? null : (JSON.stringify(job.args) ?? null);
    } catch (error) {
      throw new ToolcellError('INVALID_ARGUMENTS', 'The arguments cannot be written as JSON.', {}, {cause: error});
    }
    if (signal.aborted) return makeResult(performance.now() - started, {isCanceled: true});
    const digest = this.#digests.of(job.source);
    const costMb = admissionCostMb(limits.memoryMb);
    try {
      return await this.#admit(costMb, signal, started, (worker) => worker.call(job, digest, argsJson, limits, signal, started, costMb));
    } catch (error) {
      if (!(error instanceof WorkerStoppedError) || this.#closed || error.death.kind === 'closed') throw error;
      // A call with egress may have had effects outside its isolate (requests sent): never run it twice.
      if (job.egress !== undefined) throw error;
      // Even alone in its worker the call is not known to be the cause: the RSS watchdog
      // measures the whole process, including what earlier calls left there. Only a
      // re-run on a clean worker is evidence.
      return await this.#rerunAlone(job, digest, argsJson, limits, signal, started, error.death);
    }
  }

  /** PIDs of the running shared worker processes (retiring ones included), for tests and diagnostics. */
  workerPids(): number[] {
    const pids: number[] = [];
    const retiringShared = [...this.#retiring].filter(([, index]) => index < this.#options.workers).map(([worker]) => worker);
    for (const worker of [...this.#slots.slice(0, this.#options.workers), ...retiringShared]) {
      const pid = worker?.pid;
      if (pid !== undefined) pids.push(pid);
    }
    return pids;
  }

  /** PIDs of the running quarantine workers (see the class docstring). */
  quarantinePids(): number[] {
    return this.#slots.slice(this.#options.workers).map((w) => w?.pid).filter((pid): pid is number => pid !== undefined);
  }

  /** A snapshot of the backend's counters. */
  stats(): IsolateBackendStats {
    return {...this.#stats};
  }

  /**
   * Kills every worker (SIGKILL) and waits for them to exit; calls in flight reject
   * with BACKEND_UNAVAILABLE and later `run` calls too. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    // Calls waiting for memory budget end now; suspects queued for quarantine find the
    // backend closed when their turn comes (at once: every quarantine worker is killed).
    for (const waiter of this.#waiting.splice(0)) waiter.refuse(new ToolcellError('BACKEND_UNAVAILABLE', 'The isolate backend is closed.'));
    const workers = [...this.#slots, ...this.#retiring.keys()].filter((w): w is WorkerProcess => w !== undefined);
    this.#closing = Promise.all(workers.map((w) => w.close())).then(() => undefined);
    return this.#closing;
  }

  /**
   * Starts `call` on a shared worker with room for `costMb` (synchronously, so the
   * reservation is made before anything else is admitted), or waits for one, first come
   * first served. An abort while waiting resolves `isCanceled`.
   */
  #admit(
    costMb: number, signal: AbortSignal, started: number, call: (worker: WorkerProcess) => Promise<ExecutionResult>,
  ): Promise<ExecutionResult> {
    if (this.#waiting.length === 0) {
      const worker = this.#fit(costMb);
      if (worker !== undefined) return call(worker);
    }
    return new Promise<ExecutionResult>((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.#waiting.indexOf(waiter);
        if (at < 0) return;
        this.#waiting.splice(at, 1);
        resolve(makeResult(performance.now() - started, {isCanceled: true}));
        this.#pump(); // the head may have changed
      };
      const waiter = {
        costMb,
        grant: (worker: WorkerProcess): void => {
          signal.removeEventListener('abort', onAbort);
          call(worker).then(resolve, reject);
        },
        refuse: (error: ToolcellError): void => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      this.#waiting.push(waiter);
      signal.addEventListener('abort', onAbort, {once: true});
    });
  }

  /** Admits waiting calls in order while the first one fits somewhere. */
  #pump(): void {
    while (!this.#closed) {
      const head = this.#waiting[0];
      if (head === undefined) return;
      const worker = this.#fit(head.costMb);
      if (worker === undefined) return;
      this.#waiting.shift();
      head.grant(worker);
    }
  }

  /**
   * The shared worker for a call of `costMb`: among those with room for it (or holding
   * nothing at all), ready ones first, then the one with the fewest calls in flight, then
   * the one that finished a call longest ago (`lastFinishedAt`). A worker spends about
   * 1.5 ms of CPU after each call on disposing its isolate and refilling its warm pool,
   * so sequential calls rotate over the workers and each gets the time of the others'
   * calls for that. Undefined when no worker has room.
   */
  #fit(costMb: number): WorkerProcess | undefined {
    const budget = this.#options.workerMemoryBudgetMb;
    let best: WorkerProcess | undefined;
    for (let index = 0; index < this.#options.workers; index++) {
      const worker = this.#slot(index);
      if (worker.isRetiring || (worker.inflight > 0 && worker.reservedMb + costMb > budget)) continue;
      if (best === undefined || (worker.isReady && !best.isReady)) best = worker;
      else if (worker.isReady === best.isReady
        && (worker.inflight < best.inflight
          || (worker.inflight === best.inflight && worker.lastFinishedAt < best.lastFinishedAt))) best = worker;
    }
    return best;
  }

  /**
   * Runs a suspect again, alone in a quarantine worker, after the suspects queued
   * before it. Resolves its result when it completes; when it stops that worker too, it
   * is the cause (`#asCause`).
   */
  async #rerunAlone(
    job: IsolateJob, digest: SourceDigest, argsJson: string | null, limits: WorkerLimits, signal: AbortSignal,
    started: number, death: WorkerDeath,
  ): Promise<ExecutionResult> {
    this.#stats.reruns++;
    this.#log.info({jobId: job.id, pid: death.pid, death: death.kind, inflight: death.inflight},
      'isolate call was in flight in a worker that stopped; running it again alone in a quarantine worker');
    try {
      return await this.#quarantine.add(async () => {
        if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The isolate backend is closed.');
        if (signal.aborted) return makeResult(performance.now() - started, {isCanceled: true});
        let index = this.#options.workers;
        while (this.#quarantineBusy.has(index)) index++;
        this.#quarantineBusy.add(index);
        const worker = this.#cleanQuarantineWorker(index);
        try {
          return await worker.call(job, digest, argsJson, limits, signal, started);
        } catch (error) {
          if (!(error instanceof WorkerStoppedError) || this.#closed || error.death.kind === 'closed') throw error;
          return this.#asCause(job, error.death, started);
        } finally {
          // The next suspect must run where nothing ran before: what this one left (memory
          // its worker has not returned, about 110-130 MB after a 16 MB source here; an
          // isolate thread still running after a stop, isolated-vm #107/#186) would be
          // charged to the next one by the RSS ceiling, and its death there is no evidence.
          if (!worker.hasExited && worker.inflight > 0) await Promise.race([worker.exited, worker.drained()]);
          this.#quarantineUsed.add(worker);
          this.#quarantineBusy.delete(index);
        }
      }, {signal});
    } catch (error) {
      if (signal.aborted && !(error instanceof ToolcellError)) return makeResult(performance.now() - started, {isCanceled: true});
      throw error;
    }
  }

  /**
   * The quarantine worker of slot `index`, clean: it has run no suspect yet, and
   * `WorkerProcess.isClean` (no call held, RSS within `QUARANTINE_CLEAN_SLACK_MB` of its
   * RSS when it started). One that is not is killed and a fresh one spawned in its place,
   * so that a death during the suspect's re-run is evidence against the suspect: a worker
   * reused with memory an earlier suspect left (up to the slack, which once admitted it)
   * got an honest call blamed under CPU load (memory-blame.test.ts). Costs one worker
   * start per suspect.
   */
  #cleanQuarantineWorker(index: number): WorkerProcess {
    const worker = this.#slot(index);
    if (!this.#quarantineUsed.has(worker) && worker.isClean(QUARANTINE_CLEAN_SLACK_MB * 2 ** 20)) return worker;
    this.#log.info({pid: worker.pid, rssMb: Math.round((worker.rssBytes() ?? 0) / 2 ** 20)},
      'quarantine isolate worker is not clean; replacing it before the next suspect');
    const fresh = this.#spawn(index, 0);
    this.#slots[index] = fresh; // #onExit ignores the old one from now on
    worker.kill('replaced: not clean for a suspect');
    return fresh;
  }

  /** The result of a call taken as the cause of its worker's death. */
  #asCause(job: IsolateJob, death: WorkerDeath, started: number): ExecutionResult {
    this.#stats.causes++;
    this.#log.warn({jobId: job.id, pid: death.pid, death: death.kind, reason: death.reason},
      'isolate call stopped its worker when it ran alone there; it is taken as the cause');
    const durationMs = performance.now() - started;
    if (death.kind === 'memory') return makeResult(durationMs, {outOfMemory: true});
    if (death.kind === 'unresponsive') return makeResult(durationMs, {timedOut: true});
    return makeResult(durationMs, {error: {name: 'Error', message: CAUSE_MESSAGE}});
  }

  #slot(index: number): WorkerProcess {
    let worker = this.#slots[index];
    if (worker === undefined || worker.hasExited) {
      worker = this.#spawn(index, 0);
      this.#slots[index] = worker;
    }
    return worker;
  }

  #spawn(index: number, delayMs: number): WorkerProcess {
    return new WorkerProcess({
      nodePath: this.#options.nodePath,
      config: this.#config,
      memoryCeilingMb: this.#options.workerMemoryCeilingMb,
      rssPollMs: this.#options.rssPollMs,
      startTimeoutMs: this.#options.startTimeoutMs,
      backstopGraceMs: this.#options.backstopGraceMs,
      delayMs,
      log: this.#log,
      onExit: (worker, info) => this.#onExit(index, worker, info),
      onWedged: (worker) => this.#onWedged(index, worker),
      onOutcome: (outcome) => this.#count(outcome),
      onSourceResend: () => {
        this.#stats.sourceResends++;
      },
      onRelease: () => this.#pump(),
    });
  }

  #count(outcome: WorkerOutcome): void {
    this.#stats.completed++;
    if (outcome.pooled) this.#stats.pooled++;
    if (outcome.codeCacheHit) this.#stats.codeCacheHits++;
  }

  /** Starts a replacement for `index`, after a back-off when restarts pile up. */
  #replace(index: number): void {
    const now = performance.now();
    const times = (this.#restartTimes[index] ?? []).filter((t) => now - t < RESTART_WINDOW_MS);
    times.push(now);
    this.#restartTimes[index] = times;
    const delayMs = times.length <= 3 ? 0 : Math.min(5000, 100 * 2 ** (times.length - 3));
    this.#stats.restarts++;
    this.#slots[index] = this.#spawn(index, delayMs);
  }

  #onExit(index: number, worker: WorkerProcess, info: WorkerExitInfo): void {
    if (this.#retiring.delete(worker)) {
      this.#log.info({pid: info.pid, reason: info.reason}, 'retired isolate worker stopped');
      return;
    }
    if (this.#closed || this.#slots[index] !== worker) return;
    if (!info.wasReady) {
      // It never started: do not respawn in a loop while idle; the next call spawns
      // again (and fails fast while the cause persists).
      this.#log.warn({
        pid: info.pid, code: info.code, signal: info.signal, reason: info.reason, stderrTail: info.stderrTail,
      }, 'isolate worker failed to start; the next call will try again');
      this.#slots[index] = undefined;
      return;
    }
    this.#log.warn({
      pid: info.pid, code: info.code, signal: info.signal, reason: info.reason, kind: info.kind,
      inflight: info.inflight, stderrTail: info.stderrTail, quarantine: index >= this.#options.workers,
    }, 'isolate worker stopped; restarting it');
    this.#replace(index);
  }

  #onWedged(index: number, worker: WorkerProcess): void {
    if (this.#closed || this.#slots[index] !== worker) return;
    this.#log.warn({pid: worker.pid}, 'isolate worker has a wedged isolate thread; starting a replacement and retiring it');
    this.#retiring.set(worker, index);
    this.#replace(index);
    worker.retire('retired after reporting a wedged isolate thread');
  }
}
