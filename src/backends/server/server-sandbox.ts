/**
 * One hosted MCP server process in its own container: started with the container tier's floor
 * (host-config.ts, sandbox.ts), spoken to over MCP stdio (mcp-stdio-session.ts), initialized and
 * listed, then removed by the container tier's teardown (teardown.ts).
 */
import type Docker from 'dockerode';
import type {EgressCallContext, EgressLimitHit, EgressProxy, EgressSession} from '../../egress/proxy.ts';
import {netnsOf, startEgressRelay, type EgressRelay} from '../../egress/relay.ts';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import type {ContainerJob} from '../backend.ts';
import {CgroupSampler} from '../container/cgroup.ts';
import type {DeadlineKeeper} from '../container/deadline-keeper.ts';
import {attributeExit, type ExitAttribution} from '../container/exit-reason.ts';
import {toCreateOptions} from '../container/host-config.ts';
import type {Provenance} from '../container/provenance.ts';
import {prepareSandbox, type Sandbox} from '../container/sandbox.ts';
import {newTeardown, type ContainerRemover} from '../container/teardown.ts';
import {quoteServerText} from './bounded-json.ts';
import {JsonRpcError, McpStdioSession, SessionError, SUPPORTED_PROTOCOL_VERSIONS, type SessionHandlers} from './mcp-stdio-session.ts';

const log = rootLog.child({component: 'server-sandbox'});

/** How this client names itself in `initialize` (MCP `clientInfo`). */
export const CLIENT_INFO = {name: 'toolcell', version: '0.1.0'} as const;
/**
 * Bounds on one server's listings: `pages`, the most `tools/list` (and other list) pages
 * followed per session; `items`, the most entries accepted from one list across its pages.
 */
export const LIST_LIMITS = Object.freeze({pages: 16, items: 1_024});

/** The container tier's parts a server sandbox is made with (one set per backend instance). */
export interface ServerSandboxDeps {
  docker: Docker;
  owner: string;
  provenance: Provenance;
  remover: ContainerRemover;
  keeper: DeadlineKeeper;
  /**
   * The egress proxy for servers whose profile grants egress (egress/proxy.ts); absent: such
   * servers are refused (`BACKEND_UNAVAILABLE`, reason `egress-unavailable`) before any container.
   */
  egress?: EgressProxy;
}

/** Where a running server container's egress relay is entered: its init pid, leased uid/gid, and the network namespace read at start. */
interface EgressTarget {
  pid: number;
  uid: number;
  gid: number;
  netns: string;
}

/** The proxy session and relay bound to one call of a server with an egress grant. */
interface EgressBinding {
  session: EgressSession;
  relay: EgressRelay | undefined;
}

/**
 * Opens a proxy session for `context` (its socket owned by the container's leased uid) and a
 * relay entered into the container's network namespace (egress/relay.ts), checking first that
 * the container still runs with that pid. A failure closes what was opened, then throws.
 */
async function bindEgress(proxy: EgressProxy, container: Sandbox['container'], target: EgressTarget, context: EgressCallContext): Promise<EgressBinding> {
  const again = await container.inspect({abortSignal: AbortSignal.timeout(5_000)});
  if (!again.State.Running || again.State.Pid !== target.pid) throw new Error('the server sandbox stopped before its egress relay started');
  const session = await proxy.open(context, {uid: target.uid, gid: target.gid});
  try {
    const relay = await startEgressRelay({pid: target.pid, uid: target.uid, gid: target.gid, socketPath: session.socketPath, expectedNetns: target.netns});
    return {session, relay};
  } catch (err) {
    await session.close();
    throw err;
  }
}

/** Stops the relay (by its pid) and closes the session; returns the limit the call hit, if any. Never throws. */
async function releaseEgress(binding: EgressBinding | undefined): Promise<EgressLimitHit | undefined> {
  if (binding === undefined) return undefined;
  binding.relay?.stop();
  try {
    await binding.session.close();
  } catch (err) {
    log.debug({err}, 'closing an egress session failed');
  }
  return binding.session.limitHit && {...binding.session.limitHit};
}

/** What a server said in its handshake (untrusted JSON, shapes checked). */
export interface ServerHello {
  protocolVersion: string;
  serverInfo: Record<string, unknown>;
  capabilities: Record<string, unknown>;
  instructions?: string;
}

