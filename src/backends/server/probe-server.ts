// probeServer: starts a hosted MCP server once in its sandbox, lists what it offers, and removes it (for `toolcell add`/`update`).
import Docker from 'dockerode';
import {EgressProxy} from '../../egress/proxy.ts';
import type {EgressGrant} from '../../egress/policy.ts';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import type {ContainerJob, ContainerLimits, Mount} from '../backend.ts';
import {START_TIMEOUT_MS} from '../container/container-backend.ts';
import {dockerMessage} from '../container/docker-errors.ts';
import {ServerBackend} from './server-backend.ts';
import {ServerFailure, ServerSandbox, startFailure} from './server-sandbox.ts';

/** The profile settings a probe runs under: a container profile (policy/profile-schema.ts `ContainerProfile` fits). */
export interface ProbeProfile {
  name: string;
  limits: ContainerLimits;
  /** `none`, or an egress grant: the probe's server then reaches exactly what a call's would, through the proxy. */
  network: 'none' | {egress: EgressGrant};
  filesystem: {readOnlyRoot: boolean; tmpfs: Record<string, string>};
  runtime: 'runc' | 'runsc';
}

/** Options of {@link probeServer}. */
export interface ProbeOptions {
  /** Local image reference or image ID (`sha256:…`) of the server. */
  image: string;
  /** The server's argv inside the image (argv[0] and its arguments); never a shell string. */
  command: readonly string[];
  /** Arguments appended to `command` (`toolcell add … -- ARGS`). */
  args?: readonly string[];
  profile: ProbeProfile;
  /** Mounts already resolved and checked for the profile (policy/mounts.ts); default none. */
  mounts?: readonly Mount[];
  /** Environment of the server process; default none. */
  env?: Readonly<Record<string, string>>;
  docker?: Docker;
  signal?: AbortSignal;
  /** Budget of the handshake and every listing, in ms; default 30 000 (a first start may be slow). */
  handshakeTimeoutMs?: number;
  /** State directory for the reaper key and records (tests). */
  stateDir?: string;
  /**
   * Under an egress grant: the proxy the probe's server goes through (tests: a resolver);
   * default a proxy of the probe's own whose decisions are logged (audit events as log lines,
   * component `probe-egress`). Closed sessions only: the caller keeps it open.
   */
  egress?: EgressProxy;
}

/** What a server offers, as it answered (untrusted JSON: shapes checked, contents not judged). */
export interface ProbeResult {
  protocolVersion: string;
  serverInfo: Record<string, unknown>;
  capabilities: Record<string, unknown>;
  instructions?: string;
  tools: Record<string, unknown>[];
  resources?: Record<string, unknown>[];
  resourceTemplates?: Record<string, unknown>[];
  prompts?: Record<string, unknown>[];
  /** The image ID the server ran from (`sha256:…`): what a package pins. */
  imageId: string;
}

const probeLog = rootLog.child({component: 'probe-egress'});

/** Default handshake budget of a probe, in ms. */
export const PROBE_HANDSHAKE_TIMEOUT_MS = 30_000;

/**
 * Starts the server once in its sandbox (a fresh container from the image's ID, with the
 * container tier's floor and `profile`'s limits: no network unless granted (then only through
 * the egress proxy, as a call: NetworkMode none, relay, proxy variables; runc only), read-only root,
 * leased uid, capabilities dropped), performs `initialize`, `notifications/initialized` and
 * `tools/list` (and, when its capabilities declare them, `resources/list`,
 * `resources/templates/list` and `prompts/list`; a JSON-RPC error on one of those leaves it
 * out), then removes the container. Server→client requests are refused
 * (mcp-stdio-session.ts); the server's stderr goes to the log only.
 * @returns what the server offers and the image ID it ran from.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` (engine unreachable, image missing, start
 *   refused or over START_TIMEOUT_MS); `TOOL_FAILED` when the server does not speak MCP (garbage
 *   on stdout, an unsupported protocol version, no answer within `handshakeTimeoutMs`, exited,
 *   over `outputBytes`), the message naming why; `CANCELLED` when `signal` aborts.
 * Does NOT judge descriptions (screening is policy's) or pin anything (the caller does).
 */
