import {existsSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {performance} from 'node:perf_hooks';
import {fileURLToPath} from 'node:url';
import type {Backend, ExecutionResult, IsolateJob} from '../backend.ts';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog, type Logger} from '../../log.ts';
import {SourceDigests} from './source-cache.ts';
import {emptyResult, WorkerProcess, type WorkerExitInfo} from './worker-process.ts';
import type {WorkerConfig, WorkerLimits, WorkerOutcome} from './worker-protocol.ts';

/** Options of `IsolateBackend`; every field is optional. */
export interface IsolateBackendOptions {
  /**
   * Number of isolate worker processes; calls go to the one with the fewest calls in
   * flight, and among those to the one that finished a call longest ago. Default 1.
   */
  workers?: number;
  /**
   * Hard ceiling of each worker's resident memory, in MB (default 1024). An RSS watchdog
   * reads `/proc/<pid>/status` every `rssPollMs` and kills the worker above it; every call
   * in flight in that worker then rejects with BACKEND_UNAVAILABLE. Needed because
   * isolated-vm's `memoryLimit` is a guideline (hostile code may use 2-3x, and
   * allocations such as huge strings are not always counted). Linux only (procfs).
   */
  workerMemoryCeilingMb?: number;
  /** RSS poll interval of the watchdog, in ms. Default 50. */
  rssPollMs?: number;
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
   * Grace after a call's `timeoutMs` before the backend stops waiting for its worker,
   * resolves `timedOut` and kills the worker as unresponsive, in ms. Default 1000.
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
}

