import {execFile, execFileSync} from 'node:child_process';
import {promisify} from 'node:util';
import {Client} from '@modelcontextprotocol/client';
import {StdioClientTransport} from '@modelcontextprotocol/client/stdio';
import {fileURLToPath} from 'node:url';

/** Absolute path of the built CLI (`npm test` builds first). */
export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/** What one run of the CLI printed, and its exit code. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node dist/cli.js ...args` to its end, as a user would, and resolves with its exit code and
 * output whatever the code (a non-zero exit does not reject). The environment is this process's
 * with `TOOLCELL_LOG_LEVEL=warn`, then `options.env`. The child is killed (SIGTERM) after
 * `options.timeoutMs` (default 60 000 ms), so a CLI that never ends cannot hang the test run.
 */
export async function runCli(args: readonly string[], options: {env?: Record<string, string>; timeoutMs?: number; cwd?: string} = {}): Promise<CliRun> {
  try {
    const {stdout, stderr} = await promisify(execFile)(process.execPath, [CLI, ...args],
      {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn', ...options.env}, timeout: options.timeoutMs ?? 60_000, cwd: options.cwd});
    return {code: 0, stdout, stderr};
  } catch (e) {
    const err = e as {code: number; stdout?: string; stderr?: string};
    return {code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? ''};
  }
}

/**
 * Spawns `node dist/cli.js serve …` as a real stdio MCP server and connects an SDK client.
 * `era: 'modern'` negotiates 2026-07-28 (server/discover); `'legacy'` uses the 2025-11-25
 * initialize handshake.
 */
export async function connectStdio(args: string[] = [], options: {era?: 'legacy' | 'modern'; env?: Record<string, string>} = {}) {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CLI, 'serve', ...args],
    env: {...(process.env as Record<string, string>), TOOLCELL_LOG_LEVEL: 'warn', ...options.env},
    stderr: 'pipe',
  });
  const stderr: string[] = [];
  transport.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  const client = new Client({name: 'toolcell-e2e', version: '1.0.0'},
    options.era === 'modern' ? {versionNegotiation: {mode: {pin: '2026-07-28'}}} : {});
  await client.connect(transport);
  return {
    client,
    transport,
    stderr: () => stderr.join(''),
    /** PID of the server process. */
    pid: () => transport.pid ?? undefined,
    close: async () => {
      await client.close().catch(() => {});
    },
  };
}

/** PIDs of the direct children of `pid` (e.g. the isolate worker of a server). */
export function childPids(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], {encoding: 'utf8'}).split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  } catch {
    return [];
  }
}

/** The `toolcell/error` code of a result, if any. */
export const errorCode = (result: unknown): string | undefined =>
  ((result as {_meta?: Record<string, {code?: string}>})._meta?.['toolcell/error'])?.code;

/** The concatenated text content of a result. */
export const textOf = (result: unknown): string =>
  ((result as {content?: {type: string; text?: string}[]}).content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('');
