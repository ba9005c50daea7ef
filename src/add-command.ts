// `toolcell add SOURCE`: resolves, builds and probes an existing MCP server once in its sandbox, screens and shows what it offers, and writes its pinned package only after the operator confirms.
import {mkdirSync, readFileSync, renameSync, writeFileSync} from 'node:fs';
import {join, resolve} from 'node:path';
import {createInterface} from 'node:readline/promises';
import {ConfigError, ToolcellError} from './errors.ts';
import {probeServer, type ProbeResult} from './backends/server/probe-server.ts';
import {hostedManifest, describeTool, permissionSummary, serverProfileProblem, toolNameProblems} from './hosted/hosted-package.ts';
import {resolveSource, type ResolvedSource} from './hosted/resolve-source.ts';
import {buildServerImage, npmCommand, SERVER_ROOT} from './hosted/server-image.ts';
import {defaultServerName, formatSource, parseSource, type HostedSource} from './hosted/source.ts';
import {userToolsDir} from './hosted/tools-dir.ts';
import {loadProfiles} from './policy/load-profiles.ts';
import {PACKAGE_NAME} from './policy/manifest-schema.ts';
import type {ContainerProfile, Profile} from './policy/profile-schema.ts';
import {formatFinding, makeVisible, screenDefinitions, type ScreeningFinding, type ScreenTarget} from './policy/screening.ts';
import {BUNDLED_PROFILES} from './paths.ts';

/** The profile a hosted server runs under when `--profile` is not given (profiles/server-offline.json). */
export const DEFAULT_SERVER_PROFILE = 'server-offline';
/** File beside `toolcell.json` holding the profile as the operator approved it, so `update` can show what changed in the grants. */
export const APPROVED_PROFILE_FILE = 'approved-profile.json';

/** Flags of `toolcell add`. */
export interface AddFlags {
  name?: string;
  profile?: string;
  tools?: string;
  profiles?: string[];
  yes?: boolean;
  allowFlagged?: boolean;
  allowInstallScripts?: boolean;
  command?: string;
  python?: boolean;
}

/** Where the CLI talks to the operator: stderr for everything but the protocol, and a TTY check. */
export interface Console {
  err: (line: string) => void;
  /** True when both stdin and stderr are terminals (a person can answer). */
  interactive: boolean;
  /** Asks a yes/no question on the terminal; resolves true only for "y" or "yes". */
  ask: (question: string) => Promise<boolean>;
}

/**
 * The process's terminal. Every line passes through makeVisible: server-controlled text (names,
 * descriptions, serverInfo, error messages, build output) cannot move the cursor, hide text or
 * reorder it with escape sequences or bidi controls on the operator's terminal.
 */
export function processConsole(): Console {
  return {
    err: (line) => process.stderr.write(`${makeVisible(line)}\n`),
    interactive: Boolean(process.stdin.isTTY && process.stderr.isTTY),
    ask: async (question) => {
      const rl = createInterface({input: process.stdin, output: process.stderr, terminal: true});
      try {
        return /^\s*y(es)?\s*$/i.test(await rl.question(question));
      } finally {
        rl.close();
      }
    },
  };
}

/**
 * How consent is obtained: `yes` (the --yes flag), `ask` (a terminal), or `refuse` (neither:
 * scripts must say --yes; nothing is resolved, built or written).
 */
export function consentMode(yes: boolean | undefined, interactive: boolean): 'yes' | 'ask' | 'refuse' {
  return yes ? 'yes' : interactive ? 'ask' : 'refuse';
}

/**
 * `--command` as an argv: a JSON array of strings, or words separated by spaces (no quoting, no
 * shell). @throws ConfigError for an empty command, a NUL byte or a JSON value that is not an array of strings.
 */
