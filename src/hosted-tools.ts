// Prepares the tools of hosted MCP servers for serving: image checked against its pin, argv[0] resolved, the server backend made.
import type {EgressProxy} from './egress/proxy.ts';
import type Docker from 'dockerode';
import {ServerBackend} from './backends/server/server-backend.ts';
import {dockerMessage} from './backends/container/docker-errors.ts';
import {log} from './log.ts';
import {toJob, type ContainerGrants} from './policy/to-job.ts';
import type {ServerJob} from './backends/backend.ts';
import type {ToolDefinition} from './policy/tool-definition.ts';

/** What {@link prepareHostedTools} decided. */
export interface HostedTools {
  /** The backend of hosted servers' calls; undefined when no hosted tool can be served. */
  backend: ServerBackend | undefined;
  /** Tools to serve (possibly with `server.drift` set: served, refused at every call). */
  served: ToolDefinition[];
  grants: Map<string, ContainerGrants>;
  unavailable: Array<{tool: string; reason: string; skipped?: true}>;
}

/**
 * For each hosted server's tool: the pinned image ID must be present on the engine (else the
 * tool is left out, with the reason); the image reference written at `add` must still name that
 * ID, else the tool stays served but every call is `DENIED` (`rule: "pin"`: the image changed
 * since it was approved; the calls would still run the pinned ID, but the operator asked for a
 * tag that now means something else); the server's argv[0] is resolved to an absolute path in
 * the pinned image through the profile's `commands` (as for container tools, resolve-commands.ts),
 * and a profile problem (mounts; secrets without a `--secrets` store or a usable egress CA) leaves
 * the tool out. A profile that grants secrets works for servers with `lifetime: "call"` (each call's
 * server gets its placeholders, frontend/call-tool.ts); with `lifetime: "principal"` the tool is
 * left out with the reason.
 * With `poolSize` > 0 the backend keeps that many pre-initialized members per server.
 * Never throws: each problem is per tool.
 * Does NOT check the image's contents: the image ID (a content digest) is the pin.
 */
export async function prepareHostedTools(tools: readonly ToolDefinition[], options: {
  docker: Docker;
  resolveCommands: (image: string, names: readonly string[]) => Promise<Map<string, string>>;
  mountsByProfile: ReadonlyMap<string, ContainerGrants['mounts']>;
  profileProblems: ReadonlyMap<string, string>;
  /** Pre-initialized members kept ready per server settings (server-pool.ts); 0: off. */
  poolSize?: number;
  /** The egress proxy for servers whose profile grants egress (each call its own session); absent: those calls are refused. */
  egress?: EgressProxy;
  /** Profiles whose problem (in `profileProblems`) is a choice of how serve was started (no `--secrets`): their tools are left out `skipped`. */
  skippedProfiles?: ReadonlySet<string>;
}): Promise<HostedTools> {
  const served: ToolDefinition[] = [];
  const grants = new Map<string, ContainerGrants>();
  const unavailable: Array<{tool: string; reason: string; skipped?: true}> = [];
  const tagIds = new Map<string, Promise<string | undefined>>();
  const idOf = (ref: string) => {
    let p = tagIds.get(ref);
    if (!p) {
      p = options.docker.getImage(ref).inspect().then((i) => i.Id, () => undefined);
      tagIds.set(ref, p);
    }
    return p;
  };
  for (let tool of tools) {
    const server = tool.server!;
    const profile = tool.profile;
    if (profile.backend !== 'container') continue;
    const leaveOut = (reason: string, skipped?: true) => {
      unavailable.push({tool: tool.name, reason, ...(skipped ? {skipped} : {})}); // the runtime logs it (once)
    };
    const problem = options.profileProblems.get(profile.name);
    if (problem !== undefined) {
      // Left out on purpose by how serve was started (no --secrets), as container tools: not a fault.
      leaveOut(problem, options.skippedProfiles?.has(profile.name) ? true : undefined);
      continue;
    }
    // Secrets: each call's server gets that call's placeholders in its environment (call-tool.ts, as a
    // container tool; a server with egress is never pre-initialized, so placeholders are per container).
    // A kept server ("lifetime": "principal") outlives its call while its environment is fixed at
    // start: it would keep one call's placeholder into the next calls, so it is left out instead.
    // (No --secrets store, or an unusable egress CA: profileProblems above, as for container tools.)
    if ((profile.secrets?.length ?? 0) > 0 && server.lifetime === 'principal') {
      leaveOut(`its profile "${profile.name}" grants secrets, and the server is kept per principal ("lifetime": "principal"); secrets are given per call, so such a server cannot receive them (use "lifetime": "call")`);
      continue;
    }
    if ((await idOf(server.imageId)) !== server.imageId) {
      leaveOut(`its pinned image ${server.imageId.slice(0, 19)}… is not present on the Docker engine (run toolcell update ${tool.packageName})`);
      continue;
    }
    const tagged = await idOf(server.image);
    if (tagged !== undefined && tagged !== server.imageId && server.drift === undefined) {
      const change = `image "${server.image}" now names ${tagged.slice(0, 19)}…, not the pinned ${server.imageId.slice(0, 19)}…`;
      log.warn({tool: tool.name, image: server.image, pinned: server.imageId, now: tagged}, 'hosted server image changed since add; its tools are refused (rule pin) until toolcell update');
      tool = Object.freeze({...tool, server: Object.freeze({...server, drift: {message: `its image changed since the server was approved (pin)`, changes: [change]}})});
    }
    try {
      const commands = await options.resolveCommands(server.imageId, profile.commands);
      grants.set(tool.name, {commands, mounts: options.mountsByProfile.get(profile.name) ?? []});
      served.push(tool);
    } catch (err) {
      leaveOut(`the commands of profile "${profile.name}" cannot be resolved in its image: ${dockerMessage(err).slice(0, 200)}`);
    }
  }
  const poolSize = options.poolSize ?? 0;
  const backend = served.length > 0 ? new ServerBackend({docker: options.docker, pool: poolSize > 0 ? {size: poolSize} : false, ...(options.egress ? {egress: options.egress} : {})}) : undefined;
  if (backend && poolSize > 0) {
    // One template per server (its tools share the sandbox settings); a drifted one is never warmed.
    const warmed = new Set<string>();
    for (const tool of served) {
      // lifetime "principal" keeps one sandbox per principal instead of pooling.
      if (warmed.has(tool.packageName) || tool.server?.drift !== undefined || tool.server?.lifetime === 'principal') continue;
      warmed.add(tool.packageName);
      try {
        backend.prewarm(toJob(tool, {}, `prewarm-${tool.packageName}`, grants.get(tool.name)) as ServerJob);
      } catch (err) {
        log.debug({err, tool: tool.name}, 'no prewarm template for this hosted server');
      }
    }
  }
  return {backend, served, grants, unavailable};
}
