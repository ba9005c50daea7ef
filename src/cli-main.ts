/** The `toolcell` command line: parses commands and flags (defaults from `RUNTIME_DEFAULTS`) and runs serve, list, call, doctor and images. */
import {Command, CommanderError, InvalidArgumentError, Option} from 'commander';
import {ConfigError} from './errors.ts';
import {callTool, UnknownToolError} from './frontend/call-tool.ts';
import {serveStdioTransport} from './frontend/stdio.ts';
import {log} from './log.ts';
import {localPrincipal} from './policy/principal.ts';
import type {Profile} from './policy/profile-schema.ts';
import {createRuntime, RUNTIME_DEFAULTS, type Runtime, type RuntimeOptions} from './runtime.ts';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Options shared by commands that load tools and profiles. */
interface LoadFlags {
  tools?: string[];
  profiles?: string[];
  workspace?: string;
  mountRoot?: string[];
  containers?: boolean;
  auditLog?: string;
  isolateWorkers?: number;
  isolatePool?: number;
  containerPool?: number;
  unprefixed?: string[];
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
    ...(flags.isolateWorkers === undefined ? {} : {isolateWorkers: flags.isolateWorkers}),
    ...(flags.isolatePool === undefined ? {} : {isolatePool: flags.isolatePool}),
    ...(flags.containerPool === undefined ? {} : {containerPool: flags.containerPool}),
    ...(flags.tools ? {toolDirs: flags.tools} : {}),
    ...(flags.profiles ? {profileDirs: flags.profiles} : {}),
    ...(flags.workspace ? {workspace: flags.workspace} : {}),
    ...(flags.mountRoot ? {mountRoots: flags.mountRoot} : {}),
    ...(flags.containers === false ? {containers: false} : {}),
    ...(flags.unprefixed ? {unprefixed: flags.unprefixed} : {}),
    ...extra,
  };
}

function addLoadOptions(command: Command): Command {
  return command
    .option('--tools <dir>', 'tool package directory (repeatable; default: the bundled tools/)', collect)
    .option('--profiles <dir>', 'profile directory (repeatable; default: the bundled profiles/)', collect)
    .option('--workspace <dir>', 'directory that "${workspace}" means in mount grants (no default: tools that mount it are left out without it)')
    .option('--mount-root <dir>', 'directory under which profile mounts may lie (repeatable; default: the workspace)', collect)
    .option('--no-containers', 'do not use the Docker engine; container tools are left out')
    .option('--unprefixed <package>', 'serve this package\'s tools under their bare names, not <package>__<tool> (repeatable)', collect);
}

/** Writes one line to stdout (only for commands whose stdout is not a protocol). */
const out = (text: string) => process.stdout.write(`${text}\n`);
const err = (text: string) => process.stderr.write(`toolcell: ${text}\n`);

/**
 * Runs the CLI (ARCHITECTURE.md, "CLI"). Returns the process exit code:
 * 0 success; 1 the call or check failed (tool error, doctor found a problem);
 * 2 usage or configuration error (message on stderr naming the cause).
 */
