// The isolate warm pool inside a worker: isolates prepared ahead of demand, each used once.
import {disposePrepared, type PreparedIsolate} from './prepared-isolate.ts';

/** Options of `WarmPool`. */
export interface WarmPoolOptions {
  /** Prepared isolates kept per `memoryMb` value. */
  size: number;
  /** Distinct `memoryMb` values kept warm at most; the least recently used is evicted. */
  maxKeys: number;
  /**
   * Starts preparing one isolate (isolate + context + prelude) with the given memory
   * limit in MB, as a generator (`prepareIsolateSteps`): each `next()` runs one
   * synchronous step, the last returns the isolate; `return()` abandons it and must
   * dispose whatever it created.
   */
  prepare: (memoryMb: number) => Generator<void, PreparedIsolate, void>;
  /** Reports a failed refill (the pool then stays short until the next `take`). */
  onError: (error: unknown, memoryMb: number) => void;
  /**
   * True while calls are running. Refills wait for an idle moment: every step blocks the
   * worker's main thread (up to about 0.8 ms of CPU here, a whole isolate about 1.5 ms),
   * which would otherwise be added to the calls in flight. Call `resume()` when the
   * worker becomes idle.
   */
  busy: () => boolean;
  /**
   * Optional: called on the pool's turn right before a new preparation's first step when
   * the pool still holds an idle isolate for that `memoryMb` (not before later steps, nor
   * before a preparation the pool needs at once). The worker sleeps its thread briefly
   * here; see `worker.ts`.
   */
  beforePrepare?: () => void;
}

/** Idle isolates of one `memoryMb` value and the one being prepared, if any. */
interface Slot {
  idle: PreparedIsolate[];
  /** Steps of the isolate being prepared; it joins `idle` once its last step has run. */
  preparing: Generator<void, PreparedIsolate, void> | undefined;
}

/**
 * Isolates created ahead of demand, each handed to exactly one call and disposed by
 * that call: the fresh-isolate guarantee at warm-isolate latency (MACHINE.md).
 *
 * Keyed by `memoryMb`, because isolated-vm fixes `memoryLimit` when the isolate is
 * created. `take` never waits: an empty pool returns undefined and the caller creates a
 * cold isolate, so a burst larger than the pool degrades to cold isolates and never
 * to reuse. An isolate still being prepared is never handed out.
 *
 * Refills run only while `busy()` is false, on `setImmediate` turns, one isolate at a
 * time per `memoryMb`. While the pool still holds an idle isolate for that value, a
 * refill runs one preparation step per turn, so a call that arrives meanwhile waits for
 * at most one step (the longest, creating the isolate, is about 0.8 ms of CPU here);
 * once it holds none, the next call would have to prepare an isolate itself, on its own
 * critical path, so the refill runs all remaining steps of one isolate in one turn. A
 * refill interrupted by calls goes on from the same step when `resume()` is called.
 *
 * Does NOT guarantee: a warm isolate for the first call of a new `memoryMb` value (that
 * call starts its warming), or for calls beyond `size` in quick succession, or when
 * calls follow each other so closely that the worker is never idle long enough to
 * refill (each isolate costs about 1.5 ms of CPU to prepare; see `prepareIsolateSteps`);
 * nor that a call never waits for a refill (up to one step, or one whole isolate when
 * the pool was empty).
 */
export class WarmPool {
  readonly #options: WarmPoolOptions;
  /** memoryMb → slot; Map order is least recently used first. */
  readonly #slots = new Map<number, Slot>();
  readonly #filling = new Set<number>();
  #closed = false;

  constructor(options: WarmPoolOptions) {
    this.#options = options;
  }

  /** Starts warming `memoryMb` without taking an isolate. */
  warm(memoryMb: number): void {
    this.#touch(memoryMb);
    this.#scheduleRefill(memoryMb);
  }

  /**
   * Removes and returns an idle isolate with `memoryLimit` = `memoryMb`, or undefined.
   * The caller owns it and must dispose it.
   */
  take(memoryMb: number): PreparedIsolate | undefined {
    if (this.#closed) return undefined;
    const {idle} = this.#touch(memoryMb);
    let prepared: PreparedIsolate | undefined;
    while ((prepared = idle.shift()) !== undefined && prepared.isolate.isDisposed) {
      // Disposed while idle (should not happen): skip it.
    }
    this.#scheduleRefill(memoryMb);
    return prepared;
  }

  /** Restarts refills that waited for the worker to become idle. */
  resume(): void {
    for (const memoryMb of this.#slots.keys()) this.#scheduleRefill(memoryMb);
  }

  /** Idle (ready) isolates per memoryMb, for stats and tests; isolates being prepared are not counted. */
  get idle(): Record<number, number> {
    const out: Record<number, number> = {};
    for (const [key, slot] of this.#slots) out[key] = slot.idle.length;
    return out;
  }

  /** Disposes every idle isolate and the ones being prepared, and stops refilling. */
  close(): void {
    this.#closed = true;
    for (const slot of this.#slots.values()) this.#discard(slot);
    this.#slots.clear();
  }

  #touch(memoryMb: number): Slot {
    let slot = this.#slots.get(memoryMb);
    if (slot === undefined) slot = {idle: [], preparing: undefined};
    else this.#slots.delete(memoryMb);
    this.#slots.set(memoryMb, slot);
    while (this.#slots.size > this.#options.maxKeys) {
      const [oldest, oldSlot] = this.#slots.entries().next().value as [number, Slot];
      this.#slots.delete(oldest);
      this.#discard(oldSlot);
    }
    return slot;
  }

  /** Disposes the slot's idle isolates and abandons its preparation (which disposes its isolate). */
  #discard(slot: Slot): void {
    for (const prepared of slot.idle) disposePrepared(prepared);
    slot.idle.length = 0;
    const preparing = slot.preparing;
    slot.preparing = undefined;
    try {
      preparing?.return(undefined as never);
    } catch {
      // Disposal failed inside isolated-vm; nothing more to do.
    }
  }

  #scheduleRefill(memoryMb: number): void {
    if (this.#closed || this.#options.size <= 0 || this.#filling.has(memoryMb)) return;
    this.#filling.add(memoryMb);
    setImmediate(() => this.#refillStep(memoryMb));
  }

  /**
   * Runs one preparation step for `memoryMb` (all remaining steps of the isolate when
   * none is idle) and schedules the next turn while short and idle.
   */
  #refillStep(memoryMb: number): void {
    const slot = this.#slots.get(memoryMb);
    if (this.#closed || slot === undefined || (slot.preparing === undefined && slot.idle.length >= this.#options.size)
      || this.#options.busy()) {
      this.#filling.delete(memoryMb);
      return;
    }
    try {
      // With no idle isolate left, the next call would prepare one itself, on its own
      // critical path: finish this one at once instead of one step per turn.
      const urgent = slot.idle.length === 0;
      if (slot.preparing === undefined) {
        if (!urgent) this.#options.beforePrepare?.();
        slot.preparing = this.#options.prepare(memoryMb);
      }
      for (;;) {
        const step = slot.preparing.next();
        if (step.done === true) {
          slot.preparing = undefined;
          slot.idle.push(step.value);
          break;
        }
        if (!urgent) break;
      }
    } catch (error) {
      slot.preparing = undefined;
      this.#filling.delete(memoryMb);
      this.#options.onError(error, memoryMb);
      return;
    }
    setImmediate(() => this.#refillStep(memoryMb));
  }
}