/** Why a server sandbox failed before or during its session; mapped to a result by the caller. */
export class ServerFailure extends Error {
  /**
   * `protocol`: not MCP (garbage, bad handshake, unsupported version); `output-limit`; `exited`:
   * ended by itself; `handshake-timeout`; `refused`: a valid JSON-RPC error answer to `tools/call`
   * (the server's own tool failure, e.g. -32602 for bad arguments).
   */
  readonly kind: 'protocol' | 'output-limit' | 'exited' | 'handshake-timeout' | 'refused';
  constructor(kind: ServerFailure['kind'], message: string) {
    super(message);
    this.name = 'ServerFailure';
    this.kind = kind;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A started server container with its MCP session. Own it with `await using`, or call
 * {@link ServerSandbox.remove} in `finally`: that is the one release of the container (and its
 * uid lease, deadline-keeper watch and provenance record, through the remover).
 */
export class ServerSandbox {
  readonly sandbox: Sandbox;
  readonly session: McpStdioSession;
  readonly #deps: ServerSandboxDeps;
  readonly #sampler: CgroupSampler;
  #removed: Promise<void> | undefined;
  /** With an egress grant: where the relay is entered (fixed for the container's life). */
  readonly #egressTarget: EgressTarget | undefined;
  /** With an egress grant: the session and relay of the call the server serves now (undefined between calls). */
  #egress: EgressBinding | undefined;

  private constructor(deps: ServerSandboxDeps, sandbox: Sandbox, session: McpStdioSession, egress?: {target: EgressTarget; binding: EgressBinding}) {
    this.#deps = deps;
    this.sandbox = sandbox;
    this.session = session;
    this.#sampler = new CgroupSampler(sandbox.id);
    this.#egressTarget = egress?.target;
    this.#egress = egress?.binding;
  }

  /** Whether this server's profile grants egress (its network goes through a per-call proxy session). */
  get hasEgress(): boolean {
    return this.#egressTarget !== undefined;
  }

  /**
   * Binds the server's egress to the call `context` (lifetime "principal": each call of a kept
   * server): the previous call's session and relay are closed first (their open connections
   * cut), then a fresh session (fresh limits, audit events with this call's id and principal)
   * and a fresh relay are opened. No-op for a server without an egress grant.
   * @throws Error when the container stopped or the relay could not start (the caller fails the call).
   */
  async bindEgress(context: EgressCallContext | undefined): Promise<void> {
    if (this.#egressTarget === undefined) return;
    await this.releaseEgress();
    if (context === undefined || this.#deps.egress === undefined) throw new Error('a server with an egress grant needs the call\'s egress context and a proxy');
    if (this.#removed) throw new Error('the server sandbox is being removed');
    this.#egress = await bindEgress(this.#deps.egress, this.sandbox.container, this.#egressTarget, context);
    // Removed while binding: nothing may outlive the container.
    if (this.#removed) {
      await this.releaseEgress();
      throw new Error('the server sandbox was removed while its egress relay started');
    }
  }

  /**
   * Closes the current call's session and relay (the server then has no route at all until the
   * next {@link bindEgress}); returns the limit that call hit, if any. Idempotent; never throws.
   */
  async releaseEgress(): Promise<EgressLimitHit | undefined> {
    const binding = this.#egress;
    this.#egress = undefined;
    return releaseEgress(binding);
  }

  /** The first egress limit the current call hit, if any (read before {@link releaseEgress}). */
  get egressLimit(): EgressLimitHit | undefined {
    const hit = this.#egress?.session.limitHit;
    return hit && {...hit};
  }

  /** Container id (for logs and tests). */
  get id(): string {
    return this.sandbox.id;
  }

  /**
   * Creates and starts a server container for `spec` (argv = the server's command, image = its
   * pinned image ID) with every setting of the container floor, stdin attached, and opens the
   * MCP session on it. The deadline keeper is told `deadlineAt` (ms since the epoch) so that the
   * container does not outlive it if this process dies.
   * @throws ToolcellError `BACKEND_UNAVAILABLE` (engine, image, start); the reason of `signal`
   *   when it aborted. A container created before a failure is removed before this throws.
   */
  static async start(deps: ServerSandboxDeps, spec: ContainerJob, options: {signal: AbortSignal; deadlineAt: number; handlers?: SessionHandlers}): Promise<ServerSandbox> {
    // Egress: refused before any container unless a proxy and the call's context are there, under runc.
    const proxy = deps.egress;
    const context = spec.network === 'none' ? undefined : spec.egress;
    if (spec.network !== 'none') {
      if (proxy === undefined || context === undefined) {
        throw new ToolcellError('BACKEND_UNAVAILABLE', `Profile "${spec.profile}" grants egress, but this server runs no egress proxy; the hosted server was not started.`,
          {reason: 'egress-unavailable', profile: spec.profile});
      }
      if (spec.runtime !== 'runc') {
        throw new ToolcellError('BACKEND_UNAVAILABLE', `Profile "${spec.profile}" grants egress under runtime ${spec.runtime}; egress is available under runc only.`,
          {reason: 'egress-runtime', runtime: spec.runtime});
      }
    }
    let egress: {target: EgressTarget; binding: EgressBinding} | undefined;
    const claim = deps.provenance.claim(deps.owner);
    const base = toCreateOptions(spec, {owner: deps.owner});
    const createOptions = {...base, name: claim.name, Labels: {...base.Labels, ...claim.labels}};
    const teardown = newTeardown();
    let done = false;
    try {
      const sandbox = await prepareSandbox(deps.docker, createOptions, {
        image: spec.image, runtime: spec.runtime, signal: options.signal,
        onCreated: (c) => {
          teardown.container = c;
          deps.provenance.record(c.id);
          deps.keeper.watch(c.id, options.deadlineAt);
          deps.remover.track(c);
        },
        // The server is held until its relay listens: its first instruction already has its (only) route.
        ...(context === undefined ? {} : {
          afterStart: async ({pid, uid, gid}: {pid: number; uid: number; gid: number}) => {
            const target = {pid, uid, gid, netns: netnsOf(pid)};
            egress = {target, binding: await bindEgress(proxy!, teardown.container!, target, context)};
          },
        }),
      });
      teardown.sandbox = sandbox;
      const session = new McpStdioSession(sandbox.socket, {outputBytes: spec.limits.outputBytes}, options.handlers);
      done = true;
      return new ServerSandbox(deps, sandbox, session, egress);
    } finally {
      if (!done) {
        try {
          await deps.remover.finish(teardown);
        } finally {
          await releaseEgress(egress?.binding);
        }
      }
    }
  }

  /**
   * MCP handshake (2025-11-25 basic/lifecycle §Initialization): `initialize` asking for the
   * first of {@link SUPPORTED_PROTOCOL_VERSIONS} and no client capabilities (no sampling,
   * elicitation or roots: nothing leaves the sandbox), the answer checked, then
   * `notifications/initialized`.
   * @throws ServerFailure `protocol` for an unsupported version or a malformed answer; see {@link guard}.
   */
  async initialize(signal: AbortSignal): Promise<ServerHello> {
    const result = await this.guard(this.session.request('initialize', {
      protocolVersion: SUPPORTED_PROTOCOL_VERSIONS[0],
      capabilities: {},
      clientInfo: CLIENT_INFO,
    }), signal, 'initialize');
    if (!isRecord(result) || typeof result.protocolVersion !== 'string' || !isRecord(result.capabilities) || !isRecord(result.serverInfo)) {
      throw new ServerFailure('protocol', 'the server answered initialize without protocolVersion, capabilities and serverInfo');
    }
    if (!(SUPPORTED_PROTOCOL_VERSIONS as readonly string[]).includes(result.protocolVersion)) {
      throw new ServerFailure('protocol', `the server speaks MCP ${JSON.stringify(result.protocolVersion.slice(0, 40))}; supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}`);
    }
    this.session.notify('notifications/initialized');
    return {
      protocolVersion: result.protocolVersion,
      serverInfo: result.serverInfo,
      capabilities: result.capabilities,
      ...(typeof result.instructions === 'string' ? {instructions: result.instructions} : {}),
    };
  }

  /**
   * A paginated list (`tools/list`, `resources/list`, `resources/templates/list`,
   * `prompts/list`; MCP 2025-11-25 server/utilities/pagination): follows `nextCursor` for at
   * most `LIST_LIMITS.pages` pages and `LIST_LIMITS.items` items; each item must be an
   * object with a string `name` (or `uri`/`uriTemplate` for resources).
   * @throws ServerFailure `protocol` for a malformed page, too many pages or items.
   */
  async list(method: string, key: string, signal: AbortSignal): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    let cursor: string | undefined;
    for (let page = 0; ; page++) {
      if (page >= LIST_LIMITS.pages) throw new ServerFailure('protocol', `the server's ${method} has more than ${LIST_LIMITS.pages} pages`);
      const result = await this.guard(this.session.request(method, cursor === undefined ? {} : {cursor}), signal, method);
      if (!isRecord(result) || !Array.isArray(result[key])) throw new ServerFailure('protocol', `the server answered ${method} without a "${key}" array`);
      for (const item of result[key] as unknown[]) {
        if (!isRecord(item)) throw new ServerFailure('protocol', `the server's ${method} holds an entry that is not an object`);
        items.push(item);
        if (items.length > LIST_LIMITS.items) throw new ServerFailure('protocol', `the server's ${method} lists more than ${LIST_LIMITS.items} entries`);
      }
      if (typeof result.nextCursor !== 'string' || result.nextCursor === '') return items;
      cursor = result.nextCursor;
    }
  }

  /**
   * Waits for `request`, turning a failed session into a {@link ServerFailure} and a JSON-RPC
   * error answer to a handshake/list request into `protocol`; rejects with `signal`'s reason when
   * it aborts first. The server's exit ends the session (`exited`).
   */
  async guard<T>(request: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
    signal.throwIfAborted();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, {once: true});
    });
    try {
      return await Promise.race([request, aborted]);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (err instanceof SessionError) {
        const f = err.failure;
        throw new ServerFailure(f.kind === 'closed' ? 'exited' : f.kind, f.kind === 'closed' ? `the server ended before it answered ${what}` : f.message);
      }
      // The server's words are quoted as data (one line, bounded, labelled), never spliced into ours.
      if (err instanceof JsonRpcError) {
        throw new ServerFailure(what === 'tools/call' ? 'refused' : 'protocol',
          `the server answered ${what} with JSON-RPC error ${err.code}; ${quoteServerText(err.message)}`);
      }
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort!);
      aborted.catch(() => undefined);
    }
  }

