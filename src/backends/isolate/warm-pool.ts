import {disposePrepared, type PreparedIsolate} from './prepared-isolate.ts';

/** Options of `WarmPool`. */
export interface WarmPoolOptions {
  /** Prepared isolates kept per `memoryMb` value. */
  size: number;
  /** Distinct `memoryMb` values kept warm at most; the least recently used is evicted. */
  maxKeys: number;
  /**
   * Creates one prepared isolate (isolate + context + prelude) with the given memory
   * limit in MB, synchronously (about a millisecond; the pool yields to the event loop
   * between two creations).
   */
  create: (memoryMb: number) => PreparedIsolate;
  /** Reports a failed refill (the pool then stays short until the next `take`). */
  onError: (error: unknown, memoryMb: number) => void;
  /**
   * True while calls are running. Refills wait for an idle moment: creating an isolate
   * blocks the worker's main thread for about a millisecond, which would otherwise be
   * added to the calls in flight. Call `resume()` when the worker becomes idle.
   */
  busy: () => boolean;
}

/**
 * Isolates created ahead of demand, each handed to exactly one call and disposed by
 * that call: the fresh-isolate guarantee at warm-isolate latency (MACHINE.md).
 *
 * Keyed by `memoryMb`, because isolated-vm fixes `memoryLimit` when the isolate is
 * created. `take` never waits: an empty pool returns undefined and the caller creates a
 * cold isolate, so a burst larger than the pool degrades to cold isolates and never
 * to reuse. Refills create one isolate per event-loop turn (`setImmediate`), so a call
 * that arrives meanwhile waits for at most one creation.
 *
 * Does NOT guarantee: a warm isolate for the first call of a new `memoryMb` value (that
 * call starts its warming), or for calls beyond `size` in quick succession.
 */
export class WarmPool {
  readonly #options: WarmPoolOptions;
  /** memoryMb → idle isolates; Map order is least recently used first. */
  readonly #idle = new Map<number, PreparedIsolate[]>();
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
    const list = this.#touch(memoryMb);
    let prepared: PreparedIsolate | undefined;
    while ((prepared = list.shift()) !== undefined && prepared.isolate.isDisposed) {
      // Disposed while idle (should not happen): skip it.
    }
    this.#scheduleRefill(memoryMb);
    return prepared;
  }

  /** Restarts refills that waited for the worker to become idle. */
  resume(): void {
    for (const memoryMb of this.#idle.keys()) this.#scheduleRefill(memoryMb);
  }

  /** Idle isolates per memoryMb, for stats and tests. */
  get idle(): Record<number, number> {
    const out: Record<number, number> = {};
    for (const [key, list] of this.#idle) out[key] = list.length;
    return out;
  }

  /** Disposes every idle isolate and stops refilling. */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) for (const prepared of list) disposePrepared(prepared);
    this.#idle.clear();
  }

  #touch(memoryMb: number): PreparedIsolate[] {
    let list = this.#idle.get(memoryMb);
    if (list === undefined) list = [];
    else this.#idle.delete(memoryMb);
    this.#idle.set(memoryMb, list);
    while (this.#idle.size > this.#options.maxKeys) {
      const [oldest, oldList] = this.#idle.entries().next().value as [number, PreparedIsolate[]];
      this.#idle.delete(oldest);
      for (const prepared of oldList) disposePrepared(prepared);
    }
    return list;
  }

  #scheduleRefill(memoryMb: number): void {
    if (this.#closed || this.#options.size <= 0 || this.#filling.has(memoryMb)) return;
    this.#filling.add(memoryMb);
    setImmediate(() => this.#refillOne(memoryMb));
  }

  /** Adds one isolate for `memoryMb` and schedules the next turn while short and idle. */
  #refillOne(memoryMb: number): void {
    const list = this.#idle.get(memoryMb);
    if (this.#closed || list === undefined || list.length >= this.#options.size || this.#options.busy()) {
      this.#filling.delete(memoryMb);
      return;
    }
    try {
      list.push(this.#options.create(memoryMb));
    } catch (error) {
      this.#filling.delete(memoryMb);
      this.#options.onError(error, memoryMb);
      return;
    }
    setImmediate(() => this.#refillOne(memoryMb));
  }
}
