// Per-principal quotas: a token bucket and an in-flight cap.
import {ToolcellError} from '../errors.ts';
import type {Principal} from './principal.ts';
import type {ToolDefinition} from './tool-definition.ts';

/** One principal's limits: a token bucket (rate and burst) and an in-flight cap. */
export interface QuotaLimits {
  /** Bucket refill rate, in calls per second. */
  ratePerSec: number;
  /** Bucket size: calls that may start at once after a quiet period. */
  burst: number;
  /** Calls of this principal that may be running or queued at once. */
  maxInFlight: number;
}

export interface QuotaOptions {
  /** Limits of every principal without an override. */
  defaults: QuotaLimits;
  /** Per-principal overrides, by principal id (`key:NAME`, `sub:SUBJECT`, `local`); missing fields take the defaults. */
  principals?: Readonly<Record<string, Partial<QuotaLimits>>>;
  /** Monotonic clock in ms (tests); default `performance.now()`. */
  now?: () => number;
  /** Observes each refusal (metrics); `limit` says which limit refused. */
  onLimited?: (principal: Principal, limit: 'rate' | 'in-flight') => void;
}

/**
 * `retryAfterMs` given with an in-flight refusal. The moment one of the principal's own calls
 * ends cannot be known in advance; this is a hint, not a promise.
 */
export const IN_FLIGHT_RETRY_MS = 250;

/**
 * Where per-principal quota state lives: `QuotaAdmission` (this process; one replica) or
 * `RedisQuotaStore` (redis-quota.ts; shared by every replica). Structurally the `Admission` of
 * frontend/call-tool.ts. `admit` returns (or resolves to) a release function to call once when
 * the call ends, or throws ToolcellError `RATE_LIMITED` (and, for a shared store whose backing
 * service is unreachable in fail-closed mode, `BACKEND_UNAVAILABLE`).
 */
export interface QuotaStore {
  admit(principal: Principal, tool: Pick<ToolDefinition, 'name'>): (() => void) | Promise<() => void>;
  /** The limits that apply to a principal id. */
  limitsOf(principalId: string): QuotaLimits;
  /** The limits of principals without an override. */
  readonly defaults: QuotaLimits;
}

interface Bucket {
  tokens: number;
  updated: number;
  inFlight: number;
  limits: QuotaLimits;
}

/**
 * Per-principal admission for the call spine (structurally the `Admission` of
 * frontend/call-tool.ts; policy does not import the frontend). Each principal has its own
 * token bucket and in-flight counter, so one principal's flood only ever drains its own
 * bucket and fills its own in-flight allowance: another principal's admission never reads
 * or changes them.
 *
 * What this does NOT guarantee on its own: that a call admitted here is never refused `BUSY`
 * by the shared dispatcher queue. That holds while the in-flight caps of the principals that
 * are active at the same moment add up to no more than a backend's concurrency plus its queue
 * bound; the HTTP service refuses configurations where a single principal's cap reaches a
 * queue bound (see `quotaQueueProblems`).
 */
