/**
 * Memory hygiene of an isolate worker between calls: what one call left in the worker's
 * own Node heap must not stay resident and be charged to a later call by the RSS
 * watchdog (red-team finding 1, isolate hardening).
 *
 * Where such memory comes from: isolated-vm copies a value thrown at a module's top level
 * (or an unhandled rejection) out of the isolate in full, outside the isolate's
 * `memoryLimit`, and turns it into host strings in the worker's heap (seen with
 * isolated-vm 7.0.1: a 150 MB message left about 290 MB resident per call). The worker
 * cuts it to a few KB at once, but Node's heap does not collect it until a major GC,
 * which an idle worker may not run for a long time.
 */

/** Delay of the second look after a call that left the worker grown, in ms. */
const RECHECK_MS = 300;

/** Options of `MemoryHygiene`. */
export interface MemoryHygieneOptions {
  /** Resident set size of this process in bytes (e.g. `process.memoryUsage.rss`). */
  rss: () => number;
  /** A full, synchronous garbage collection (Node's `gc`, see worker.ts), or undefined when unavailable. */
  gc: (() => void) | undefined;
  /** Growth over the baseline, in bytes, above which a call's end triggers a full GC (e.g. 32 MiB). */
  slackBytes: number;
}

/**
 * Runs a full GC of the worker's own heap after a call when the process grew more than
 * `slackBytes` over its baseline (its RSS once started, lowered whenever it is seen
 * lower, raised to what survives a GC). Cheap when nothing grew: one `rss()` read (a syscall) per call; the GC itself
 * costs a few ms of the worker's main thread (isolates run on their own threads).
 *
 * Does NOT guarantee: that RSS returns to the baseline (memory held by isolates still
 * running, allocator fragmentation, code and source caches within their budgets), nor
 * anything while a call is running: the copy isolated-vm makes of a thrown value
 * happens before the worker sees it, so it still counts, transiently, against the RSS
 * ceiling (the backend then re-runs and blames only with evidence; see
 * `IsolateBackend`).
 */
export class MemoryHygiene {
  readonly #options: MemoryHygieneOptions;
  #baseline: number;
  #recheck: NodeJS.Timeout | undefined;

  constructor(options: MemoryHygieneOptions) {
    this.#options = options;
    this.#baseline = options.rss();
  }

  /**
   * Call when a call has ended and its result is sent: collects at once when the worker
   * grew, and once more `RECHECK_MS` later (isolated-vm releases what an isolate held,
   * and a thrown value's copy, only after the isolate's disposal has run on its thread).
   * Returns whether it collected now.
   */
  afterCall(): boolean {
    if (!this.#grown()) return false;
    this.#options.gc?.();
    if (this.#recheck === undefined) {
      this.#recheck = setTimeout(() => {
        this.#recheck = undefined;
        if (!this.#grown()) return;
        this.#options.gc?.();
        // What survives a full GC then is held on purpose (caches within their budgets,
        // calls still running): the new baseline, so that later calls do not collect again.
        const after = this.#options.rss();
        if (after > this.#baseline) this.#baseline = after;
      }, RECHECK_MS);
      this.#recheck.unref();
    }
    return true;
  }

  /** RSS is above the baseline plus the slack (and a GC is available); lowers the baseline when RSS is below it. */
  #grown(): boolean {
    const now = this.#options.rss();
    if (now < this.#baseline) this.#baseline = now;
    return this.#options.gc !== undefined && now > this.#baseline + this.#options.slackBytes;
  }
}
