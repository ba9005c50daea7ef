/** One backend's admission queue, fair between principals: per-principal FIFO queues served by deficit round robin with weights, bounded concurrency, longest-queue drop when full. */

/** Weight of a principal the config does not name. */
export const DEFAULT_WEIGHT = 1;

/** A waiting task, as the queue hands it back when it may start. */
interface Waiting {
  principal: string;
  start: () => void;
  refuse: (reason: unknown) => void;
}

/** One principal's queue and its deficit counter (Shreedhar & Varghese, "Efficient fair queuing using deficit round robin", 1995). */
interface Flow {
  principal: string;
  weight: number;
  items: Waiting[];
  deficit: number;
  /** Whether this flow has been given its quantum for the visit in progress. */
  inTurn: boolean;
}

/**
 * A bounded queue in front of one backend, fair between principals.
 *
 * Each principal has its own FIFO queue (a *flow*); flows that have calls waiting are visited
 * in round-robin order, and at each visit a flow receives `weight` credits (its quantum) and
 * starts one call per whole credit it holds (every call costs 1: its duration is unknown when
 * it is admitted). This is deficit round robin with unit cost, i.e. weighted round robin with
 * fractional weights carried over. A principal that starts waiting joins the end of the round,
 * so its first call starts after at most one visit of every other waiting flow: at most
 * Σ ceil(weight) of the other waiting principals' calls start before it.
 *
 * Bounds: `concurrency` tasks run at once; `maxQueued` wait in all. When the queue is full, a
 * new call whose principal holds fewer waiting calls than the principal holding the most is
 * admitted and that principal's newest waiting call is refused with `onFull`'s error instead
 * (longest-queue drop); otherwise the new call itself is refused. So a flood by many
 * principals cannot keep a quiet one out, and the total stays bounded.
 *
 * Not guaranteed: fairness of **time** on the backend (a principal whose calls run longer
 * gets more of it; the per-principal quota's `maxInFlight` bounds that), fairness across
 * backends or replicas (each Dispatcher schedules its own queues), or any order between the
 * calls of different principals beyond the round.
 */
export class FairQueue {
  readonly #concurrency: number;
  readonly #maxQueued: number;
  readonly #weightOf: (principal: string) => number;
  readonly #flows = new Map<string, Flow>();
  /** Flows with waiting calls, in visiting order; the head is the flow being visited. */
  readonly #active: Flow[] = [];
  #running = 0;
  #queued = 0;
  #idle: (() => void)[] = [];

