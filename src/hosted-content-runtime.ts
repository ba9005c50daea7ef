// Prepares hosted servers' prompts and resources for serving: the same image and command checks as their tools (hosted-tools.ts), per package.
import type Docker from 'dockerode';
import {dockerMessage} from './backends/container/docker-errors.ts';
import {contentGrantKey} from './frontend/hosted-request.ts';
import {log} from './log.ts';
import {HostedCatalog, type HostedContent} from './policy/hosted-content.ts';
import type {ContainerGrants} from './policy/to-job.ts';

/** What {@link prepareHostedContent} decided. */
export interface PreparedContent {
  /** The packages whose prompts and resources are served (possibly with `server.drift`: served, refused at every request). */
  catalog: HostedCatalog;
  /** Resolved grants by `contentGrantKey(package)`. */
  grants: Map<string, ContainerGrants>;
  /** Packages left out, with the reason (as `UnavailableTool` entries named `<package>/ (prompts, resources)`). */
  unavailable: Array<{tool: string; reason: string}>;
}

/**
 * For each hosted package with prompts or resources, as prepareHostedTools does for its tools:
 * a profile problem (mounts) or a pinned image ID absent from the engine leaves the package's
 * prompts and resources out, with the reason; an image reference that now names another image
 * keeps them listed but refused (`DENIED`, `rule: "pin"`); argv[0] is resolved in the pinned
 * image through the profile's `commands`. Never throws. Does NOT check the image's contents:
 * the image ID is the pin.
 */
export async function prepareHostedContent(catalog: HostedCatalog, options: {
  docker: Docker;
  resolveCommands: (image: string, names: readonly string[]) => Promise<Map<string, string>>;
  mountsByProfile: ReadonlyMap<string, ContainerGrants['mounts']>;
  profileProblems: ReadonlyMap<string, string>;
}): Promise<PreparedContent> {
  const grants = new Map<string, ContainerGrants>();
  const unavailable: Array<{tool: string; reason: string}> = [];
  const kept = new Map<string, HostedContent>();
  const idOf = (ref: string) => options.docker.getImage(ref).inspect().then((i) => i.Id, () => undefined);
  for (const content of catalog.packages) {
    const label = `${content.packageName} (prompts, resources)`;
    const leaveOut = (reason: string) => {
      unavailable.push({tool: label, reason}); // the runtime logs it (once)
    };
    const problem = options.profileProblems.get(content.profile.name);
    if (problem !== undefined) {
      leaveOut(problem);
      continue;
    }
    const server = content.server;
    if ((await idOf(server.imageId)) !== server.imageId) {
      leaveOut(`its pinned image ${server.imageId.slice(0, 19)}… is not present on the Docker engine (run toolcell update ${content.packageName})`);
      continue;
    }
    let prepared = content;
    const tagged = await idOf(server.image);
    if (tagged !== undefined && tagged !== server.imageId && server.drift === undefined) {
      log.warn({package: content.packageName, image: server.image, pinned: server.imageId, now: tagged}, 'hosted server image changed since add; its prompts and resources are refused (rule pin) until toolcell update');
      prepared = Object.freeze({...content, server: Object.freeze({...server, drift: {message: 'its image changed since the server was approved (pin)',
        changes: [`image "${server.image}" now names ${tagged.slice(0, 19)}…, not the pinned ${server.imageId.slice(0, 19)}…`]}})});
    }
    try {
      const commands = await options.resolveCommands(server.imageId, content.profile.commands);
      grants.set(contentGrantKey(content), {commands, mounts: options.mountsByProfile.get(content.profile.name) ?? []});
      kept.set(content.packageName, prepared);
    } catch (err) {
      leaveOut(`the commands of profile "${content.profile.name}" cannot be resolved in its image: ${dockerMessage(err).slice(0, 200)}`);
    }
  }
  const result = new HostedCatalog();
  for (const c of catalog.packages) if (kept.has(c.packageName)) result.add(kept.get(c.packageName)!);
  return {catalog: result, grants, unavailable};
}
