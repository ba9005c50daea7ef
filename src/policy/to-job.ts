// Tool + arguments + profile → the job a backend runs (argv, limits, mounts).
import type {ContainerJob, IsolateJob, Job, Mount, ServerJob} from '../backends/backend.ts';
import {ToolcellError} from '../errors.ts';
import {argumentText, authorizeArgv, buildArgv} from './command.ts';
import {verifyListing} from './pins.ts';
import type {ToolDefinition} from './tool-definition.ts';

/** What the runtime resolved for a container tool when it loaded: allowlisted commands and mounts. */
export interface ContainerGrants {
  /** Name or absolute path → absolute path inside the tool's image. */
  commands: ReadonlyMap<string, string>;
  mounts: readonly Mount[];
}

/**
 * Builds the job for one call of `tool` with already-validated `args`: the profile's limits
 * and grants, and nothing else, become the job's settings. Pure.
 *
 * @param principal the caller's principal id: a hosted server with `lifetime: "principal"` keeps
 *   one sandbox per principal (the job's `affinity`); ignored otherwise.
 * @throws ToolcellError `DENIED` when a container command's argv[0] is not allowlisted,
 *   `INVALID_ARGUMENTS` when an argument cannot be placed on a command line; for a hosted
 *   server's tool, `DENIED` (`rule: "pin"`) when a pin broke at load (profile or image changed).
 */
export function toJob(tool: ToolDefinition, args: Record<string, unknown>, id: string, grants?: ContainerGrants, principal?: string): Job {
  const profile = tool.profile;
  if (tool.server !== undefined) return toServerJob(tool, args, id, grants, principal);
  if (profile.backend === 'isolate') {
    const job: IsolateJob = {
      kind: 'isolate',
      id,
      source: tool.isolate!.source,
      filename: tool.isolate!.filename,
      args,
      limits: {
        timeoutMs: profile.limits.timeoutMs,
        memoryMb: profile.limits.memoryMb,
        outputBytes: profile.limits.outputBytes,
        cpuTimeMs: profile.limits.cpuTimeMs ?? profile.limits.timeoutMs,
      },
    };
    return job;
  }
  const entry = tool.container!;
  const argv = authorizeArgv(buildArgv(entry.command, args), grants?.commands ?? new Map(), profile.name);
  const stdin = entry.stdin === undefined ? undefined
    : entry.stdin === 'json' ? JSON.stringify(args)
      : argumentText(args[entry.stdin.slice(2, -2)] ?? '');
  const job: ContainerJob = {
    kind: 'container',
    id,
    image: entry.image,
    argv,
    stdin,
    limits: {...profile.limits},
    network: profile.network,
    readOnlyRoot: profile.filesystem.readOnlyRoot,
    tmpfs: {...profile.filesystem.tmpfs},
    mounts: [...(grants?.mounts ?? [])],
    runtime: profile.runtime,
    workdir: entry.workdir,
    env: entry.env && {...entry.env},
    profile: profile.name,
    ...(profile.network === 'none' ? {} : {egress: {callId: id, principal: principal ?? 'unknown', tool: tool.name, profile: profile.name, grant: profile.network.egress}}),
  };
  return job;
}

/**
 * The job of one call of a hosted server's tool: a container with the profile's limits and
 * grants running the server's command from its pinned image ID. argv[0] goes through the
 * profile's `commands` allowlist exactly as a container tool's (resolved to an absolute path in
 * the image at load); the arguments travel in `tools/call`, never on the command line. Pure.
 * @throws ToolcellError `DENIED` (`rule: "pin"` when a pin broke at load; `rule: "commands"`
 *   when argv[0] is not allowlisted).
 */
/** How long a `lifetime: "principal"` server sandbox is kept without a call when the package gives no `idleMs`, in ms. */
export const DEFAULT_SERVER_IDLE_MS = 300_000;

function toServerJob(tool: ToolDefinition, args: Record<string, unknown>, id: string, grants?: ContainerGrants, principal?: string): ServerJob {
  const server = tool.server!;
  const profile = tool.profile;
  if (profile.backend !== 'container') throw new ToolcellError('INTERNAL', 'A hosted server needs a container profile.');
  if (server.drift !== undefined) {
    throw new ToolcellError('DENIED', `The tool "${tool.name}" is refused: ${server.drift.message}.`, {rule: 'pin', changes: [...server.drift.changes]});
  }
  const argv = authorizeArgv([...server.command, ...server.args], grants?.commands ?? new Map(), profile.name);
  const limits = {...profile.limits};
  const sandbox: ContainerJob = {
    kind: 'container',
    id,
    image: server.imageId,
    argv,
    limits,
    network: profile.network,
    readOnlyRoot: profile.filesystem.readOnlyRoot,
    tmpfs: {...profile.filesystem.tmpfs},
    mounts: [...(grants?.mounts ?? [])],
    runtime: profile.runtime,
    profile: profile.name,
    // Egress: this call's proxy session (lifetime "principal": bound to the kept server at each call).
    ...(profile.network === 'none' ? {} : {egress: {callId: id, principal: principal ?? 'unknown', tool: tool.name, profile: profile.name, grant: profile.network.egress}}),
  };
  return {
    kind: 'server',
    id,
    sandbox,
    tool: server.toolName,
    args,
    verifyListing: (listed) => verifyListing(server.toolName, tool.name, server.pins, listed),
    limits,
    packageName: tool.packageName,
    ...(server.lifetime === 'principal' && principal !== undefined ? {affinity: {key: principal, idleMs: server.idleMs ?? DEFAULT_SERVER_IDLE_MS}} : {}),
  };
}
