/** Prometheus metrics of the HTTP service, in a registry of its own, with labels that never name a principal. */
import {collectDefaultMetrics, Counter, Gauge, Histogram, Registry} from 'prom-client';
import {containersLeftBehind} from '../backends/container/reaper.ts';
import type {QueueStats} from '../dispatch/dispatcher.ts';
import type {ToolDefinition} from '../policy/tool-definition.ts';
import {REFUSAL_RULES} from './refusal-watch.ts';

/** What a finished call reports (the `ToolRuntime.onCallFinished` event). */
export interface CallFinished {
  tool: ToolDefinition;
  outcome: string;
  /** Time from receipt to result, in ms. */
  durationMs: number;
}

/** Why a request failed authentication, as counted by `toolcell_auth_failures_total`. */
export type AuthFailureReason = 'missing' | 'malformed' | 'invalid' | 'expired' | 'insufficient_scope' | 'query_token' | 'unavailable';

/** Seconds buckets of the call duration histogram: 1 ms to 2 min. */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * Prometheus metrics of the HTTP service (prom-client, https://github.com/siimon/prom-client),
 * in a registry of its own (not prom-client's global one), so that several services can live
 * in one process. Labels never carry principals, tokens or arguments: only tool names,
 * backends, outcomes and reasons, which the operator controls. The tool names are those of
 * every principal's calls, so `/metrics` is served only to the readers the service config
 * lists (`metrics.principals`) unless the operator makes it public.
 *
 * Series:
 * - `toolcell_tool_calls_total{tool, outcome}`: finished calls
 * - `toolcell_tool_call_duration_seconds{backend}`: time from receipt to result
 * - `toolcell_dispatch_queue_depth{backend, state}`: calls `running` / `queued` per backend
 * - `toolcell_sandbox_pool_size{pool}`: warm sandboxes ready, when a pool reporter is set
 * - `toolcell_auth_failures_total{reason}`: refused authentications
 * - `toolcell_rate_limited_total{limit}`: calls refused by a quota (`rate` or `in-flight`)
 * - `toolcell_http_responses_total{route, status}`: HTTP answers by route and status
 * - `toolcell_http_sessions`: open 2025-era sessions
 * - `toolcell_egress_total{tool, outcome}`: egress decisions (`allowed`, `denied`, `limit`, `failed`)
 * - `toolcell_http_bodies_refused_total{reason}`: requests answered 503/429 because too many bodies were being read
 * - `toolcell_refusals_total{rule}`: calls refused `DENIED`, by rule (`grants`, `unknown-tool`, `pin`, ...; `RefusalWatch`)
 * - `toolcell_principal_refusal_bursts_total{rule}`: times one principal was refused for one rule
 *   `DEFAULT_REFUSAL_BURST.threshold` times within its window (the audit stream says who)
 * - `toolcell_isolate_worker_restarts_total`: isolate worker processes replaced (crash, kill, memory ceiling)
 * - `toolcell_containers_left_behind_total{found}`: containers of this installation the reaper
 *   found and removed although their owner should have (`orphans`: left by an earlier process on
 *   this host or pod), and removals that failed (`remove-failed`)
 * - `toolcell_shared_state_reachable{store="redis"}`: 1 while the shared quota store (Redis) answers, 0 when not; absent without `redis`
 * - Node process metrics (`process_*`, `nodejs_*`) from `collectDefaultMetrics`.
 */
export class ServiceMetrics {
  readonly registry = new Registry();
  readonly #calls: Counter<'tool' | 'outcome'>;
  readonly #duration: Histogram<'backend'>;
  readonly #authFailures: Counter<'reason'>;
  readonly #rateLimited: Counter<'limit'>;
  readonly #responses: Counter<'route' | 'status'>;
  readonly #bodiesRefused: Counter<'reason'>;
  readonly #egress: Counter<'tool' | 'outcome'>;
  #queues: (() => Record<string, QueueStats>) | undefined;
  #pools: (() => Record<string, number>) | undefined;
  #sessions: (() => number) | undefined;
  readonly #refusals: Counter<'rule'>;
  readonly #refusalBursts: Counter<'rule'>;
  #restarts: (() => number) | undefined;
  #sharedState: (() => boolean) | undefined;

  /** @param options.defaultMetrics collect Node process metrics too (default true) */
  constructor(options: {defaultMetrics?: boolean} = {}) {
    const registers = [this.registry];
    this.#calls = new Counter({name: 'toolcell_tool_calls_total', help: 'Finished tool calls by tool and outcome.', labelNames: ['tool', 'outcome'], registers});
    this.#duration = new Histogram({name: 'toolcell_tool_call_duration_seconds', help: 'Time from receipt of a tool call to its result, by backend.',
      labelNames: ['backend'], buckets: DURATION_BUCKETS, registers});
    this.#authFailures = new Counter({name: 'toolcell_auth_failures_total', help: 'Requests refused by authentication, by reason.', labelNames: ['reason'], registers});
    this.#rateLimited = new Counter({name: 'toolcell_rate_limited_total', help: 'Tool calls refused by a per-principal quota, by limit.', labelNames: ['limit'], registers});
    this.#responses = new Counter({name: 'toolcell_http_responses_total', help: 'HTTP responses by route and status.', labelNames: ['route', 'status'], registers});
    this.#bodiesRefused = new Counter({name: 'toolcell_http_bodies_refused_total', help: 'Request bodies not read because too many were being read at once (busy: the service; principal-busy: that principal).', labelNames: ['reason'], registers});
    this.#egress = new Counter({name: 'toolcell_egress_total', help: 'Egress decisions by tool and outcome (allowed, denied, limit, failed).', labelNames: ['tool', 'outcome'], registers});
    const queues = () => this.#queues;
    new Gauge({
      name: 'toolcell_dispatch_queue_depth', help: 'Calls running and queued per backend.', labelNames: ['backend', 'state'], registers,
      collect() {
        const stats = queues()?.();
        if (stats === undefined) return;
        for (const [backend, s] of Object.entries(stats)) {
          this.set({backend, state: 'running'}, s.running);
          this.set({backend, state: 'queued'}, s.queued);
        }
      },
    });
    const pools = () => this.#pools;
    new Gauge({
      name: 'toolcell_sandbox_pool_size', help: 'Warm sandboxes ready, per pool.', labelNames: ['pool'], registers,
      collect() {
        for (const [pool, size] of Object.entries(pools()?.() ?? {})) this.set({pool}, size);
      },
    });
    const sessions = () => this.#sessions;
    new Gauge({
      name: 'toolcell_http_sessions', help: 'Open 2025-era Streamable HTTP sessions.', registers,
      collect() {
        this.set(sessions()?.() ?? 0);
      },
    });
    this.#refusals = new Counter({name: 'toolcell_refusals_total', help: 'Tool calls refused DENIED, by rule (grants, unknown-tool, pin, egress, secret, ...).', labelNames: ['rule'], registers});
    this.#refusalBursts = new Counter({name: 'toolcell_principal_refusal_bursts_total', help: 'Times one principal was refused for one rule repeatedly within a window (see the audit stream for who).', labelNames: ['rule'], registers});
    const restarts = () => this.#restarts;
    let restartsSeen = 0;
    new Counter({
      name: 'toolcell_isolate_worker_restarts_total', help: 'Isolate worker processes replaced after a crash, a kill or their memory ceiling.', registers,
      collect() {
        const now = restarts()?.() ?? restartsSeen;
        if (now > restartsSeen) this.inc(now - restartsSeen);
        restartsSeen = Math.max(restartsSeen, now);
      },
    });
    const leftSeen = {orphans: 0, 'remove-failed': 0};
    const leftBehind = new Counter({
      name: 'toolcell_containers_left_behind_total', help: 'Containers the reaper found left behind (orphans of an earlier process) or failed to remove.', labelNames: ['found'], registers,
      collect() {
        const now = containersLeftBehind();
        for (const found of ['orphans', 'remove-failed'] as const) {
          if (now[found] > leftSeen[found]) this.inc({found}, now[found] - leftSeen[found]);
          leftSeen[found] = Math.max(leftSeen[found], now[found]);
        }
      },
    });
    for (const found of ['orphans', 'remove-failed']) leftBehind.inc({found}, 0);
    // Every rule starts at 0, so increase() sees the first refusal (and burst) of each.
    for (const rule of REFUSAL_RULES) {
      this.#refusals.inc({rule}, 0);
      this.#refusalBursts.inc({rule}, 0);
    }
    const sharedState = () => this.#sharedState;
    new Gauge({
      // Labelled so that the series is absent (not 0, which would read as "unreachable") without a store.
      name: 'toolcell_shared_state_reachable', help: 'Whether the shared quota and session store answers: 1 yes, 0 no. Absent without "redis" in the config.', labelNames: ['store'], registers,
      collect() {
        const reachable = sharedState();
        if (reachable !== undefined) this.set({store: 'redis'}, reachable() ? 1 : 0);
      },
    });
    if (options.defaultMetrics !== false) collectDefaultMetrics({register: this.registry});
  }

  /** The `onCallFinished` hook for `createRuntime` (already bound). */
  readonly onCallFinished = (event: CallFinished): void => {
    this.#calls.inc({tool: event.tool.name, outcome: event.outcome});
    this.#duration.observe({backend: event.tool.profile.backend}, event.durationMs / 1000);
  };

  /** Counts one request refused because its body could not be read now (`BodyBudget`). */
  bodyRefused(reason: 'busy' | 'principal-busy'): void {
    this.#bodiesRefused.inc({reason});
  }

  /** Counts one egress decision (the egress proxy's `count` hook; already bound). */
  readonly egress = (tool: string, outcome: string): void => {
    this.#egress.inc({tool, outcome});
  };

  /** Counts one refused authentication. */
  authFailure(reason: AuthFailureReason): void {
    this.#authFailures.inc({reason});
  }

  /** Counts one call refused by a quota. */
  rateLimited(limit: 'rate' | 'in-flight'): void {
    this.#rateLimited.inc({limit});
  }

  /** Counts one HTTP response. `route` is a fixed route name, never the raw path. */
  httpResponse(route: string, status: number): void {
    this.#responses.inc({route, status: String(status)});
  }

  /** Reports queue depth from the dispatcher (`dispatcher.stats()`), read at scrape time. */
  watchQueues(stats: () => Record<string, QueueStats>): void {
    this.#queues = stats;
  }

  /** Reports warm-pool sizes, read at scrape time (when the backends expose them). */
  watchPools(sizes: () => Record<string, number>): void {
    this.#pools = sizes;
  }

  /** Reports the number of open sessions, read at scrape time. */
  watchSessions(count: () => number): void {
    this.#sessions = count;
  }

  /** Counts one call refused DENIED, by rule (the `RefusalWatch` `onRefusal` hook). */
  refused(rule: string): void {
    this.#refusals.inc({rule});
  }

  /** Counts one burst of refusals by one principal (the `RefusalWatch` `onBurst` hook). */
  refusalBurst(rule: string): void {
    this.#refusalBursts.inc({rule});
  }

  /** Reports the isolate worker restarts so far (a running total), read at scrape time. */
  watchWorkerRestarts(total: () => number): void {
    this.#restarts = total;
  }

  /** Reports whether the shared store (Redis) is reachable, read at scrape time (`RedisQuotaStore.report`). */
  watchSharedState(reachable: () => boolean): void {
    this.#sharedState = reachable;
  }

  /** The exposition text and its content type. */
  async render(): Promise<{contentType: string; body: string}> {
    return {contentType: this.registry.contentType, body: await this.registry.metrics()};
  }
}