  /**
   * How the server process ended, once its session closed: the engine's exit status and the
   * cgroup evidence (OOM, refused forks) read before removal, attributed as for a container
   * tool (exit-reason.ts). Waits at most `waitMs` for the exit.
   */
  async exitAttribution(waitMs: number): Promise<ExitAttribution> {
    const status = await Promise.race([this.sandbox.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), waitMs).unref())]);
    const cgroup = this.#sampler.sample();
    this.#sampler.stop();
    let engineOomKilled = false;
    let exitCode = status;
    try {
      const info = await this.sandbox.container.inspect({abortSignal: AbortSignal.timeout(5_000)});
      engineOomKilled = info.State.OOMKilled === true;
      if (!info.State.Running) exitCode = info.State.ExitCode;
    } catch (err) {
      log.debug({err, containerId: this.id}, 'inspect after server exit failed');
    }
    return attributeExit({status: exitCode, engineOomKilled, cgroup, stderrTail: this.session.stderrText().slice(-4096)});
  }

  /** Whether a fork was refused so far (pids cgroup, read now: the pids files only); false where the cgroup cannot be read. */
  pidsLimited(): boolean {
    return (this.#sampler.samplePids()?.refused ?? 0) > 0;
  }

  /**
   * Stops the server without removing its container: SIGKILL through the engine (which ends
   * the container's init, and with it every process of its pid namespace), then waits for the
   * engine to report the container not running. Bounded by `timeoutMs`. Never throws.
   * @returns true when the container is confirmed stopped (or already stopped, or gone); false
   *   when that could not be confirmed in time (the caller must then remove it before relying on it).
   * Does NOT: remove the container, release its uid lease or keeper watch ({@link remove} does).
   */
  async kill(timeoutMs: number): Promise<boolean> {
    const abortSignal = AbortSignal.timeout(timeoutMs);
    try {
      await this.sandbox.container.kill({signal: 'SIGKILL', abortSignal} as object);
    } catch (err) {
      // 409 "is not running" and 404: stopped already. Anything else (timeout, engine error): not confirmed.
      const status = (err as {statusCode?: number}).statusCode;
      if (status !== 409 && status !== 404) {
        log.debug({err, containerId: this.id}, 'kill of a hosted server container failed');
        return false;
      }
    }
    try {
      const info = await this.sandbox.container.inspect({abortSignal});
      return info.State.Running !== true;
    } catch (err) {
      return (err as {statusCode?: number}).statusCode === 404;
    }
  }

  /**
   * Kills and removes the container (bounded by `timeoutMs`), through the container tier's
   * remover: uid lease, keeper watch and provenance record go with it. Idempotent.
   */
  remove(timeoutMs: number): Promise<void> {
    this.#removed ??= (async () => {
      this.#sampler.stop();
      const teardown = newTeardown();
      teardown.container = this.sandbox.container;
      teardown.sandbox = this.sandbox;
      teardown.timeoutMs = timeoutMs;
      try {
        await this.#deps.remover.finish(teardown);
      } finally {
        // The relay and session go with the container, whatever ended it (deadline, kill, pool close, shutdown).
        await this.releaseEgress();
      }
    })();
    return this.#removed;
  }

  /** The server's stderr, bounded, for the log (never for the client). */
  logStderr(fields: Record<string, unknown>): void {
    const stderr = this.session.stderrText();
    if (stderr !== '') log.debug({...fields, serverStderr: stderr.slice(-8192)}, 'hosted server stderr');
  }
}

/** A ToolcellError for a server that could not be started at all (not its own fault). */
export function startFailure(err: unknown): ToolcellError {
  return err instanceof ToolcellError ? err : new ToolcellError('BACKEND_UNAVAILABLE', 'The hosted server\'s sandbox could not be started.', {reason: 'server-start-failed'}, {cause: err});
}
