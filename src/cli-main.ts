/** The `toolcell` command line: parses commands and flags (defaults from `RUNTIME_DEFAULTS`) and runs serve, list, call, doctor, profiles, images, build and check. */
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import {Command, CommanderError, InvalidArgumentError, Option} from 'commander';
import {ConfigError} from './errors.ts';
import {callTool, UnknownToolError} from './frontend/call-tool.ts';
import {serveStdioTransport} from './frontend/stdio.ts';
import {LOG_FORMATS, logLevelProblem, setLogFormat, type LogFormat} from './log.ts';
import {BUNDLED_PROFILES, BUNDLED_TOOLS, PACKAGE_ROOT, withBundled} from './paths.ts';
import {existingUserToolsDir} from './hosted/tools-dir.ts';
import {assertSomethingServed, assertToolDirs, emptyToolDirs} from './serve-preflight.ts';
import {localPrincipal} from './policy/principal.ts';
import {escapeForTerminal, escapeJsonForTerminal} from './terminal-text.ts';
import type {Profile} from './policy/profile-schema.ts';
import {networkInWords} from './egress/policy.ts';
import {createRuntime, RUNTIME_DEFAULTS, type Runtime, type RuntimeOptions} from './runtime.ts';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Options shared by commands that load tools and profiles. */
interface LoadFlags {
  tools?: string[];
  profiles?: string[];
  /** false for `--no-bundled-tools`. */
  bundledTools?: boolean;
  /** false for `--no-bundled-profiles`. */
  bundledProfiles?: boolean;
  workspace?: string;
  mountRoot?: string[];
  containers?: boolean;
  auditLog?: string;
  isolateWorkers?: number;
  isolatePool?: number;
  containerPool?: number;
  unprefixed?: string[];
  /** `--secrets FILE` (serve, call). */
  secrets?: string;
  /** `--upstream-ca FILE` (serve, call). */
  upstreamCa?: string;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 1024) throw new InvalidArgumentError('must be a whole number from 0 to 1024');
  return n;
}

function positiveInt(value: string): number {
  const n = nonNegativeInt(value);
  if (n === 0) throw new InvalidArgumentError('must be at least 1');
  return n;
}

function runtimeOptions(flags: LoadFlags, extra: RuntimeOptions = {}): RuntimeOptions {
  return {
    isolateWorkers: flags.isolateWorkers,
    isolatePool: flags.isolatePool,
    containerPool: flags.containerPool,
    // Without --tools, the user's hosted servers (`toolcell add` without --tools) load after the bundled tools.
    toolDirs: withBundled(BUNDLED_TOOLS, flags.tools?.length ? flags.tools : existingUserToolsDir(), flags.bundledTools !== false),
    profileDirs: withBundled(BUNDLED_PROFILES, flags.profiles, flags.bundledProfiles !== false),
    workspace: flags.workspace || undefined, // an empty --workspace means none, as before
    mountRoots: flags.mountRoot,
    containers: flags.containers,
    unprefixed: flags.unprefixed,
    ...(flags.secrets ? {secretsFile: flags.secrets} : {}),
    ...(flags.upstreamCa ? {upstreamCaFile: flags.upstreamCa} : {}),
    ...extra,
  };
}

function addLoadOptions(command: Command): Command {
  return command
    .option('--tools <dir>', 'tool package directory, loaded after the bundled tools/ (repeatable; a package whose name is taken is refused)', collect)
    .option('--profiles <dir>', 'profile directory, loaded after the bundled profiles/ (repeatable; a profile name defined twice stops the load)', collect)
    .option('--no-bundled-tools', 'do not load the bundled tools/: only the --tools directories')
    .option('--no-bundled-profiles', 'do not load the bundled profiles/: only the --profiles directories')
    .option('--workspace <dir>', 'directory that "${workspace}" means in mount grants (no default: tools that mount it are left out without it)')
    .option('--mount-root <dir>', 'directory under which profile mounts may lie (repeatable; default: the workspace)', collect)
    .option('--no-containers', 'do not use the Docker engine; container tools are left out')
    .option('--unprefixed <package>', 'serve this package\'s tools under their bare names, not <package>__<tool> (repeatable)', collect);
}

