// How many large module compiles run at once in one isolate worker: a first-come-first-served slot queue.

/** A place in the queue: `ready` resolves when the slot is held; `leave` frees it (or leaves the queue), once. */
export interface CompileTurn {
  /** Resolves when this turn holds a slot; never rejects. */
  ready: Promise<void>;
  /** Frees the slot when held, else leaves the queue; later calls do nothing. */
  leave: () => void;
}

/**
 * At most `size` holders at once, the rest queued in arrival order. Used to run at most
 * `size` large compiles (isolated-vm `compileModule` on their isolates' threads) per
 * worker: each one keeps a CPU busy for about a second per 10 MB, and many at once starve
 * the worker's main thread (which still copies each source into its isolate, prepares
 * isolates and answers the other calls) on a host with few CPUs.
 *
 * Does NOT guarantee: fairness between principals (first come first served: a principal
 * that queues many large calls makes other large calls wait; small sources never queue
 * here); the wait is not the waiting call's own time, and is bounded by its backstop
 * or cancellation (the caller leaves the queue).
 */
export class CompileSlots {
  readonly #size: number;
  #held = 0;
  readonly #queue: Array<() => void> = [];

  /** @param size slots, a positive integer. @throws RangeError otherwise. */
  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`CompileSlots: size must be a positive integer (got ${size})`);
    this.#size = size;
  }

  /** Joins the queue (or takes a free slot at once). */
  take(): CompileTurn {
    let state: 'waiting' | 'held' | 'gone' = 'waiting';
    let resolveReady: () => void = () => {};
    const ready = new Promise<void>((resolve) => {
      resolveReady = resolve;
    });
    const grant = (): void => {
      state = 'held';
      this.#held++;
      resolveReady();
    };
    if (this.#held < this.#size) grant();
    else this.#queue.push(grant);
    const leave = (): void => {
      if (state === 'held') {
        this.#held--;
        this.#queue.shift()?.();
      } else if (state === 'waiting') {
        const at = this.#queue.indexOf(grant);
        if (at >= 0) this.#queue.splice(at, 1);
      }
      state = 'gone';
    };
    return {ready, leave};
  }

  /** Slots held and turns waiting. */
  get size(): {held: number; waiting: number} {
    return {held: this.#held, waiting: this.#queue.length};
  }
}