  /**
   * @param concurrency tasks running at once (>= 1)
   * @param maxQueued tasks waiting at most, over all principals (>= 0)
   * @param weightOf a principal's weight (> 0; values below 0.01 count as 0.01); default 1 for all
   * @throws RangeError on a bound out of range
   */
  constructor(concurrency: number, maxQueued: number, weightOf: (principal: string) => number = () => DEFAULT_WEIGHT) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be an integer >= 1, got ${concurrency}`);
    if (!Number.isInteger(maxQueued) || maxQueued < 0) throw new RangeError(`maxQueued must be an integer >= 0, got ${maxQueued}`);
    this.#concurrency = concurrency;
    this.#maxQueued = maxQueued;
    this.#weightOf = weightOf;
  }

  /** Tasks running now. */
  get running(): number {
    return this.#running;
  }

  /** Tasks waiting now, over all principals. */
  get queued(): number {
    return this.#queued;
  }

  /** Tasks of `principal` waiting now. */
  queuedOf(principal: string): number {
    return this.#flows.get(principal)?.items.length ?? 0;
  }

  /**
   * Runs `task` for `principal` when its turn comes.
   *
   * @param signal aborting it removes a waiting task (rejects with the signal's reason); it has
   *   no effect once the task started (the task owns its own cancellation)
   * @param onFull makes the error for a call refused because the queue is full (the new call,
   *   at once, or another principal's newest waiting call, pushed out)
   * @returns the task's result; the concurrency slot is held until `task` settles
   * @throws `onFull()`'s error when refused for space; the signal's reason when aborted while waiting
   */
  async add<T>(principal: string, task: () => Promise<T>, signal: AbortSignal, onFull: () => unknown): Promise<T> {
    if (signal.aborted) throw signal.reason;
    if (this.#running < this.#concurrency && this.#queued === 0) return this.#run(task);
    if (this.#queued >= this.#maxQueued) {
      const victim = this.#longestFlow();
      if (victim === undefined || victim.items.length <= this.queuedOf(principal)) throw onFull();
      const pushed = victim.items.pop()!;
      this.#queued--;
      if (victim.items.length === 0) this.#retire(victim);
      pushed.refuse(onFull());
    }
    await new Promise<void>((resolve, reject) => {
      const entry: Waiting = {
        principal,
        start: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        refuse: (reason) => {
          signal.removeEventListener('abort', onAbort);
          reject(reason);
        },
      };
      const onAbort = () => {
        if (this.#remove(entry)) reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, {once: true});
      this.#enqueue(entry);
    });
    return this.#run(task, true);
  }

  /** Refuses every waiting task with `reason()`; running tasks go on. */
  clear(reason: () => unknown): void {
    for (const flow of [...this.#active]) {
      for (const entry of flow.items.splice(0)) {
        this.#queued--;
        entry.refuse(reason());
      }
      this.#retire(flow);
    }
  }

  /** Resolves when nothing runs and nothing waits. */
  onIdle(): Promise<void> {
    if (this.#running === 0 && this.#queued === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Runs a task in a slot; `reserved` when `#startNext` already counted the slot for it. */
  async #run<T>(task: () => Promise<T>, reserved = false): Promise<T> {
    if (!reserved) this.#running++;
    try {
      return await task();
    } finally {
      this.#running--;
      this.#startNext();
    }
  }

  #enqueue(entry: Waiting): void {
    let flow = this.#flows.get(entry.principal);
    if (flow === undefined) {
      const weight = this.#weightOf(entry.principal);
      flow = {principal: entry.principal, weight: Number.isFinite(weight) ? Math.max(0.01, weight) : DEFAULT_WEIGHT, items: [], deficit: 0, inTurn: false};
      this.#flows.set(entry.principal, flow);
      this.#active.push(flow);
    }
    flow.items.push(entry);
    this.#queued++;
    this.#startNext();
  }

  /** Removes a waiting entry (aborted); false when it is no longer waiting. */
  #remove(entry: Waiting): boolean {
    const flow = this.#flows.get(entry.principal);
    const index = flow?.items.indexOf(entry) ?? -1;
    if (flow === undefined || index < 0) return false;
    flow.items.splice(index, 1);
    this.#queued--;
    if (flow.items.length === 0) this.#retire(flow);
    this.#settleIdle();
    return true;
  }

  /** A flow without waiting calls leaves the round and forgets its credit (DRR resets an empty flow's deficit). */
  #retire(flow: Flow): void {
    const index = this.#active.indexOf(flow);
    if (index >= 0) this.#active.splice(index, 1);
    this.#flows.delete(flow.principal);
  }

  #longestFlow(): Flow | undefined {
    let longest: Flow | undefined;
    for (const flow of this.#active) if (longest === undefined || flow.items.length > longest.items.length) longest = flow;
    return longest;
  }

  /** Starts waiting tasks while slots are free, in deficit-round-robin order. */
  #startNext(): void {
    while (this.#running < this.#concurrency && this.#queued > 0) {
      const entry = this.#nextEntry();
      if (entry === undefined) break;
      this.#queued--;
      this.#running++;
      entry.start();
    }
    this.#settleIdle();
  }

  #nextEntry(): Waiting | undefined {
    // Each pass either returns, retires a flow, or adds at least 0.01 credit to one: it ends.
    while (this.#active.length > 0) {
      const flow = this.#active[0]!;
      if (!flow.inTurn) {
        flow.deficit += flow.weight;
        flow.inTurn = true;
      }
      if (flow.deficit >= 1) {
        flow.deficit -= 1;
        const entry = flow.items.shift()!;
        if (flow.items.length === 0) this.#retire(flow);
        return entry;
      }
      flow.inTurn = false;
      this.#active.push(this.#active.shift()!);
    }
    return undefined;
  }

  #settleIdle(): void {
    if (this.#running !== 0 || this.#queued !== 0) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }
}