export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command('toolcell')
    .description('Sandboxed tool-execution runtime for MCP: every tool call in a fresh isolate or container.')
    .exitOverride()
    .configureOutput({writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s)})
    .showHelpAfterError('(run "toolcell --help" for usage)');

  addLoadOptions(program.command('serve').description('serve tools over MCP (stdio by default)'))
    .addOption(new Option('--stdio', 'serve over stdio (default)'))
    .addOption(new Option('--http <host:port>', 'serve Streamable HTTP at http://HOST:PORT/mcp').conflicts('stdio'))
    .option('--config <file>', 'HTTP service configuration (authentication, grants, quotas): JSON')
    .option('--audit-log <target>', 'audit events: a JSONL file path, "stderr" or "off"', RUNTIME_DEFAULTS.audit)
    .option('--isolate-workers <n>', 'isolate worker processes', positiveInt, RUNTIME_DEFAULTS.isolateWorkers)
    .option('--isolate-pool <n>', 'warm isolates kept ready per memory size in each worker (0: off)', nonNegativeInt, RUNTIME_DEFAULTS.isolatePool)
    .option('--container-pool <n>', 'warm containers kept ready per (image, profile) (0: off)', nonNegativeInt, RUNTIME_DEFAULTS.containerPool)
    .action(async (flags: LoadFlags & {http?: string; config?: string}) => {
      exitCode = flags.http ? await serveHttpCommand(flags) : await serveStdioCommand(flags);
    });

  addLoadOptions(program.command('list').description('list tools with their profile, backend and grants, and every rejected package'))
    .option('--json', 'print JSON')
    .action(async (flags: LoadFlags & {json?: boolean}) => {
      exitCode = await listCommand(flags);
    });

  addLoadOptions(program.command('call').description('run one tool call; the result JSON goes to stdout').argument('<tool>', 'MCP tool name, e.g. text__word_count'))
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

  program.command('images').description('sandbox images')
    .command('build').description('build the sandbox images from sandboxes/ (all, or NAME)').argument('[name]', 'image folder, e.g. python')
    .action(async (name?: string) => {
      const {imagesBuild} = await import('./images-command.ts');
      exitCode = await imagesBuild(name);
    });

  program.command('add').description('host an existing MCP server: resolve, build, probe once in its sandbox, screen, confirm, pin')
    .argument('<source>', 'npm:<package>[@<version|range>], pypi:<wheel or sdist path>, oci:<local image> or dir:<path>')
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
    .action(async (name: string, flags: import('./update-command.ts').UpdateFlags) => {
      const {updateCommand} = await import('./update-command.ts');
      exitCode = await updateCommand(name, flags);
    });

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
  return exitCode;
}

async function serveStdioCommand(flags: LoadFlags): Promise<number> {
  const runtime = await createRuntime(runtimeOptions(flags, {audit: flags.auditLog ?? RUNTIME_DEFAULTS.audit}));
  reportRejected(runtime);
  const server = serveStdioTransport(runtime);
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
  return serve(flags.http!, runtimeOptions(flags, {audit: flags.auditLog ?? RUNTIME_DEFAULTS.audit}), flags.config);
}

function reportRejected(runtime: Runtime): void {
  for (const r of runtime.rejected) err(`package ${r.name ?? r.dir} rejected: ${r.reason}`);
}

async function listCommand(flags: LoadFlags & {json?: boolean}): Promise<number> {
  // One-shot commands make at most one call: no warm pool.
  const runtime = await createRuntime(runtimeOptions(flags, {audit: 'off', isolatePool: 0}));
  try {
    const unavailable = new Map(runtime.unavailable.map((u) => [u.tool, u.reason]));
    const tools = [...runtime.allTools.values()].map((t) => ({
      name: t.name,
      package: `${t.packageName}@${t.packageVersion}`,
      profile: t.profile.name,
      backend: t.profile.backend,
      grants: grantsOf(t.profile),
      ...(unavailable.has(t.name) ? {unavailable: unavailable.get(t.name)} : {}),
    }));
    const {hostedServers, formatHostedServers} = await import('./hosted/list-servers.ts');
    const servers = hostedServers(runtime.packages);
    if (flags.json) {
      out(JSON.stringify({tools, ...(servers.length > 0 ? {servers} : {}), rejected: runtime.rejected}, null, 2));
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
    return 0;
  } finally {
    await runtime.close();
  }
}

/** A one-line summary of what a profile grants, for `list`. */
export function grantsOf(profile: Profile): string {
  const l = profile.limits;
  if (profile.backend === 'isolate') {
    return `memory ${l.memoryMb} MB, timeout ${l.timeoutMs} ms, output ${l.outputBytes} B, no network, no filesystem`;
  }
  const fs = profile.filesystem;
  const mounts = fs.mounts.map((m) => `${m.target}${m.readOnly ? ' (ro)' : ' (rw)'}`).join(', ');
  return `commands ${profile.commands.join(' ')}; memory ${l.memoryMb} MB, cpus ${profile.limits.cpus}, pids ${profile.limits.pids}, `
    + `timeout ${l.timeoutMs} ms, output ${l.outputBytes} B; network ${profile.network}; root ${fs.readOnlyRoot ? 'read-only' : 'writable'}`
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
    out(JSON.stringify(result, null, 2));
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