/** Options of the commands that run tools with egress (serve, call): the operator's secrets and upstream trust. */
function addEgressOptions(command: Command): Command {
  return command
    .option('--secrets <file>', 'secrets file (JSON: NAME → {env, hosts, header, format}); values are read from the named environment variables at start')
    .option('--upstream-ca <file>', 'extra CA certificates (PEM) trusted for upstream HTTPS servers, besides the default roots');
}

/** The `version` of toolcell's package.json. */
function packageVersion(): string {
  return (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {version: string}).version;
}

/**
 * Writes one line to stdout (only for commands whose stdout is not a protocol), with control
 * characters escaped: lines carry names and reasons a package chose (terminal-text.ts).
 */
const out = (text: string) => process.stdout.write(`${escapeForTerminal(text)}\n`);
/** Writes a value as indented JSON to stdout; control characters inside its strings are escaped the JSON way. */
const outJson = (value: unknown) => process.stdout.write(`${escapeJsonForTerminal(JSON.stringify(value, null, 2))}\n`);
const err = (text: string) => process.stderr.write(`toolcell: ${escapeForTerminal(text)}\n`);

/**
 * Builds the command line (every command, option and action) without parsing anything, so
 * tests can read what it registers (test/unit/cli-flags.test.ts). `exitCode()` is what the
 * action that ran last reported (0 when none did).
 */
