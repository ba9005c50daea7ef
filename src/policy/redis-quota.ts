/** Per-principal quotas shared by every replica: token buckets and in-flight leases in Redis, each decision one atomic Lua script. */
import {randomBytes} from 'node:crypto';
import {Redis} from 'ioredis';
import {ToolcellError} from '../errors.ts';
import {log} from '../log.ts';
import type {Principal} from './principal.ts';
import {IN_FLIGHT_RETRY_MS, QuotaAdmission, type QuotaOptions, type QuotaStore} from './quota.ts';
import type {ToolDefinition} from './tool-definition.ts';

/**
 * Atomic admission, one EVALSHA per call. KEYS[1] bucket hash {tokens, updated}, KEYS[2]
 * sorted set of in-flight leases (member = lease id `REPLICA:N`, score = expiry in ms on the
 * Redis server's clock). ARGV: ratePerSec, burst, maxInFlight, lease id, lease ms.
 * Expired leases (their replica stopped renewing them) are dropped before counting. The clock
 * is Redis's own `TIME`, so replicas with skewed clocks share one timeline (Redis 7 replicates
 * script effects, so reading TIME in a writing script is allowed).
 * Returns {1, inFlight} when admitted, {0, 'in-flight'|'rate', retryAfterMs} when refused.
 */
const ADMIT_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local maxIn = tonumber(ARGV[3])
local leaseMs = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local inflight = redis.call('ZCARD', KEYS[2])
if inflight >= maxIn then return {0, 'in-flight', 0} end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(b[1])
local updated = tonumber(b[2])
if tokens == nil or updated == nil then tokens = burst; updated = now end
tokens = math.min(burst, tokens + math.max(0, now - updated) / 1000 * rate)
if tokens < 1 then return {0, 'rate', math.max(1, math.ceil((1 - tokens) / rate * 1000))} end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
redis.call('ZADD', KEYS[2], now + leaseMs, ARGV[4])
redis.call('PEXPIRE', KEYS[2], leaseMs * 2 + 60000)
return {1, inflight + 1}
`;

/** Renews leases still held: ARGV[1] lease ms, ARGV[2..] lease ids. Only existing members are updated (XX): an expired lease is not brought back. */
const RENEW_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leaseMs = tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + leaseMs, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], leaseMs * 2 + 60000)
return renewed
`;

/** Default lease of an in-flight slot, in ms: a dead replica's slots come back this long after its last renewal. */
export const DEFAULT_LEASE_MS = 15_000;

/** What to do when Redis cannot be reached: refuse calls (`closed`, default) or admit them under this replica's own limits (`open`). */
export type FailMode = 'closed' | 'open';

/** State of the shared quota store, for `/readyz` and the log. */
export interface SharedStateReport {
  store: 'redis';
  /** Whether the last contact with Redis succeeded and the connection is up. */
  reachable: boolean;
  failMode: FailMode;
  /** What happens to calls now: `shared` limits, `local` limits (fail-open), or `refused` (fail-closed). */
  admitting: 'shared' | 'local' | 'refused';
}

