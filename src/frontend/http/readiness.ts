/** `/readyz`: whether this instance should get traffic, from the tools it serves, a real isolate probe and the container engine's answer. */
import {randomUUID} from 'node:crypto';
import type {IsolateJob} from '../../backends/backend.ts';
import {ToolcellError} from '../../errors.ts';
import type {ToolRuntime} from '../call-tool.ts';

/** State of one backend in the readiness report. */
export type BackendState = 'ok' | 'busy' | 'unavailable' | 'failed' | 'skipped';

/** What `/readyz` answers: a summary with no host details. */
export interface ReadinessReport {
  ready: boolean;
  /** Tools served now. */
  tools: number;
  /** Loaded tools left out for a fault (their backend, image or mount is unavailable on this host): not ready. */
  unavailableTools: number;
  /** Loaded tools left out on purpose (`--no-containers`, no `--workspace`): reported, still ready. */
  skippedTools: number;
  /** State of each backend that a served or loaded tool's profile needs. */
  backends: Partial<Record<'isolate' | 'container', BackendState>>;
  draining: boolean;
  /** The shared quota store (Redis), when configured: reachable or not, and what calls get meanwhile. Unreachable with failMode `closed` is not ready. */
  sharedState?: SharedStateReport;
}

/** What `/readyz` says about shared state (structurally `SharedStateReport` of policy/redis-quota.ts). */
export interface SharedStateReport {
  store: 'redis';
  reachable: boolean;
  failMode: 'closed' | 'open';
  admitting: 'shared' | 'local' | 'refused';
}

/**
 * Extra readiness check; resolves false (or throws) when not ready. `serve --http` passes the
 * runtime's container engine ping (`Runtime.containersReachable`: a Docker ping bounded at 2 s,
 * true when no container tool is served).
 */
export type ReadinessCheck = () => Promise<boolean>;

/** How long an isolate probe result is reused, in ms (probes are cheap, but not free). */
export const PROBE_CACHE_MS = 2000;

/** The isolate probe: a trivial module through the real dispatcher and backend. */
const probeJob = (): IsolateJob => ({
  kind: 'isolate',
  id: `readyz-${randomUUID()}`,
  source: 'export default () => 1;\n',
  filename: 'toolcell/readyz.js',
  args: {},
  limits: {timeoutMs: 2000, memoryMb: 16, outputBytes: 1024, cpuTimeMs: 2000},
});

/**
 * Readiness of the service (`/readyz`): ready when at least one tool is served, no loaded tool
 * is left out for a fault (tools left out on purpose, `skipped`, are counted apart and do not
 * count against it), every backend a served tool needs is configured, a
 * trivial isolate call completes through the real dispatcher (cached for `PROBE_CACHE_MS`), and
 * the `extra` check passes (on every request, uncached). When `extra` fails and container tools
 * are served, the report names the container backend `unavailable`.
 * A backend that is merely busy (queue full, or the probe waited too long) counts as ready:
 * overload is for the quotas, not a reason to drop the instance. Not guaranteed: that a
 * container call would succeed (the ping shows the engine answers, not that it can start a
 * sandbox now).
 */
export class Readiness {
  readonly #runtime: ToolRuntime & {unavailable?: readonly {readonly tool: string; readonly reason: string; readonly skipped?: boolean}[]};
  readonly #extra: ReadinessCheck | undefined;
  #probe: {at: number; state: BackendState} | undefined;
  #pending: Promise<BackendState> | undefined;
  readonly #sharedState: (() => SharedStateReport) | undefined;
  draining = false;

  constructor(runtime: ToolRuntime & {unavailable?: readonly {readonly tool: string; readonly reason: string; readonly skipped?: boolean}[]}, extra?: ReadinessCheck, sharedState?: () => SharedStateReport) {
    this.#runtime = runtime;
    this.#extra = extra;
    this.#sharedState = sharedState;
  }

  async report(): Promise<ReadinessReport> {
    const tools = [...this.#runtime.tools.values()];
    const left = this.#runtime.unavailable ?? [];
    const skippedTools = left.filter((u) => u.skipped === true).length;
    const unavailableTools = left.length - skippedTools;
    const kinds = new Set(tools.map((t) => t.profile.backend));
    const backends: ReadinessReport['backends'] = {};
    for (const kind of kinds) {
      if (!this.#runtime.dispatcher.has(kind)) backends[kind] = 'unavailable';
      else if (kind === 'container') backends[kind] = 'ok';
    }
    if (kinds.has('isolate') && backends.isolate === undefined) backends.isolate = await this.#isolateState();
    if (unavailableTools > 0 && backends.container === undefined) backends.container = 'unavailable';
    if (skippedTools > 0 && backends.container === undefined) backends.container = 'skipped';
    let extraOk = true;
    if (this.#extra !== undefined) extraOk = await this.#extra().catch(() => false);
    if (!extraOk && backends.container === 'ok') backends.container = 'unavailable';
    const sharedState = this.#sharedState?.();
    const ready = !this.draining && extraOk && tools.length > 0 && unavailableTools === 0
      && Object.values(backends).every((s) => s === 'ok' || s === 'busy' || s === 'skipped')
      && sharedState?.admitting !== 'refused';
    return {ready, tools: tools.length, unavailableTools, skippedTools, backends, draining: this.draining, ...(sharedState ? {sharedState} : {})};
  }

  async #isolateState(): Promise<BackendState> {
    const now = performance.now();
    if (this.#probe !== undefined && now - this.#probe.at < PROBE_CACHE_MS) return this.#probe.state;
    this.#pending ??= this.#runProbe().then((state) => {
      this.#probe = {at: performance.now(), state};
      this.#pending = undefined;
      return state;
    });
    return this.#pending;
  }

  async #runProbe(): Promise<BackendState> {
    const signal = AbortSignal.timeout(3000);
    try {
      const result = await this.#runtime.dispatcher.run(probeJob(), signal);
      if (result.isCanceled && signal.aborted) return 'busy';
      return !result.failed && result.stdout.trim() === '1' ? 'ok' : 'failed';
    } catch (err) {
      if (err instanceof ToolcellError && (err.code === 'BUSY' || err.code === 'TIMEOUT' || err.code === 'CANCELLED')) return 'busy';
      return 'failed';
    }
  }
}
