// `toolcell update NAME`: re-resolves a hosted server's source, rebuilds when it changed, probes it again, shows what changed in its definitions and grants, and writes new pins only after the operator confirms again.
import {readFileSync} from 'node:fs';
import {join, resolve} from 'node:path';
import * as z from 'zod';
import {
  APPROVED_PROFILE_FILE, consentMode, probeAndScreen, processConsole, reportFindings, serverCommand, serverProfile, showServer, writeHostedPackage,
  type Console,
} from './add-command.ts';
import {ConfigError, ToolcellError} from './errors.ts';
import {grantChanges, hostedManifest, pinnedDefinition} from './hosted/hosted-package.ts';
import {resolveSource, type ResolvedSource} from './hosted/resolve-source.ts';
import {buildServerImage, imageTag, npmCommand} from './hosted/server-image.ts';
import {parseSource} from './hosted/source.ts';
import {userToolsDir} from './hosted/tools-dir.ts';
import {HostedPackageManifest, PACKAGE_NAME} from './policy/manifest-schema.ts';
import {diffDefinitions, profileSha256, type ServerToolDefinition} from './policy/pins.ts';
import {Profile} from './policy/profile-schema.ts';
import Docker from 'dockerode';

/** Flags of `toolcell update`. */
export interface UpdateFlags {
  tools?: string;
  profiles?: string[];
  yes?: boolean;
  allowFlagged?: boolean;
  allowInstallScripts?: boolean;
}

/**
 * What changed between the approved pins and a new listing: one line per added or removed tool,
 * and per changed tool the field lines of policy/pins.ts `diffDefinitions` (visible excerpts).
 */
export function definitionChanges(approved: readonly {name: string; definition: ServerToolDefinition}[], listed: readonly Record<string, unknown>[]): string[] {
  const before = new Map(approved.map((t) => [t.name, t.definition]));
  const after = new Map(listed.map((t) => [String(t.name), pinnedDefinition(t)]));
  const out: string[] = [];
  for (const [name, def] of after) {
    const old = before.get(name);
    if (old === undefined) out.push(`+ tool ${name} (new)`);
    else for (const line of diffDefinitions(old, def)) out.push(`~ tool ${name}: ${line}`);
  }
  for (const name of before.keys()) if (!after.has(name)) out.push(`- tool ${name} (gone)`);
  return out;
}

/** The command for the new version: the stored one, except for npm, where the bin path may move (the one bin, or the one at the stored path). */
function commandFor(resolved: ResolvedSource, stored: readonly string[]): {command: string[]; bin?: string} {
  if (resolved.type !== 'npm') return {command: [...stored]};
  const bins = Object.keys(resolved.bin);
  const same = bins.find((b) => npmCommand(resolved, b).command.join('\0') === stored.join('\0'));
  if (same !== undefined) return npmCommand(resolved, same);
  if (bins.length === 1) return npmCommand(resolved);
  throw new ConfigError('update', `npm:${resolved.name}@${resolved.version} has ${bins.length} bins (${bins.join(', ')}) and none at the approved path; remove the package and add it again with --command`);
}

async function imageIdOf(docker: Docker, image: string): Promise<string | undefined> {
  try {
    return (await docker.getImage(image).inspect()).Id;
  } catch {
    return undefined;
  }
}

/**
 * `toolcell update NAME [--tools DIR] [--profiles DIR]... [--yes] [--allow-flagged] [--allow-install-scripts]`.
 *
 * Re-resolves the source as written at `add` (the same range or tag), rebuilds the image when the
 * version, integrity or image changed, starts the server once in its sandbox under the profile as
 * it is now, screens it, and shows: the version and image change, each tool added, gone or changed
 * (field by field), and the grant lines that changed since approval. Then asks again (or --yes)
 * before writing the new pins; with no change at all it says so and writes nothing.
 * @returns exit code: 0 updated or already current; 1 refused (no consent, flagged, not MCP, bad
 *   names, build failed); 2 unknown package or not a hosted server, configuration error.
 */
