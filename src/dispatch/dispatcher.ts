// Owns time and cancellation: one bounded queue per backend, fair between principals, one deadline and abort signal per call.
import type {Backend, BackendEvent, ContainerJob, ExecutionResult, IsolateJob, Job, ServerJob} from '../backends/backend.ts';
import {ToolcellError} from '../errors.ts';
import {withDeadline} from './deadline.ts';
import {FairQueue} from './fair-queue.ts';

/** Bounds of one backend's queue. */
export interface QueueLimits {
  /** Calls running at once on this backend. */
  concurrency: number;
  /** Calls waiting at most; one more is refused at once with `BUSY`. */
  maxQueued: number;
  /** Overrides `DispatcherOptions.graceMs` for this backend, in ms. */
  graceMs?: number;
}

export interface DispatcherOptions {
  isolate: QueueLimits;
  container: QueueLimits;
  /** How long a call may wait in its queue before it ends with `TIMEOUT`, in ms. */
  queueWaitMs: number;
  /**
   * Slack added to a job's `timeoutMs` for the last-resort deadline of a running call,
   * in ms, measured from the moment it leaves its queue. Backends enforce `timeoutMs`
   * themselves; this deadline aborts the call (reported `timedOut`) if one does not.
   */
  graceMs: number;
  /**
   * A principal's share of each backend's queue (deficit round robin weight, > 0; default 1
   * for every principal). From the service config's `fairShare.weights`.
   */
  weightOf?: (principal: string) => number;
}

/** The principal of calls that do not name one (stdio, the CLI, readiness probes): one flow, i.e. plain FIFO. */
export const DEFAULT_PRINCIPAL = 'local';

/**
 * Defaults. Both backends' slack is long on purpose: each backend measures `timeoutMs` itself
 * from the start of the tool's own execution, not from the moment the call left its queue.
 * The isolate backend owns the backstop that kills a frozen worker
 * (`IsolateBackendOptions.backstopGraceMs`) and ends every call by `timeoutMs` +
 * `ISOLATE_WAIT_SLACK_MS` (20 s, below this 30 s slack) of wall clock from when its isolate
 * is ready, its deadline counting only the isolate's own running time; inside this slack a call may wait for memory
 * budget or be re-run alone after a neighbour crashed its worker. The container backend gives
 * creating and starting a container its own budget (`START_TIMEOUT_MS`, 30 s) and removal a few
 * seconds. A short slack here would turn a busy host's delays into TIMEOUTs of calls whose tools
 * never ran out of time.
 */
export const DEFAULT_DISPATCH: DispatcherOptions = {
  isolate: {concurrency: 16, maxQueued: 256, graceMs: 30_000},
  container: {concurrency: 4, maxQueued: 64, graceMs: 40_000},
  queueWaitMs: 30_000,
  graceMs: 400,
};

/** Depth of one backend's queue, for metrics and `/readyz`. */
export interface QueueStats {
  running: number;
  queued: number;
}

/**
 * Owns time and cancellation (ARCHITECTURE.md, "dispatch"). One bounded queue per backend,
 * fair between principals (`FairQueue`: per-principal queues served by deficit round robin
 * with `weightOf` weights; a single principal, as on stdio, is plain FIFO); one AbortSignal
 * per call joining the client's cancellation and the deadline; a call still waiting is removed
 * from its queue when that signal aborts, and a running call's sandbox is stopped by the
 * backend acting on the same signal. The concurrency slot is held until the backend has
 * actually finished.
 */
export class Dispatcher {
  readonly #backends: {isolate?: Backend<IsolateJob>; container?: Backend<ContainerJob>; server?: Backend<ServerJob>};
  readonly #queues: {isolate: FairQueue; container: FairQueue};
  readonly #options: DispatcherOptions;