export interface RedisQuotaOptions extends Omit<QuotaOptions, 'now'> {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…`. The password never reaches the log. */
  url: string;
  failMode?: FailMode;
  /** Lease of an in-flight slot in ms (renewed every third of it while the call runs). */
  leaseMs?: number;
  /** Prefix of every key, default `toolcell:`. */
  keyPrefix?: string;
  /** Bound on one Redis command, in ms (default 1000): past it the call is treated as Redis unreachable. */
  commandTimeoutMs?: number;
}

/** The URL with its password replaced by `***`, for logs. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    if (u.search !== '') u.search = '?***';
    return u.toString();
  } catch {
    return '(unparseable redis url)';
  }
}

type RedisWithScripts = Redis & {
  toolcellAdmit(bucket: string, leases: string, rate: number, burst: number, maxIn: number, lease: string, leaseMs: number): Promise<[number, string | number, number?]>;
  toolcellRenew(leases: string, leaseMs: number, ...ids: string[]): Promise<number>;
};

/**
 * Per-principal admission whose state lives in Redis, so that N replicas together grant each
 * principal one token bucket and one in-flight cap (the `QuotaStore` of `serve --http` when the
 * service config has `redis`). Each admission is one Lua script (ioredis `defineCommand`, sent
 * as EVALSHA), so concurrent replicas cannot both take the last token or slot.
 *
 * In-flight slots are leases: `REPLICA:N` with an expiry on Redis's clock, renewed every
 * `leaseMs / 3` while the call runs and removed when it ends. A replica that dies (SIGKILL,
 * host loss) stops renewing: its slots come back at most `leaseMs` after its last renewal.
 *
 * Redis unreachable (connection down, or a command over `commandTimeoutMs`): `failMode`
 * `closed` refuses the call with `BACKEND_UNAVAILABLE` naming Redis; `open` admits it under this
 * replica's own in-process limits (`QuotaAdmission`), so N replicas may then together admit N
 * times a principal's quota. ioredis reconnects by itself (back-off up to 2 s); shared limits
 * apply again from the first call after it is back.
 *
 * Not guaranteed: exactness under Redis failover or restart (the bucket and leases in Redis are
 * lost with an unpersisted restart: each principal starts again with a full bucket and no
 * slots, while calls admitted before it still run); a call whose lease expired because renewal
 * failed for longer than the lease keeps running but no longer counts.
 */
export class RedisQuotaStore implements QuotaStore {
  readonly #redis: RedisWithScripts;
  readonly #local: QuotaAdmission;
  readonly #failMode: FailMode;
  readonly #leaseMs: number;
  readonly #prefix: string;
  readonly #replica = randomBytes(6).toString('hex');
  readonly #onLimited: QuotaOptions['onLimited'];
  /** Leases held by calls of this replica: principal id → lease ids. */
  readonly #held = new Map<string, Set<string>>();
  readonly #renewTimer: NodeJS.Timeout;
  #seq = 0;
  #reachable = false;
  #closed = false;

  constructor(options: RedisQuotaOptions) {
    this.#local = new QuotaAdmission(options);
    this.#onLimited = options.onLimited;
    this.#failMode = options.failMode ?? 'closed';
    this.#leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    this.#prefix = options.keyPrefix ?? 'toolcell:';
    const where = redactRedisUrl(options.url);
    this.#redis = new Redis(options.url, {
      // A command while disconnected fails at once instead of waiting in a queue: the fail mode decides.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 1000,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(100 * times, 2000),
    }) as RedisWithScripts;
    this.#redis.defineCommand('toolcellAdmit', {numberOfKeys: 2, lua: ADMIT_LUA});
    this.#redis.defineCommand('toolcellRenew', {numberOfKeys: 1, lua: RENEW_LUA});
    this.#redis.on('ready', () => {
      if (!this.#reachable) log.debug({redis: where}, 'shared quota state: Redis reachable');
      this.#reachable = true;
    });
    this.#redis.on('error', (err: Error) => {
      // ioredis messages name host:port at most, never the password; log the code only to be sure.
      if (this.#reachable) log.warn({redis: where, code: (err as NodeJS.ErrnoException).code ?? err.name, failMode: this.#failMode}, 'shared quota state: Redis unreachable');
      this.#reachable = false;
    });
    this.#redis.on('close', () => {
      if (this.#reachable && !this.#closed) log.warn({redis: where, failMode: this.#failMode}, 'shared quota state: Redis connection closed');
      this.#reachable = false;
    });
    this.#renewTimer = setInterval(() => void this.#renew(), Math.max(100, Math.floor(this.#leaseMs / 3)));
    this.#renewTimer.unref();
  }

  /** This replica's id in lease names (random per process). */
  get replicaId(): string {
    return this.#replica;
  }

  /** The Redis connection (shared with `RedisSessionRecords`, so one replica holds one connection). */
  get client(): Redis {
    return this.#redis;
  }

  /** Lease of an in-flight slot, in ms. */
  get leaseMs(): number {
    return this.#leaseMs;
  }

  /** The limits that apply to a principal id. */
  limitsOf(principalId: string) {
    return this.#local.limitsOf(principalId);
  }

  /** The limits of principals without an override. */
  get defaults() {
    return this.#local.defaults;
  }

  /** For `/readyz`: whether Redis is reachable and what happens to calls meanwhile. */
  report(): SharedStateReport {
    const reachable = this.#reachable && this.#redis.status === 'ready';
    return {store: 'redis', reachable, failMode: this.#failMode, admitting: reachable ? 'shared' : this.#failMode === 'open' ? 'local' : 'refused'};
  }

  /**
   * Admits one call of `principal` against the shared bucket and in-flight cap.
   * @returns a release function (idempotent) that removes the lease
   * @throws ToolcellError `RATE_LIMITED` (`data.limit` `rate` or `in-flight`, `data.retryAfterMs`)
   *   as `QuotaAdmission`; `BACKEND_UNAVAILABLE` (`data.dependency: 'redis'`) when Redis cannot be
   *   reached and `failMode` is `closed`
   */
  async admit(principal: Principal, tool: Pick<ToolDefinition, 'name'>): Promise<() => void> {
    const limits = this.#local.limitsOf(principal.id);
    const lease = `${this.#replica}:${++this.#seq}`;
    const key = `${this.#prefix}quota:${principal.id}`;
    let answer: [number, string | number, number?];
    try {
      if (this.#closed) throw new Error('store closed');
      answer = await this.#redis.toolcellAdmit(`${key}:bucket`, `${key}:leases`, limits.ratePerSec, limits.burst, limits.maxInFlight, lease, this.#leaseMs);
    } catch (err) {
      // Down, or hung past commandTimeoutMs: not reachable until a PING or the next admission succeeds.
      this.#reachable = false;
      log.debug({code: (err as NodeJS.ErrnoException).code ?? (err as Error).name, failMode: this.#failMode}, 'shared quota state: admission could not reach Redis');
      if (this.#failMode === 'open') return this.#local.admit(principal, tool);
      throw new ToolcellError('BACKEND_UNAVAILABLE',
        'The shared quota store (Redis) cannot be reached, and this service refuses calls until it answers again (failMode "closed"). Retry later.',
        {dependency: 'redis', failMode: 'closed', retryAfterMs: 1000}, {cause: err});
    }
    this.#reachable = true;
    if (answer[0] !== 1) {
      const limit = answer[1] === 'rate' ? 'rate' : 'in-flight';
      this.#onLimited?.(principal, limit);
      if (limit === 'in-flight') {
        throw new ToolcellError('RATE_LIMITED',
          `Too many calls in progress: at most ${limits.maxInFlight} of your calls may run at once (across every replica). Retry when one has finished.`,
          {limit: 'in-flight', maxInFlight: limits.maxInFlight, retryAfterMs: IN_FLIGHT_RETRY_MS});
      }
      const retryAfterMs = Math.max(1, Number(answer[2] ?? 1));
      throw new ToolcellError('RATE_LIMITED',
        `Rate limit reached: at most ${limits.ratePerSec} calls per second (bursts of ${limits.burst}). Retry in ${retryAfterMs} ms.`,
        {limit: 'rate', ratePerSec: limits.ratePerSec, burst: limits.burst, retryAfterMs});
    }
    let set = this.#held.get(principal.id);
    if (set === undefined) this.#held.set(principal.id, set = new Set());
    set.add(lease);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const held = this.#held.get(principal.id);
      held?.delete(lease);
      if (held?.size === 0) this.#held.delete(principal.id);
      // A failed removal is harmless beyond the lease: the slot expires by itself.
      this.#redis.zrem(`${key}:leases`, lease).catch((err: unknown) => log.debug({code: (err as NodeJS.ErrnoException).code}, 'lease release failed; it expires after the lease'));
    };
  }

  /** Slots of a principal held in Redis now (all replicas, expired leases excluded); for tests and diagnostics. */
  async sharedInFlight(principalId: string): Promise<number> {
    const now = await this.#redis.time();
    const ms = Number(now[0]) * 1000 + Math.floor(Number(now[1]) / 1000);
    return this.#redis.zcount(`${this.#prefix}quota:${principalId}:leases`, `(${ms}`, '+inf');
  }

  /**
   * Every `leaseMs / 3`: a PING (so that a Redis that hangs, or comes back while no call arrives,
   * is reflected in `report()` and `/readyz`), then the renewal of every lease this replica holds.
   */
  async #renew(): Promise<void> {
    if (this.#redis.status !== 'ready') return;
    try {
      await this.#redis.ping();
      this.#reachable = true;
    } catch {
      this.#reachable = false;
      return;
    }
    if (this.#held.size === 0) return;
    for (const [principalId, leases] of this.#held) {
      await this.#redis.toolcellRenew(`${this.#prefix}quota:${principalId}:leases`, this.#leaseMs, ...leases)
        .catch((err: unknown) => log.debug({code: (err as NodeJS.ErrnoException).code}, 'lease renewal failed; retried at the next tick'));
    }
  }

  /** Stops renewing and closes the connection; leases still held expire after the lease. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#renewTimer);
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }
}
