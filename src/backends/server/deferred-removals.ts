/**
 * Hosted servers' containers whose call already returned, being removed in the background: a
 * bounded set that the next call waits on when it is full, that the warm pool counts as live
 * containers, and that `close()` drains.
 */
import {log as rootLog} from '../../log.ts';

const log = rootLog.child({component: 'server-removals'});

/** Default bound on removals in flight at once, per backend (see {@link DeferredRemovals}). */
export const MAX_PENDING_REMOVALS = 4;

/**
 * Removals (kill + remove through the container tier's remover) started after a call's result was
 * built, so that the engine's 0.3-1 s per removal is off the call's path.
 *
 * Bound: at most `max` removals in flight; {@link room} makes the next call wait (holding its
 * dispatch slot) while the set is full, so calls' containers alive at once are at most the
 * dispatcher's concurrency plus `max`. {@link live} gives the count and memory (MB, the
 * containers' `memoryMb` limits) for the warm pool's own bounds.
 * Errors: a removal that rejects is logged (the remover already retries and remembers leaks);
 * the set never throws.
 * Does NOT: make a container stop any sooner: a container whose profile grants anything outside
 * the sandbox (read-write mount, network) must be killed by the caller *before* its result
 * returns; only the removal of such a container may come here. Nor does it bound how long one
 * removal takes (the remover's timeout does).
 */
export class DeferredRemovals {
  readonly #max: number;
  readonly #pending = new Map<Promise<void>, number>();
  readonly #waiters = new Set<() => void>();
  /** Called after each removal settled (e.g. to refill the warm pool once there is room). */
  onSettled: (() => void) | undefined;

  /** @param max removals in flight at once; at least 1. */
  constructor(max: number = MAX_PENDING_REMOVALS) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`max pending removals must be an integer >= 1, got ${max}`);
    this.#max = max;
  }

  /** Removals in flight and the sum of their containers' memory limits, in MB. */
  live(): {count: number; memoryMb: number} {
    let memoryMb = 0;
    for (const mb of this.#pending.values()) memoryMb += mb;
    return {count: this.#pending.size, memoryMb};
  }

  /**
   * Starts `remove()` on the next turn of the event loop (after the result of the call that
   * ends here was handed on) and counts it from now until it settles. Over the bound it still starts (the
   * container must go): callers wait in {@link room} *before* they make another container.
   * @param memoryMb the container's memory limit, in MB (counted by {@link live})
   */
  add(remove: () => Promise<void>, memoryMb: number): void {
    // Started on the next turn of the event loop: the call's result is handed on first.
    const p: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
      .then(remove)
      .catch((err: unknown) => log.warn({err}, 'deferred removal of a hosted server container failed; the remover retries'))
      .finally(() => {
        this.#pending.delete(p);
        for (const wake of this.#waiters) wake();
        this.onSettled?.();
      });
    this.#pending.set(p, memoryMb);
  }

  /**
   * Resolves at once while fewer than `max` removals are in flight, else when one settles.
   * @throws the reason of `signal` when it aborts first
   */
  async room(signal: AbortSignal): Promise<void> {
    while (this.#pending.size >= this.#max) {
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#waiters.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.#waiters.add(wake);
        signal.addEventListener('abort', wake, {once: true});
      });
    }
    signal.throwIfAborted();
  }

  /** Resolves when every removal settled, those added meanwhile included. Never rejects. */
  async drain(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending.keys()]);
  }
}
