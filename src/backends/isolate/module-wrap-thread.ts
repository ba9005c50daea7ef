// Rewrites large tool modules (wrapToolModule) on a thread of its own, so the isolate worker's main thread stays free for other calls.
import {fileURLToPath} from 'node:url';
import {isMainThread, parentPort, Worker} from 'node:worker_threads';
import {THREAD_WRAP_BUDGET, wrapToolModule, type NotWrapped, type WrapRefusal, type WrappedModule} from './module-wrap.ts';

/** This file, run as the thread's entry (`.ts` from src/, `.js` from dist/). */
const THREAD_PATH = fileURLToPath(import.meta.url);

/**
 * Heap of the rewrite thread, in MB: the parse keeps the tree of one top-level statement
 * at a time (module-wrap.ts), and stops at `THREAD_WRAP_BUDGET`, well below this heap (the
 * module then runs unwrapped, as before the rewrite). The limit is a second line only:
 * Node ends a thread at its heap limit on a best-effort basis (the module is then refused,
 * `rewriteRefusal`), and an allocation of the wrong shape there aborts the whole worker
 * process instead (nodejs/node#47224).
 */
const THREAD_HEAP_MB = 256;

/**
 * CPU time a rewrite may take on the thread, in ms: `PARSE_CPU_BASE_MS` plus
 * `PARSE_CPU_MS_PER_MI` per Mi (2^20) UTF-16 units of source. Measured here: 0.1-0.2 s of
 * CPU per MB (typescript.js, 400 K small declarations, 200 K regular expressions), so a
 * 16 Mi source may take 10 s, about three times its measured need. Over it the thread is
 * terminated and the module refused (`rewriteRefusal`; not run unwrapped: a rewrite cut
 * short has not checked the module's regular expressions against `REGEX_BUDGET`): a parse
 * whose time some input makes grow faster than the source (as acorn's duplicate regex
 * group name check did) cannot hold the thread, and the calls queued behind it, longer
 * than this.
 */
export const PARSE_CPU_BASE_MS = 2000;
/** See `PARSE_CPU_BASE_MS`. */
export const PARSE_CPU_MS_PER_MI = 500;
/** How often the thread's CPU time is read during a rewrite, in ms. */
const CPU_POLL_MS = 100;

/** CPU time budget of the rewrite of a source of `chars` UTF-16 units, in ms (see `PARSE_CPU_BASE_MS`). */
export const parseCpuBudgetMs = (chars: number): number => PARSE_CPU_BASE_MS + PARSE_CPU_MS_PER_MI * chars / 2 ** 20;

/**
 * The refusal of a module whose rewrite the thread did not finish: over its CPU time
 * budget (`budgetMs`), or the thread stopped (its heap limit; `budgetMs` undefined).
 */
export function rewriteRefusal(filename: string, chars: number, budgetMs: number | undefined): WrapRefusal {
  const why = budgetMs === undefined
    ? 'its rewrite stopped before the end (the rewrite thread ran out of memory)'
    : `its rewrite took more than its CPU time budget of ${Math.round(budgetMs)} ms (${PARSE_CPU_BASE_MS} ms + ${PARSE_CPU_MS_PER_MI} ms per Mi characters; this module has ${chars})`;
  return {error: {name: 'Error', message: `The module cannot be run: ${why}. [${filename}]`}};
}

interface Job {
  source: string;
  filename: string;
  resolve: (result: WrappedModule | WrapRefusal | NotWrapped) => void;
}

/**
 * One lazily started thread that runs `wrapToolModule` for the worker, jobs in order, one
 * posted at a time: a job's source is copied to the thread only when the thread is free, so
 * the thread holds one source (and its parse) at most, however many calls queue (16 queued
 * 15 MB sources could otherwise wait as about 250 MB of copies in the thread's message port).
 * A parse cannot be interrupted but by terminating the thread: one over its CPU time
 * budget (`cpuBudgetMs`, by default `parseCpuBudgetMs`, read every 100 ms) is, and its
 * module refused (`rewriteRefusal`), as when the thread stops by itself.
 *
 * Does NOT guarantee: fairness (first come first served: queued rewrites wait for the
 * one running, up to its budget, 10 s for 16 Mi characters by default); that a module
 * near its budget is accepted on every host (the CPU budget depends on the host's speed,
 * unlike `THREAD_WRAP_BUDGET`; the worker keeps the refusal for the source). Does NOT bound the
 * queue's length: the worker already holds each queued source (its source cache), this
 * adds none.
 */