export class QuotaAdmission implements QuotaStore {
  readonly #defaults: QuotaLimits;
  readonly #overrides: Readonly<Record<string, Partial<QuotaLimits>>>;
  readonly #now: () => number;
  readonly #onLimited: QuotaOptions['onLimited'];
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: QuotaOptions) {
    assertLimits('defaults', options.defaults);
    this.#defaults = {...options.defaults};
    this.#overrides = options.principals ?? {};
    for (const [id, override] of Object.entries(this.#overrides)) assertLimits(id, {...this.#defaults, ...override});
    this.#now = options.now ?? (() => performance.now());
    this.#onLimited = options.onLimited;
  }

  /** The limits of principals without an override. */
  get defaults(): QuotaLimits {
    return {...this.#defaults};
  }

  /** The limits that apply to a principal id. */
  limitsOf(principalId: string): QuotaLimits {
    return {...this.#defaults, ...this.#overrides[principalId]};
  }

  /**
   * Admits one call of `principal`, or refuses it.
   * @returns a release function to call once when the call has ended (further calls are no-ops)
   * @throws ToolcellError `RATE_LIMITED` with `data.retryAfterMs` (ms until a retry can be
   *   admitted: exact for the rate limit, a hint for the in-flight cap) and `data.limit`
   *   (`rate` or `in-flight`). A refused call consumes nothing.
   */
  admit(principal: Principal, tool: Pick<ToolDefinition, 'name'>): () => void {
    void tool;
    const bucket = this.#bucket(principal.id);
    const limits = bucket.limits;
    if (bucket.inFlight >= limits.maxInFlight) {
      this.#onLimited?.(principal, 'in-flight');
      throw new ToolcellError('RATE_LIMITED',
        `Too many calls in progress: at most ${limits.maxInFlight} of your calls may run at once. Retry when one has finished.`,
        {limit: 'in-flight', maxInFlight: limits.maxInFlight, retryAfterMs: IN_FLIGHT_RETRY_MS});
    }
    if (bucket.tokens < 1) {
      const retryAfterMs = Math.max(1, Math.ceil(((1 - bucket.tokens) / limits.ratePerSec) * 1000 - 1e-6));
      this.#onLimited?.(principal, 'rate');
      throw new ToolcellError('RATE_LIMITED',
        `Rate limit reached: at most ${limits.ratePerSec} calls per second (bursts of ${limits.burst}). Retry in ${retryAfterMs} ms.`,
        {limit: 'rate', ratePerSec: limits.ratePerSec, burst: limits.burst, retryAfterMs});
    }
    bucket.tokens -= 1;
    bucket.inFlight += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      bucket.inFlight -= 1;
    };
  }

  /** Calls of a principal currently admitted and not yet released. */
  inFlight(principalId: string): number {
    return this.#buckets.get(principalId)?.inFlight ?? 0;
  }

  /** Principals currently tracked (a bucket is dropped once it is full again and idle). */
  get trackedPrincipals(): number {
    return this.#buckets.size;
  }

  #bucket(id: string): Bucket {
    const now = this.#now();
    let bucket = this.#buckets.get(id);
    if (bucket === undefined) {
      if (this.#buckets.size >= 4096) this.#prune(now);
      const limits = this.limitsOf(id);
      bucket = {tokens: limits.burst, updated: now, inFlight: 0, limits};
      this.#buckets.set(id, bucket);
      return bucket;
    }
    refill(bucket, now);
    return bucket;
  }

  /** Forgets buckets that are full and idle: they behave exactly like new ones. */
  #prune(now: number): void {
    for (const [id, bucket] of this.#buckets) {
      refill(bucket, now);
      if (bucket.inFlight === 0 && bucket.tokens >= bucket.limits.burst) this.#buckets.delete(id);
    }
  }
}

function refill(bucket: Bucket, now: number): void {
  const elapsed = Math.max(0, now - bucket.updated);
  bucket.tokens = Math.min(bucket.limits.burst, bucket.tokens + (elapsed / 1000) * bucket.limits.ratePerSec);
  bucket.updated = now;
}

function assertLimits(label: string, limits: QuotaLimits): void {
  const ok = Number.isFinite(limits.ratePerSec) && limits.ratePerSec > 0
    && Number.isInteger(limits.burst) && limits.burst >= 1
    && Number.isInteger(limits.maxInFlight) && limits.maxInFlight >= 1;
  if (!ok) throw new RangeError(`quota ${label}: ratePerSec must be > 0, burst and maxInFlight integers >= 1`);
}

/**
 * Checks the fairness precondition: no single principal's in-flight cap may reach the queue
 * bound of a backend, so one principal alone can never fill a queue and push another
 * principal's calls into `BUSY`.
 * @param queues per backend: how many calls may wait (`maxQueued`)
 * @returns a list of problems, empty when the quotas fit
 */
export function quotaQueueProblems(quota: Pick<QuotaStore, 'defaults' | 'limitsOf'>, principalIds: readonly string[], queues: Readonly<Record<string, {maxQueued: number}>>): string[] {
  const problems: string[] = [];
  const smallest = Math.min(...Object.values(queues).map((q) => q.maxQueued));
  for (const id of ['(default)', ...principalIds]) {
    const limits = id === '(default)' ? quota.defaults : quota.limitsOf(id);
    if (limits.maxInFlight >= smallest) {
      problems.push(`maxInFlight ${limits.maxInFlight} of ${id} must be below the smallest dispatcher queue bound (${smallest}), or one principal could fill a queue and make other principals' calls BUSY`);
    }
  }
  return problems;
}