export async function probeServer(options: ProbeOptions): Promise<ProbeResult> {
  const docker = options.docker ?? new Docker();
  const handshakeMs = options.handshakeTimeoutMs ?? PROBE_HANDSHAKE_TIMEOUT_MS;
  let imageId: string;
  try {
    imageId = (await docker.getImage(options.image).inspect({abortSignal: AbortSignal.timeout(10_000)} as object)).Id;
  } catch (err) {
    const missing = (err as {statusCode?: number}).statusCode === 404;
    throw new ToolcellError('BACKEND_UNAVAILABLE', missing ? `The image "${options.image}" is not present on the Docker engine.` : `The Docker engine did not answer about image "${options.image}": ${dockerMessage(err).slice(0, 200)}`,
      {reason: missing ? 'image-missing' : 'engine-unreachable', image: options.image}, {cause: err});
  }
  const p = options.profile;
  const spec: ContainerJob = {
    kind: 'container',
    id: `probe-${Date.now()}`,
    image: imageId,
    argv: [...options.command, ...(options.args ?? [])],
    limits: {...p.limits},
    network: p.network,
    readOnlyRoot: p.filesystem.readOnlyRoot,
    tmpfs: {...p.filesystem.tmpfs},
    mounts: [...(options.mounts ?? [])],
    runtime: p.runtime,
    ...(options.env ? {env: {...options.env}} : {}),
    profile: p.name,
    // Egress: the probe is its own call (principal "toolcell-add"), its decisions audited to the log.
    ...(p.network === 'none' ? {} : {egress: {callId: `probe-${Date.now()}`, principal: 'toolcell-add', tool: options.image.slice(0, 100), profile: p.name, grant: p.network.egress}}),
  };
  const ownProxy = p.network !== 'none' && options.egress === undefined
    ? new EgressProxy({audit: (event) => probeLog.info({egress: event}, event.type)})
    : undefined;
  const egress = options.egress ?? ownProxy;
  const backend = new ServerBackend({docker, ...(options.stateDir ? {stateDir: options.stateDir} : {}), ...(egress ? {egress} : {})});
  const stop = new AbortController();
  const onAbort = () => stop.abort(new ToolcellError('CANCELLED', 'The probe was cancelled.'));
  options.signal?.addEventListener('abort', onAbort, {once: true});
  if (options.signal?.aborted) onAbort();
  let server: ServerSandbox | undefined;
  let timer = setTimeout(() => stop.abort(new ToolcellError('BACKEND_UNAVAILABLE', `The hosted server's sandbox could not be started within ${START_TIMEOUT_MS / 1000} s.`, {reason: 'start-timeout'})), START_TIMEOUT_MS);
  try {
    try {
      server = await ServerSandbox.start(backend.deps, spec, {signal: stop.signal, deadlineAt: Date.now() + START_TIMEOUT_MS + 4 * handshakeMs});
    } catch (err) {
      if (stop.signal.aborted && stop.signal.reason instanceof ToolcellError) throw stop.signal.reason;
      throw startFailure(err);
    }
    clearTimeout(timer);
    timer = setTimeout(() => stop.abort(new ServerFailure('handshake-timeout', `the server did not complete the MCP handshake and listings within ${handshakeMs} ms`)), handshakeMs);
    const hello = await server.initialize(stop.signal);
    const tools = await server.list('tools/list', 'tools', stop.signal);
    const optional = async (method: string, key: string): Promise<Record<string, unknown>[] | undefined> => {
      try {
        return await server!.list(method, key, stop.signal);
      } catch (err) {
        // A JSON-RPC error answer (ServerSandbox.guard: "the server answered <method> with JSON-RPC error …"), e.g. -32601 from a
        // server that declares `resources` but implements no listing: left out, as documented (the regex never matched guard's text before).
        if (err instanceof ServerFailure && err.kind === 'protocol' && err.message.startsWith(`the server answered ${method} with JSON-RPC error`)) return undefined;
        throw err;
      }
    };
    const caps = hello.capabilities;
    const resources = caps.resources !== undefined ? await optional('resources/list', 'resources') : undefined;
    const resourceTemplates = caps.resources !== undefined ? await optional('resources/templates/list', 'resourceTemplates') : undefined;
    const prompts = caps.prompts !== undefined ? await optional('prompts/list', 'prompts') : undefined;
    return {
      ...hello,
      tools,
      ...(resources ? {resources} : {}),
      ...(resourceTemplates ? {resourceTemplates} : {}),
      ...(prompts ? {prompts} : {}),
      imageId,
    };
  } catch (err) {
    const failure = err instanceof ServerFailure ? err : stop.signal.aborted && stop.signal.reason instanceof ServerFailure ? stop.signal.reason : undefined;
    if (failure) {
      throw new ToolcellError('TOOL_FAILED', `The server "${options.image}" does not speak MCP over stdio as expected: ${failure.message}.`, {reason: failure.kind});
    }
    if (stop.signal.aborted && stop.signal.reason instanceof ToolcellError) throw stop.signal.reason;
    throw err;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    server?.logStderr({probe: options.image});
    await server?.remove(5_000);
    await backend.close();
    await ownProxy?.close();
  }
}