export async function updateCommand(name: string, flags: UpdateFlags, con: Console = processConsole()): Promise<number> {
  const say = (line: string) => con.err(`toolcell: ${line}`);
  const mode = consentMode(flags.yes, con.interactive);
  if (mode === 'refuse') {
    say('refused: updating a server needs the operator\'s confirmation again, and there is no terminal to ask on. Run it in a terminal, or pass --yes in scripts. Nothing was written.');
    return 1;
  }
  if (!PACKAGE_NAME.test(name)) {
    say(`"${name.slice(0, 80)}" is not a package name.`);
    return 2;
  }
  const toolsDir = resolve(flags.tools ?? userToolsDir());
  const packageDir = join(toolsDir, name);
  let current: HostedPackageManifest;
  try {
    const raw: unknown = JSON.parse(readFileSync(join(packageDir, 'toolcell.json'), 'utf8'));
    const parsed = HostedPackageManifest.safeParse(raw);
    if (!parsed.success) {
      say(`${name} in ${toolsDir} is not a hosted server package: ${z.prettifyError(parsed.error).split('\n')[0]}`);
      return 2;
    }
    current = parsed.data;
  } catch {
    say(`no package "${name}" in ${toolsDir}; add it with toolcell add.`);
    return 2;
  }
  let approvedProfile: Profile | undefined;
  try {
    approvedProfile = Profile.parse(JSON.parse(readFileSync(join(packageDir, APPROVED_PROFILE_FILE), 'utf8')));
  } catch {
    approvedProfile = undefined;
  }
  const docker = new Docker();
  try {
    const source = parseSource(current.server.source);
    const resolved = await resolveSource(source, {onProgress: say, docker});
    say(`resolved ${current.server.source} → ${resolved.version} (was ${current.version})`);
    const {command, bin} = commandFor(resolved, current.server.command);
    const profile = await serverProfile(flags.profiles, current.profile, command[0]);
    const storedId = await imageIdOf(docker, current.server.image);
    const unchanged = resolved.version === current.version && resolved.integrity === (current.server.integrity ?? resolved.integrity)
      && storedId === current.server.imageId && imageTag(name, resolved.version) === current.server.image;
    const built = unchanged ? {image: current.server.image, imageId: current.server.imageId}
      : await buildServerImage(resolved, {name, source: current.server.source, ...(bin ? {bin} : {}), allowInstallScripts: flags.allowInstallScripts === true,
        docker, onProgress: (line) => con.err(`  build: ${line}`)});
    say(`starting the server once in its sandbox (profile ${profile.name}, without network) to list its tools…`);
    const args = current.server.args ?? [];
    const probed = await probeAndScreen(name, built.imageId, command, args, profile);
    if (!reportFindings(con, probed.findings, flags.allowFlagged)) return 1;
    if (probed.nameProblems.length > 0) {
      say('refused: these tools cannot be served under <package>__<tool> names:');
      for (const p of probed.nameProblems) con.err(`  ${p}`);
      return 1;
    }
    const definitions = definitionChanges(current.tools, probed.probe.tools);
    const grants = approvedProfile === undefined && current.server.profileSha256 === profileSha256(profile as unknown as Record<string, unknown>)
      ? [] : grantChanges(approvedProfile, profile);
    const image = built.imageId === current.server.imageId ? [] : [`~ version ${current.version} → ${resolved.version}`, `~ image ${current.server.imageId} → ${built.imageId}`];
    const commandChange = command.join('\0') === current.server.command.join('\0') ? [] : [`~ command ${JSON.stringify(current.server.command)} → ${JSON.stringify(command)}`];
    const profilePin = current.server.profileSha256 !== profileSha256(profile as unknown as Record<string, unknown>);
    if (definitions.length === 0 && grants.length === 0 && image.length === 0 && commandChange.length === 0 && !profilePin) {
      say(`${name} is up to date (${current.version}, ${current.tools.length} tool(s), same image, same grants); nothing written.`);
      return 0;
    }
    showServer(con, name, current.server.source, resolved.version, built, command, args, probed, profile);
    con.err('Changes since approval:');
    for (const line of [...image, ...commandChange, ...definitions]) con.err(`  ${line}`);
    if (grants.length > 0 || profilePin) {
      con.err(`  grants of profile ${profile.name} changed:`);
      for (const line of grants.length > 0 ? grants : ['(the profile changed in what it grants)']) con.err(`    ${line}`);
    }
    con.err('');
    const manifest = hostedManifest({name, version: resolved.version, source: current.server.source, integrity: resolved.integrity, image: built.image,
      imageId: built.imageId, command, args, profile, tools: probed.probe.tools,
      prompts: probed.probe.prompts, resources: probed.probe.resources, resourceTemplates: probed.probe.resourceTemplates});
    if (mode === 'ask' && !(await con.ask(`Approve these changes and serve ${name} ${resolved.version} under profile ${profile.name}? [y/N] `))) {
      say('not confirmed; the approved pins stay as they were.');
      return 1;
    }
    writeHostedPackage(packageDir, {...manifest, ...(current.server.lifetime === 'principal' ? {server: {...manifest.server, lifetime: 'principal',
      ...(current.server.idleMs === undefined ? {} : {idleMs: current.server.idleMs})}} : {})}, profile);
    say(`updated ${name} to ${resolved.version}: ${manifest.tools.length} tool(s) pinned.`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) { say(err.message); return 2; }
    if (err instanceof ToolcellError) {
      say(`refused: ${err.message} The approved pins stay as they were.`);
      return err.code === 'INVALID_ARGUMENTS' ? 2 : 1;
    }
    throw err;
  }
}