const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** Bounds of the supervisor's memo of source digests (entries; total UTF-16 code units). */
const DIGEST_MEMO_ENTRIES = 256;
const DIGEST_MEMO_CHARS = 64 * 2 ** 20;
/** Restarts within this window (ms) count towards the back-off. */
const RESTART_WINDOW_MS = 30_000;

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
  return {timeoutMs, cpuTimeMs: cpuTimeMs ?? timeoutMs, memoryMb, outputBytes};
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
 * Limits: wall clock `timeoutMs` (isolated-vm `timeout` plus a timer in the worker that
 * disposes the isolate, plus a backstop here), CPU `cpuTimeMs ?? timeoutMs`
 * (`isolate.cpuTime`), both reported `timedOut`; `memoryMb` → `outOfMemory`;
 * `outputBytes` caps the result JSON and the console text each → `truncated`. All of
 * these set `failed`.
 *
 * Concurrency: calls run in parallel (each isolate on isolated-vm's thread pool). The
 * backend has no concurrency cap or queue of its own; dispatch bounds it.
 *
 * Does NOT guarantee: that `memoryMb` is exact. isolated-vm calls it a guideline, and
 * seen here with isolated-vm 7.0.1: `keep.push(new Array(n))` in a loop ignores both the
 * limit and termination (isolated-vm #107/#186), and a growing `Map` makes V8 abort the
 * isolate (#527). The worker's RSS ceiling and `onCatastrophicError` are the hard bound,
 * and hitting either fails every call in flight in that worker, not only the guilty one
 * (use several `workers` to narrow that). A timed-out call's console text is kept only
 * when the isolate could still be drained.
 */
export class IsolateBackend implements Backend<IsolateJob> {
  readonly kind = 'isolate' as const;
  readonly #log: Logger;
  readonly #options: Required<Omit<IsolateBackendOptions, 'logger' | 'nodePath'>> & {nodePath: string};
  readonly #config: WorkerConfig;
  readonly #slots: (WorkerProcess | undefined)[];
  readonly #retiring = new Set<WorkerProcess>();
  /** sha256 of each source seen, so a source is hashed once, not per call. */
  readonly #digests = new SourceDigests(DIGEST_MEMO_ENTRIES, DIGEST_MEMO_CHARS);
  readonly #restartTimes: number[][];
  readonly #stats: IsolateBackendStats = {completed: 0, pooled: 0, codeCacheHits: 0, restarts: 0, sourceResends: 0};
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
    this.#options = {
      workers: int(options.workers, 1, 1, 'workers'),
      workerMemoryCeilingMb: int(options.workerMemoryCeilingMb, 1024, 64, 'workerMemoryCeilingMb'),
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
    this.#config = {
      poolSize: this.#options.poolSize,
      poolMaxKeys: this.#options.poolMaxKeys,
      poolMemoryMb: this.#options.poolMemoryMb,
      codeCacheBytes: this.#options.codeCacheBytes,
      sourceCacheBytes: this.#options.sourceCacheBytes,
      removeWebAssembly: !this.#options.allowWebAssembly,
    };
    this.#slots = Array.from({length: this.#options.workers}, () => undefined);
    this.#restartTimes = Array.from({length: this.#options.workers}, () => []);
  }

  /**
   * Spawns the workers (if not yet running) and waits until all are ready.
   * @throws ToolcellError BACKEND_UNAVAILABLE when a worker cannot start; the backend
   *   keeps trying on later calls.
   */
  async start(): Promise<void> {
    if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The isolate backend is closed.');
    await Promise.all(this.#slots.map((_, index) => this.#slot(index).whenReady()));
  }

  /**
   * Runs `job` in a fresh isolate in a worker process; see the class docstring.
   * Aborting `options.signal` disposes the isolate at once and resolves `isCanceled: true`.
   * @throws ToolcellError BACKEND_UNAVAILABLE when the worker died during the call (it
   *   is restarted; later calls work), could not start or could not create an isolate,
   *   or the backend is closed; INTERNAL when the job's limits are unusable;
   *   INVALID_ARGUMENTS when `args` cannot be written as JSON.
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
    if (signal.aborted) return emptyResult(performance.now() - started, {isCanceled: true});
    const worker = this.#pick();
    if (!worker.isReady) {
      let onAbort = (): void => {};
      const aborted = new Promise<'aborted'>((resolve) => {
        onAbort = () => resolve('aborted');
        signal.addEventListener('abort', onAbort, {once: true});
      });
      try {
        const outcome = await Promise.race([worker.whenReady().then(() => 'ready' as const), aborted]);
        if (outcome === 'aborted') return emptyResult(performance.now() - started, {isCanceled: true});
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    }
    if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The isolate backend is closed.');
    return await worker.call(job, this.#digests.of(job.source), argsJson, limits, signal, started);
  }

  /** PIDs of the running worker processes (retiring ones included), for tests and diagnostics. */
  workerPids(): number[] {
    const pids: number[] = [];
    for (const worker of [...this.#slots, ...this.#retiring]) {
      const pid = worker?.pid;
      if (pid !== undefined) pids.push(pid);
    }
    return pids;
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
    const workers = [...this.#slots, ...this.#retiring].filter((w): w is WorkerProcess => w !== undefined);
    this.#closing = Promise.all(workers.map((w) => w.close())).then(() => undefined);
    return this.#closing;
  }

  /**
   * The worker for the next call: the live one with the fewest calls in flight, ready
   * ones first; ties go to the one that finished a call longest ago (`lastFinishedAt`).
   * A worker spends about 1.5 ms of CPU after each call on disposing its isolate and
   * refilling its warm pool, so sequential calls rotate over the workers and each
   * gets the time of the others' calls for that.
   */
  #pick(): WorkerProcess {
    let best: WorkerProcess | undefined;
    for (let index = 0; index < this.#slots.length; index++) {
      const worker = this.#slot(index);
      if (best === undefined || (worker.isReady && !best.isReady)) best = worker;
      else if (worker.isReady === best.isReady
        && (worker.inflight < best.inflight
          || (worker.inflight === best.inflight && worker.lastFinishedAt < best.lastFinishedAt))) best = worker;
    }
    return best as WorkerProcess;
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
      pid: info.pid, code: info.code, signal: info.signal, reason: info.reason,
      inflight: info.inflight, stderrTail: info.stderrTail,
    }, 'isolate worker stopped; restarting it');
    this.#replace(index);
  }

  #onWedged(index: number, worker: WorkerProcess): void {
    if (this.#closed || this.#slots[index] !== worker) return;
    this.#log.warn({pid: worker.pid}, 'isolate worker has a wedged isolate thread; starting a replacement and retiring it');
    this.#retiring.add(worker);
    this.#replace(index);
    worker.retire();
  }
}