export class WrapThread {
  readonly #cpuBudgetMs: (chars: number) => number;
  #thread: Worker | undefined;
  /** The job on the thread, if any. */
  #running: Job | undefined;
  /** Budget (ms) of the running job when it went over it and its thread is being terminated. */
  #overBudgetMs: number | undefined;
  /** Reads the thread's CPU time while `#running` is set. */
  #watch: NodeJS.Timeout | undefined;
  readonly #queue: Job[] = [];
  /** Rewrites whose thread was terminated over their CPU budget (for tests and logs). */
  overBudget = 0;

  /** @param options.cpuBudgetMs CPU time a rewrite of `chars` UTF-16 units may take, in ms (default `parseCpuBudgetMs`). */
  constructor(options: {cpuBudgetMs?: (chars: number) => number} = {}) {
    this.#cpuBudgetMs = options.cpuBudgetMs ?? parseCpuBudgetMs;
  }

  /** The rewrite of `source`; a refusal (syntax, imports, `REGEX_BUDGET`, `rewriteRefusal`); `{unwrapped: true}` when its parse went over `THREAD_WRAP_BUDGET`. */
  wrap(source: string, filename: string): Promise<WrappedModule | WrapRefusal | NotWrapped> {
    return new Promise((resolve) => {
      this.#queue.push({source, filename, resolve});
      this.#next();
    });
  }

  /** Posts the next queued job when none runs. */
  #next(): void {
    if (this.#running !== undefined) return;
    const job = this.#queue.shift();
    if (job === undefined) {
      this.#thread?.unref();
      return;
    }
    const thread = this.#thread ?? this.#start();
    this.#running = job;
    thread.ref();
    this.#watchCpu(thread, job);
    thread.postMessage({source: job.source, filename: job.filename});
  }

  /** Terminates `thread` when `job`, still running, has used more CPU time than `parseCpuBudgetMs`. */
  #watchCpu(thread: Worker, job: Job): void {
    const budgetUs = this.#cpuBudgetMs(job.source.length) * 1000;
    // The thread's CPU time now, the baseline of this job; a thread still starting has
    // none yet, and its job is charged from zero (its start included).
    const start = thread.cpuUsage().catch(() => ({user: 0, system: 0}));
    let reading = false;
    this.#watch = setInterval(() => {
      if (reading) return;
      reading = true;
      void start.then(async (base) => {
        if (this.#running !== job || this.#thread !== thread) return;
        const used = await thread.cpuUsage(base);
        if (this.#running !== job || this.#thread !== thread || used.user + used.system <= budgetUs) return;
        this.overBudget++;
        this.#overBudgetMs = budgetUs / 1000;
        // The exit handler refuses the job and starts the queue on a new thread.
        await thread.terminate();
      }).catch(() => {
        // Not running yet (read again at the next tick), or ended: its exit handler settles the job.
      }).finally(() => {
        reading = false;
      });
    }, CPU_POLL_MS);
    this.#watch.unref();
  }

  #stopWatch(): void {
    clearInterval(this.#watch);
    this.#watch = undefined;
  }

  #start(): Worker {
    const thread = new Worker(THREAD_PATH, {resourceLimits: {maxOldGenerationSizeMb: THREAD_HEAP_MB}});
    thread.unref();
    thread.on('message', (message: {result: WrappedModule | WrapRefusal}) => {
      const job = this.#running;
      this.#running = undefined;
      this.#stopWatch();
      job?.resolve(message.result);
      this.#next();
    });
    const fail = (): void => {
      if (this.#thread !== thread) return;
      this.#thread = undefined;
      // The job it was parsing is refused; the queued ones go to a new thread.
      const job = this.#running;
      const budgetMs = this.#overBudgetMs;
      this.#running = undefined;
      this.#overBudgetMs = undefined;
      this.#stopWatch();
      job?.resolve(rewriteRefusal(job.filename, job.source.length, budgetMs));
      this.#next();
    };
    thread.on('error', fail);
    thread.on('exit', fail);
    this.#thread = thread;
    return thread;
  }
}

/** The worker process's rewrite thread. */
export const wrapThread = new WrapThread();

if (!isMainThread && parentPort) {
  const port = parentPort;
  port.on('message', (message: {source: string; filename: string}) => {
    port.postMessage({result: wrapToolModule(message.source, message.filename, THREAD_WRAP_BUDGET)});
  });
}