export function parseCommandFlag(text: string): string[] {
  let argv: unknown;
  if (text.trim().startsWith('[')) {
    try {
      argv = JSON.parse(text);
    } catch {
      throw new ConfigError('--command', 'starts with "[" but is not a JSON array of strings');
    }
  } else {
    argv = text.split(/\s+/).filter((w) => w.length > 0);
  }
  if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string' || a.length === 0 || a.includes('\0'))) {
    throw new ConfigError('--command', 'must be a non-empty JSON array of strings or space-separated words, without NUL bytes');
  }
  return argv as string[];
}

/** The server's argv in its image: npm bin via node, `--command` for the others (oci: default its Entrypoint + Cmd; pypi: `python3 -m <project>`). */
export function serverCommand(resolved: ResolvedSource, commandFlag: string | undefined): {command: string[]; bin?: string} {
  switch (resolved.type) {
    case 'npm': {
      if (commandFlag !== undefined && /\s|^\[/.test(commandFlag.trim())) throw new ConfigError('--command', 'for an npm: source names one of the package\'s bins (it runs under node)');
      return npmCommand(resolved, commandFlag?.trim());
    }
    case 'oci': {
      const command = commandFlag !== undefined ? parseCommandFlag(commandFlag) : resolved.command;
      if (command.length === 0) throw new ConfigError('--command', `oci:${resolved.image} has no Entrypoint or Cmd; give --command`);
      return {command};
    }
    case 'pypi-file':
      return {command: commandFlag !== undefined ? parseCommandFlag(commandFlag) : ['python3', '-m', resolved.project.toLowerCase().replace(/[-.]+/g, '_')]};
    case 'dir':
      if (commandFlag === undefined) throw new ConfigError('--command', `a dir: source needs --command, e.g. --command "node ${SERVER_ROOT}/server.js" (the folder is at ${SERVER_ROOT}, also the working directory)`);
      return {command: parseCommandFlag(commandFlag)};
  }
}

/** Everything a probe found, screened. */
export interface ProbedServer {
  probe: ProbeResult;
  findings: ScreeningFinding[];
  nameProblems: string[];
}

/** The definitions a probe returned, as screening targets (tools, prompts, resources, resource templates). */
export function screeningTargets(probe: Pick<ProbeResult, 'tools' | 'prompts' | 'resources' | 'resourceTemplates'>): ScreenTarget[] {
  const named = (kind: ScreenTarget['kind'], items: readonly Record<string, unknown>[] | undefined) =>
    (items ?? []).map((definition) => ({kind, name: typeof definition.name === 'string' ? definition.name : String(definition.uri ?? definition.uriTemplate ?? '?'), definition}));
  return [...named('tool', probe.tools), ...named('prompt', probe.prompts), ...named('resource', probe.resources), ...named('resourceTemplate', probe.resourceTemplates)];
}

/**
 * Starts the server once in its sandbox under `profile` and screens what it lists.
 * @throws ToolcellError from probeServer (the server does not start or speak MCP).
 */
export async function probeAndScreen(packageName: string, image: string, command: readonly string[], args: readonly string[], profile: ContainerProfile): Promise<ProbedServer> {
  const probe = await probeServer({image, command, args, profile: {name: profile.name, limits: profile.limits, network: 'none', filesystem: profile.filesystem, runtime: profile.runtime}});
  return {probe, findings: screenDefinitions(screeningTargets(probe)), nameProblems: toolNameProblems(packageName, probe.tools)};
}

/** Loads the operator's profiles (`--profiles`, default the bundled ones) and picks the server's, checking it can host `argv0`. */
export async function serverProfile(dirs: readonly string[] | undefined, name: string, argv0: string | undefined): Promise<ContainerProfile> {
  const profiles = await loadProfiles(dirs?.length ? dirs : [BUNDLED_PROFILES]);
  const profile = profiles.get(name);
  const problem = serverProfileProblem(profile, name, [...profiles.keys()].sort(), argv0);
  if (problem) throw new ConfigError('--profile', problem);
  return profile as ContainerProfile;
}

/** Writes `<dir>/<name>/toolcell.json` and the approved profile beside it, each by write-then-rename (a reader never sees half a file). */
export function writeHostedPackage(packageDir: string, manifest: unknown, profile: Profile): void {
  mkdirSync(packageDir, {recursive: true, mode: 0o755});
  const write = (file: string, value: unknown) => {
    const target = join(packageDir, file);
    const temp = `${target}.${process.pid}.tmp`;
    writeFileSync(temp, `${JSON.stringify(value, null, 2)}\n`, {mode: 0o644});
    renameSync(temp, target);
  };
  write(APPROVED_PROFILE_FILE, profile);
  write('toolcell.json', manifest);
}

/** Shows the findings and says whether the server may go on (only with --allow-flagged). */
export function reportFindings(con: Console, findings: readonly ScreeningFinding[], allowFlagged: boolean | undefined): boolean {
  if (findings.length === 0) return true;
  con.err(`toolcell: screening flagged ${findings.length} finding(s) in the server's definitions:`);
  for (const f of findings) con.err(`  ${formatFinding(f)}`);
  if (!allowFlagged) {
    con.err('toolcell: refused: the server carries what looks like hidden instructions. Nothing was written. Read the findings; --allow-flagged adds it anyway.');
    return false;
  }
  con.err('toolcell: --allow-flagged: going on despite the findings.');
  return true;
}

/**
 * `toolcell add SOURCE [--name N] [--profile P] [--tools DIR] [--profiles DIR]... [--yes]
 * [--allow-flagged] [--allow-install-scripts] [--command CMD] [--python] [-- SERVER_ARGS...]`.
 *
 * Steps: parse SOURCE → refuse early without --yes or a terminal → resolve (one exact version and
 * integrity) → build or tag the image → start the server once in its sandbox under the profile
 * (network none unless granted) and list its tools (prompts, resources) → screen them → refuse
 * tool names that do not fit → show each tool's name, title and description and the profile's
 * permission summary → ask (or --yes) → write `<tools>/<name>/toolcell.json` with the pins.
 * Nothing is written before the confirmation, and nothing that was not shown.
 * @returns exit code: 0 added; 1 refused (no consent, flagged, bad tool names, server failed to
 *   start or speak MCP, build failed); 2 usage or configuration error (bad SOURCE, unknown
 *   profile, name taken).
 */
export async function addCommand(sourceText: string, serverArgs: readonly string[], flags: AddFlags, con: Console = processConsole()): Promise<number> {
  const say = (line: string) => con.err(`toolcell: ${line}`);
  let source: HostedSource;
  try {
    source = parseSource(sourceText);
  } catch (err) {
    if (err instanceof ConfigError) { say(err.message); return 2; }
    throw err;
  }
  const mode = consentMode(flags.yes, con.interactive);
  if (mode === 'refuse') {
    say('refused: adding a server needs the operator\'s confirmation, and there is no terminal to ask on. Run it in a terminal, or pass --yes in scripts. Nothing was written.');
    return 1;
  }
  const name = flags.name ?? defaultServerName(source);
  if (name === undefined || !PACKAGE_NAME.test(name) || name.includes('__') || name.length > 60) {
    say(`${name === undefined ? 'no package name can be made from the source' : `--name "${name}" is not a package name`}; give --name with a lower-case letter, then a-z, 0-9 or - (no "__", at most 60).`);
    return 2;
  }
  const toolsDir = resolve(flags.tools ?? userToolsDir());
  const packageDir = join(toolsDir, name);
  if (existsManifest(packageDir)) {
    say(`a package "${name}" is already in ${toolsDir}; use "toolcell update ${name}" or choose another --name.`);
    return 2;
  }
  if (source.type === 'dir' || source.type === 'pypi-file') source = {...source, path: resolve(source.path)};
  const written = formatSource(source);
  try {
    const resolved = await resolveSource(source, {onProgress: say});
    say(`resolved ${written} → ${resolved.version} (${resolved.integrity.slice(0, 40)}${resolved.integrity.length > 40 ? '…' : ''})`);
    const {command, bin} = serverCommand(resolved, flags.command);
    const profile = await serverProfile(flags.profiles, flags.profile ?? DEFAULT_SERVER_PROFILE, command[0]);
    const built = await buildServerImage(resolved, {name, source: written, ...(bin ? {bin} : {}), allowInstallScripts: flags.allowInstallScripts === true,
      runtime: flags.python ? 'python' : 'node', onProgress: (line) => con.err(`  build: ${line}`)});
    say(`image ${built.image} (${built.imageId})`);
    say(`starting the server once in its sandbox (profile ${profile.name}, without network) to list its tools…`);
    const probed = await probeAndScreen(name, built.imageId, command, serverArgs, profile);
    if (probed.probe.imageId !== built.imageId) throw new ToolcellError('INTERNAL', 'The probe ran a different image than was built.');
    if (!reportFindings(con, probed.findings, flags.allowFlagged)) return 1;
    if (probed.nameProblems.length > 0) {
      say('refused: these tools cannot be served under <package>__<tool> names:');
      for (const p of probed.nameProblems) con.err(`  ${p}`);
      return 1;
    }
    const manifest = hostedManifest({name, version: resolved.version, source: written, integrity: resolved.integrity, image: built.image,
      imageId: built.imageId, command, args: serverArgs, profile, tools: probed.probe.tools,
      prompts: probed.probe.prompts, resources: probed.probe.resources, resourceTemplates: probed.probe.resourceTemplates});
    showServer(con, name, written, resolved.version, built, command, serverArgs, probed, profile);
    if (mode === 'ask' && !(await con.ask(`Serve these ${manifest.tools.length} tool(s) as ${name}__<tool> under profile ${profile.name}? [y/N] `))) {
      say('not confirmed; nothing was written.');
      return 1;
    }
    writeHostedPackage(packageDir, manifest, profile);
    say(`added ${name}: ${manifest.tools.length} tool(s) pinned in ${join(packageDir, 'toolcell.json')}`);
    say(`serve them with: toolcell serve${flags.tools ? ` --tools ${toolsDir}` : ''}`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) { say(err.message); return 2; }
    if (err instanceof ToolcellError) {
      say(`refused: ${err.message} Nothing was written.`);
      return err.code === 'INVALID_ARGUMENTS' ? 2 : 1;
    }
    throw err;
  }
}

function existsManifest(packageDir: string): boolean {
  try {
    readFileSync(join(packageDir, 'toolcell.json'));
    return true;
  } catch {
    return false;
  }
}

/** The confirmation text: the server, each tool (made visible), and what the profile grants. */
export function showServer(con: Console, name: string, source: string, version: string, built: {image: string; imageId: string},
  command: readonly string[], args: readonly string[], probed: ProbedServer, profile: Profile): void {
  const info = probed.probe.serverInfo;
  con.err('');
  con.err(`Server ${name} from ${source}, version ${version}`);
  con.err(`  says it is: ${JSON.stringify(info.name ?? '?').slice(0, 80)} ${JSON.stringify(info.version ?? '?').slice(0, 40)} (MCP ${probed.probe.protocolVersion})`);
  con.err(`  image ${built.image} ${built.imageId}`);
  con.err(`  command ${JSON.stringify([...command, ...args])}`);
  con.err(`Tools (${probed.probe.tools.length}), served as ${name}__<tool>:`);
  for (const tool of probed.probe.tools) for (const line of describeTool(tool)) con.err(line);
  const extra = [['prompts', probed.probe.prompts], ['resources', probed.probe.resources], ['resource templates', probed.probe.resourceTemplates]] as const;
  const offered = extra.filter(([, items]) => items && items.length > 0).map(([what, items]) => `${items!.length} ${what}`);
  if (offered.length > 0) con.err(`Also listed, and screened: ${offered.join(', ')}`);
  con.err('Each call runs in a fresh sandbox with these grants:');
  for (const line of permissionSummary(profile)) con.err(`  ${line}`);
  con.err('');
}