  /** Hosted-server jobs (`server`) share the container queue: they are containers on the same engine. */
  constructor(backends: {isolate?: Backend<IsolateJob>; container?: Backend<ContainerJob>; server?: Backend<ServerJob>}, options: DispatcherOptions = DEFAULT_DISPATCH) {
    this.#backends = backends;
    this.#options = options;
    this.#queues = {
      isolate: new FairQueue(options.isolate.concurrency, options.isolate.maxQueued, options.weightOf),
      container: new FairQueue(options.container.concurrency, options.container.maxQueued, options.weightOf),
    };
  }

  /** Whether a backend of this kind is configured. */
  has(kind: Job['kind']): boolean {
    return this.#backends[kind] !== undefined;
  }

  /** Running and waiting calls per backend. */
  stats(): Record<'isolate' | 'container', QueueStats> {
    return {
      isolate: {running: this.#queues.isolate.running, queued: this.#queues.isolate.queued},
      container: {running: this.#queues.container.running, queued: this.#queues.container.queued},
    };
  }

  /**
   * Queues `job` on its backend and runs it.
   *
   * @param callerSignal aborts when the client cancels the call
   * @param onStart called when the call leaves its queue and its sandbox starts
   * @param onEvent receives the backend's events while the call runs (hosted servers' progress and log)
   * @param principal whose share of the queue the call takes (`DEFAULT_PRINCIPAL` when omitted)
   * @returns the backend's result; `isCanceled` is true when the client cancelled a running
   *   call, `timedOut` when the backstop deadline stopped it.
   * @throws ToolcellError `BUSY` (queue full: at once, or later when a principal with fewer
   *   waiting calls pushed this one out of a full queue), `CANCELLED` (cancelled while waiting),
   *   `TIMEOUT` (waited longer than `queueWaitMs`), `BACKEND_UNAVAILABLE` (no such backend, or the
   *   backend failed).
   */
  async run(job: Job, callerSignal: AbortSignal, onStart?: () => void, onEvent?: (event: BackendEvent) => void, principal: string = DEFAULT_PRINCIPAL): Promise<ExecutionResult> {
    const backend = this.#backends[job.kind] as Backend<Job> | undefined;
    if (backend === undefined) {
      throw new ToolcellError('BACKEND_UNAVAILABLE', `The ${job.kind} backend is not available on this server.`, {backend: job.kind});
    }
    const lane = job.kind === 'isolate' ? 'isolate' : 'container';
    const queue = this.#queues[lane];
    const limits = this.#options[lane];
    const busy = () => new ToolcellError('BUSY',
      `The ${job.kind} backend is busy (${queue.running} running, ${queue.queued} waiting, at most ${limits.maxQueued} may wait). Retry shortly.`,
      {backend: job.kind, running: queue.running, queued: queue.queued, maxQueued: limits.maxQueued});
    if (callerSignal.aborted) throw cancelled(callerSignal);

    // Waiting: the caller's cancellation or the queue-wait deadline removes the call.
    const waiting = withDeadline(callerSignal, this.#options.queueWaitMs);
    let started = false;
    try {
      return await queue.add(principal, async () => {
        started = true;
        waiting.dispose();
        onStart?.();
        const running = withDeadline(callerSignal, job.limits.timeoutMs + (limits.graceMs ?? this.#options.graceMs));
        try {
          const result = await backend.run(job, {signal: running.signal, ...(onEvent ? {onEvent} : {})});
          if (running.reason() === 'timeout' && !result.timedOut) return {...result, timedOut: true, isCanceled: false, failed: true};
          return result;
        } finally {
          running.dispose();
        }
      }, waiting.signal, busy);
    } catch (err) {
      if (!started && waiting.signal.aborted) {
        if (waiting.reason() === 'cancel') throw cancelled(callerSignal);
        throw new ToolcellError('TIMEOUT',
          `The call waited ${this.#options.queueWaitMs} ms for a free ${job.kind} sandbox and was dropped. Retry later.`,
          {backend: job.kind, queueWaitMs: this.#options.queueWaitMs});
      }
      throw err;
    } finally {
      waiting.dispose();
    }
  }

  /** Waits for running calls to finish and closes the backends. */
  async close(): Promise<void> {
    const stopped = () => new ToolcellError('CANCELLED', 'The server stopped before the call started.');
    this.#queues.isolate.clear(stopped);
    this.#queues.container.clear(stopped);
    await Promise.allSettled([this.#queues.isolate.onIdle(), this.#queues.container.onIdle()]);
    await Promise.allSettled([this.#backends.isolate?.close(), this.#backends.container?.close(), this.#backends.server?.close()]);
  }
}

/**
 * The error of a call cancelled before it started: the caller's abort reason when that is a
 * `CANCELLED` ToolcellError (e.g. the HTTP service stopping calls at shutdown), else the
 * client's cancellation.
 */
const cancelled = (signal: AbortSignal): ToolcellError => signal.reason instanceof ToolcellError && signal.reason.code === 'CANCELLED'
  ? signal.reason
  : new ToolcellError('CANCELLED', 'The call was cancelled by the client before it started.');
