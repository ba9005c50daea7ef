// Tool + arguments + profile → the job a backend runs (argv, limits, mounts).
import type {ContainerJob, IsolateJob, Job, Mount} from '../backends/backend.ts';
import {argumentText, authorizeArgv, buildArgv} from './command.ts';
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
 * @throws ToolcellError `DENIED` when a container command's argv[0] is not allowlisted,
 *   `INVALID_ARGUMENTS` when an argument cannot be placed on a command line.
 */
export function toJob(tool: ToolDefinition, args: Record<string, unknown>, id: string, grants?: ContainerGrants): Job {
  const profile = tool.profile;
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
  };
  return job;
}