export function buildProgram(): {program: Command; exitCode: () => number} {
  let exitCode = 0;
  const program = new Command('toolcell')
    .description('Sandboxed tool-execution runtime for MCP: every tool call in a fresh isolate or container.')
    .version(packageVersion(), '-V, --version', 'print the version of toolcell')
    .exitOverride()
    .configureOutput({writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s)})
    .showHelpAfterError('(run "toolcell --help" for usage)')
    .addOption(new Option('--log-format <format>', 'log lines on stderr: json, or pretty (default: pretty when stderr is a terminal, else json)').choices(LOG_FORMATS))
    .hook('preAction', (command) => {
      const problem = logLevelProblem();
      if (problem !== undefined) command.error(`toolcell: ${problem}`, {exitCode: 2, code: 'toolcell.logLevel'});
      const format = command.opts<{logFormat?: LogFormat}>().logFormat;
      if (format !== undefined) setLogFormat(format);
    });

  addEgressOptions(addLoadOptions(program.command('serve').description('serve tools over MCP (stdio by default)')))
    .addOption(new Option('--stdio', 'serve over stdio (default)'))
    .addOption(new Option('--http <host:port>', 'serve Streamable HTTP at http://HOST:PORT/mcp').conflicts('stdio'))
    .option('--config <file>', 'HTTP service configuration (authentication, grants, quotas): JSON')
    .option('--audit-log <target>', `audit events: a JSONL file path, "stderr" or "off" (default: "${RUNTIME_DEFAULTS.auditStdio}" on stdio, "${RUNTIME_DEFAULTS.audit}" with --http)`)
    .option('--isolate-workers <n>', 'isolate worker processes', positiveInt, RUNTIME_DEFAULTS.isolateWorkers)
    .option('--isolate-pool <n>', 'warm isolates kept ready per memory size in each worker (0: off)', nonNegativeInt, RUNTIME_DEFAULTS.isolatePool)
    .option('--container-pool <n>', 'warm containers kept ready per (image, profile) (0: off)', nonNegativeInt, RUNTIME_DEFAULTS.containerPool)
    .action(async (flags: LoadFlags & {http?: string; config?: string}) => {
      await assertToolDirs(flags.tools);
      exitCode = flags.http ? await serveHttpCommand(flags) : await serveStdioCommand(flags);
    });

  addLoadOptions(program.command('list').description('list tools with their profile, backend and grants, and every rejected package'))
    .option('--json', 'print JSON')
    .action(async (flags: LoadFlags & {json?: boolean}) => {
      exitCode = await listCommand(flags);
    });

  addEgressOptions(addLoadOptions(program.command('call').description('run one tool call; the result JSON goes to stdout').argument('<tool>', 'MCP tool name, e.g. text__word_count')))
    .option('--args <json>', 'arguments as a JSON object', '{}')
    .action(async (tool: string, flags: LoadFlags & {args: string}) => {
      exitCode = await callCommand(tool, flags);
    });

  addLoadOptions(program.command('doctor').description('report which isolation this host offers; exits 1 when a loaded profile cannot be honoured'))
    .option('--json', 'print JSON')
    .action(async (flags: LoadFlags & {json?: boolean}) => {
      const {doctor} = await import('./doctor.ts');
      exitCode = await doctor(runtimeOptions(flags), Boolean(flags.json));
    });

  program.command('build').description('bundle the isolate entries of a tool package (src/<name>.ts|js → dist/<name>.js) with esbuild')
    .argument('[dir]', 'a package directory (with toolcell.json) or a folder of packages', '.')
    .action(async (dir: string) => {
      const {buildCommand} = await import('./build-command.ts');
      exitCode = await buildCommand(dir);
    });

  program.command('check').description('load a tool package as serve would and find what fails only at call time; exits 1 on problems')
    .argument('[dir]', 'a package directory (with toolcell.json) or a folder of packages', '.')
    .option('--profiles <dir>', 'profile directory next to the bundled profiles (repeatable)', collect)
    .action(async (dir: string, flags: {profiles?: string[]}) => {
      const {checkCommand} = await import('./check-command.ts');
      exitCode = await checkCommand(dir, flags.profiles ?? []);
    });

  program.command('profiles').description('list the profiles: backend and grants (limits, network, filesystem, commands, runtime) in words')
    .option('--profiles <dir>', 'profile directory, loaded after the bundled profiles/ (repeatable)', collect)
    .option('--no-bundled-profiles', 'do not load the bundled profiles/: only the --profiles directories')
    .option('--json', 'print JSON')
    .action(async (flags: {profiles?: string[]; bundledProfiles?: boolean; json?: boolean}) => {
      const {profilesCommand} = await import('./profiles-command.ts');
      exitCode = await profilesCommand(withBundled(BUNDLED_PROFILES, flags.profiles, flags.bundledProfiles !== false), Boolean(flags.json));
    });

  program.command('images').description('sandbox images')
    .command('build').description('build the sandbox images from sandboxes/ (all, or NAME)').argument('[name]', 'image folder, e.g. python')
    .action(async (name?: string) => {
      const {imagesBuild} = await import('./images-command.ts');
      exitCode = await imagesBuild(name);
    });

  program.command('audit').description('the audit stream')
    .command('verify').description('check an audit file\'s chains; name the first deleted, altered, reordered or forged event (exit 0 intact, 1 broken, 2 usage)')
    .argument('<file>', 'audit JSONL file, or - for stdin (rotated files concatenated oldest first)')
    .option('--public-key <file>', 'Ed25519 public key (PEM): every line must carry a signature that verifies with it')
    .action(async (file: string, flags: {publicKey?: string}) => {
      const {auditVerifyCommand} = await import('./audit-verify-command.ts');
      exitCode = await auditVerifyCommand(file, flags);
    });

  program.command('add').description('host an existing MCP server: resolve, build, probe once in its sandbox, screen, confirm, pin')
    .argument('<source>', 'npm:<package>[@<version|range>], pypi:<project>==<version>, pypi:<wheel or sdist path>, oci:<local image> or dir:<path>')
    .argument('[server-args...]', 'arguments for the server, after --')
    .option('--name <name>', 'package name (default: from the source, e.g. everything)')
    .option('--profile <profile>', 'container profile the server runs under', 'server-offline')
    .option('--tools <dir>', 'tools directory to write to (default: $TOOLCELL_TOOLS_DIR or $XDG_DATA_HOME/toolcell/tools)')
    .option('--profiles <dir>', 'profile directory (repeatable; default: the bundled profiles/)', collect)
    .option('--yes', 'do not ask for confirmation (scripts); without it and without a terminal, add refuses')
    .option('--allow-flagged', 'add a server even when screening flags its definitions')
    .option('--allow-install-scripts', 'npm: run the package\'s install scripts in the image build')
    .option('--command <argv>', 'the server\'s argv in its image (JSON array or words); npm: the bin to run')
    .option('--python', 'dir: copy the folder into toolcell/python instead of toolcell/node')
    .option('--find-links <dir>', 'pypi:<project>==<version>: a folder of wheels and sdists to take it from')
    .option('--index-url <url>', 'pypi:<project>==<version>: a simple package index (PEP 503) to resolve against and install from, hash-checked')
    .action(async (source: string, serverArgs: string[], flags: import('./add-command.ts').AddFlags) => {
      const {addCommand} = await import('./add-command.ts');
      exitCode = await addCommand(source, serverArgs, flags);
    });

  program.command('update').description('re-resolve a hosted server, rebuild if it changed, show what changed, ask again, re-pin')
    .argument('<name>', 'package name given at add')
    .option('--tools <dir>', 'tools directory (default: $TOOLCELL_TOOLS_DIR or $XDG_DATA_HOME/toolcell/tools)')
    .option('--profiles <dir>', 'profile directory (repeatable; default: the bundled profiles/)', collect)
    .option('--yes', 'do not ask for confirmation (scripts); without it and without a terminal, update refuses')
    .option('--allow-flagged', 'update even when screening flags the new definitions')
    .option('--allow-install-scripts', 'npm: run the package\'s install scripts in the image build')
    .option('--find-links <dir>', 'pypi:<project>==<version>: the folder of wheels and sdists to resolve in again')
    .option('--index-url <url>', 'pypi:<project>==<version>: the simple package index to resolve against again')
    .action(async (name: string, flags: import('./update-command.ts').UpdateFlags) => {
      const {updateCommand} = await import('./update-command.ts');
      exitCode = await updateCommand(name, flags);
    });

  return {program, exitCode: () => exitCode};
}

/**
 * Runs the CLI (ARCHITECTURE.md, "CLI"). Returns the process exit code:
 * 0 success; 1 the call or check failed (tool error, doctor found a problem);
 * 2 usage or configuration error (message on stderr naming the cause).
 */
export async function main(argv: string[]): Promise<number> {
  const {program, exitCode} = buildProgram();
  try {
    await program.parseAsync(argv, {from: 'user'});
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof ConfigError) {
      err(e.message);
      return 2;
    }
    throw e;
  }
  return exitCode();
}

async function serveStdioCommand(flags: LoadFlags): Promise<number> {
  const runtime = await createRuntime(runtimeOptions(flags, {audit: flags.auditLog ?? RUNTIME_DEFAULTS.auditStdio}));
  for (const line of emptyToolDirs(runtime, flags.tools)) err(line);
  try {
    assertSomethingServed(runtime);
  } catch (e) {
    await runtime.close();
    throw e;
  }
  const server = serveStdioTransport(runtime);
  // One line for the human watching stderr (clients ignore it); stdout stays the protocol's.
  err(`serving ${runtime.tools.size} tool${runtime.tools.size === 1 ? '' : 's'} over stdio`);
  const shutdown = async () => {
    await server.stop();
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  await server.done;
  await runtime.close();
  return 0;
}

async function serveHttpCommand(flags: LoadFlags & {http?: string; config?: string}): Promise<number> {
  const {serveHttpCommand: serve} = await import('./frontend/http/serve-http-command.ts');
  return serve(flags.http!, runtimeOptions(flags, {audit: flags.auditLog ?? RUNTIME_DEFAULTS.audit}), flags.config, flags.tools);
}

async function listCommand(flags: LoadFlags & {json?: boolean}): Promise<number> {
  // One-shot commands make at most one call: no warm pool.
  const runtime = await createRuntime(runtimeOptions(flags, {audit: 'off', isolatePool: 0, logProblems: false}));
  try {
    const unavailable = new Map(runtime.unavailable.map((u) => [u.tool, u.reason]));
    const tools = [...runtime.allTools.values()].map((t) => ({
      name: t.name,
      package: `${t.packageName}@${t.packageVersion}`,
      profile: t.profile.name,
      backend: t.profile.backend,
      grants: grantsOf(t.profile),
      unavailable: unavailable.get(t.name),
    }));
    const {hostedServers, formatHostedServers} = await import('./hosted/list-servers.ts');
    const servers = hostedServers(runtime.packages);
    if (flags.json) {
      outJson({tools, ...(servers.length > 0 ? {servers} : {}), rejected: runtime.rejected});
    } else {
      out(`${tools.length} tool(s) from ${runtime.packages.length} package(s):`);
      for (const t of tools) {
        out(`  ${t.name}  [${t.backend}, profile ${t.profile}] ${t.grants}${t.unavailable ? `  (unavailable: ${t.unavailable})` : ''}`);
      }
      for (const line of formatHostedServers(servers)) out(line);
      if (runtime.rejected.length > 0) {
        out(`${runtime.rejected.length} package(s) rejected:`);
        for (const r of runtime.rejected) out(`  ${r.name ?? r.dir}: ${r.reason}`);
      }
    }
    // A rejected package is a failed check, even though everything that loaded is listed.
    return runtime.rejected.length > 0 ? 1 : 0;
  } finally {
    await runtime.close();
  }
}

/** A one-line summary of what a profile grants, for `list`. */
export function grantsOf(profile: Profile): string {
  const l = profile.limits;
  if (profile.backend === 'isolate') {
    return `memory ${l.memoryMb} MB, timeout ${l.timeoutMs} ms, output ${l.outputBytes} B, network ${networkInWords(profile.network, 'none')}, no filesystem`;
  }
  const fs = profile.filesystem;
  const mounts = fs.mounts.map((m) => `${m.target}${m.readOnly ? ' (ro)' : ' (rw)'}`).join(', ');
  return `commands ${profile.commands.join(' ')}; memory ${l.memoryMb} MB, cpus ${profile.limits.cpus}, pids ${profile.limits.pids}, `
    + `timeout ${l.timeoutMs} ms, output ${l.outputBytes} B; network ${networkInWords(profile.network, 'none')}; root ${fs.readOnlyRoot ? 'read-only' : 'writable'}`
    + `${mounts ? `; mounts ${mounts}` : ''}; runtime ${profile.runtime}`;
}

async function callCommand(name: string, flags: LoadFlags & {args: string}): Promise<number> {
  let args: unknown;
  try {
    args = JSON.parse(flags.args);
  } catch (e) {
    err(`--args is not valid JSON: ${(e as Error).message}`);
    return 2;
  }
  if (args === null || typeof args !== 'object' || Array.isArray(args)) {
    err('--args must be a JSON object, e.g. --args \'{"text": "hello"}\'');
    return 2;
  }
  const runtime = await createRuntime(runtimeOptions(flags, {audit: flags.auditLog ?? 'off', isolatePool: 0}));
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  try {
    const result = await callTool(runtime, name, args, {principal: localPrincipal, transport: 'cli', signal: controller.signal});
    outJson(result);
    return result.isError ? 1 : 0;
  } catch (e) {
    if (e instanceof UnknownToolError) {
      err(`unknown tool "${name}"; available: ${[...runtime.tools.keys()].sort().join(', ')}`);
      return 2;
    }
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    await runtime.close();
  }
}

