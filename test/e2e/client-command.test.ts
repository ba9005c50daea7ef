import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {PACKAGE_ROOT} from '../../src/paths.ts';
import {tempDir} from '../support/temp.ts';

/**
 * The command a user puts in an MCP client's configuration writes nothing but JSON-RPC lines on
 * stdout, and says on stderr when it is ready (issue 14, point 6): the README's client
 * configuration, run exactly as written (paths filled in) with the system's `node` first on PATH
 * as a desktop client would have it, and `npm --prefix DIR --silent start` (plain `npm start` prints npm's
 * own banner on stdout, which no package can turn off).
 */
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir();
});
after(() => dir.dispose());

/** The `command` and `args` of the README's client configuration (section "Use it from a desktop MCP client"). */
async function readmeClientCommand(): Promise<{command: string; args: string[]}> {
  const readme = await readFile(join(PACKAGE_ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Use it from a desktop MCP client'));
  const block = /```json\n([\s\S]*?)\n```/.exec(section);
  assert.ok(block, 'the section has a JSON client configuration');
  const server = (JSON.parse(block[1]!) as {mcpServers: Record<string, {command: string; args: string[]}>}).mcpServers.toolcell!;
  const fill = (arg: string) => arg.startsWith('/path/to/toolcell/') ? join(PACKAGE_ROOT, arg.slice('/path/to/toolcell/'.length))
    : arg.startsWith('/path/to/') ? join(dir.path, arg.slice('/path/to/'.length)) : arg;
  return {command: server.command, args: server.args.map(fill)};
}

/** Runs a stdio server command, sends initialize and tools/list, and returns what it wrote. Killed (its process group) at the deadline. */
function converse(command: string, args: string[], options: {cwd: string; env: Record<string, string | undefined>}, deadlineMs = 60_000) {
  return new Promise<{stdout: string; stderr: string; code: number | null}>((resolve, reject) => {
    const child = spawn(command, args, {cwd: options.cwd, env: options.env, detached: true, stdio: ['pipe', 'pipe', 'pipe']});
    let stdout = '';
    let stderr = '';
    const kill = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch { /* gone */ }
    };
    const timer = setTimeout(() => {
      kill();
      reject(new Error(`${command}: no answer to tools/list within ${deadlineMs} ms; stderr:\n${stderr}`));
    }, deadlineMs);
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      if (stdout.includes('"id":2')) child.stdin.end();
    });
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      kill();
      resolve({stdout, stderr, code});
    });
    const send = (m: object) => child.stdin.write(`${JSON.stringify(m)}\n`);
    send({jsonrpc: '2.0', id: 1, method: 'initialize', params: {protocolVersion: '2025-11-25', capabilities: {}, clientInfo: {name: 'client-command-test', version: '1'}}});
    send({jsonrpc: '2.0', method: 'notifications/initialized'});
    send({jsonrpc: '2.0', id: 2, method: 'tools/list'});
  });
}

/** Every stdout line is a JSON-RPC message; tools/list was answered; stderr has the one ready line naming as many tools. */
function assertProtocolOnly(run: {stdout: string; stderr: string; code: number | null}) {
  const lines = run.stdout.split('\n').filter((l) => l !== '');
  assert.ok(lines.length >= 2, `answers on stdout: ${run.stdout}`);
  for (const line of lines) {
    let message: {jsonrpc?: string};
    try {
      message = JSON.parse(line);
    } catch {
      assert.fail(`a stdout line that is not JSON-RPC: ${line}`);
    }
    assert.equal(message.jsonrpc, '2.0', line);
  }
  const list = lines.map((l) => JSON.parse(l) as {id?: number; result?: {tools: unknown[]}}).find((m) => m.id === 2);
  assert.ok(list?.result, 'tools/list answered');
  const ready = run.stderr.split('\n').filter((l) => /^toolcell: serving \d+ tools? over stdio$/.test(l));
  assert.equal(ready.length, 1, `one ready line on stderr:\n${run.stderr}`);
  assert.equal(Number(/serving (\d+)/.exec(ready[0]!)![1]), list.result.tools.length);
  assert.equal(run.code, 0, run.stderr);
}

test('the README\'s client configuration, run as written under the system node, writes only JSON-RPC on stdout and one ready line on stderr', async () => {
  const {command, args} = await readmeClientCommand();
  const env: Record<string, string | undefined> = {...process.env, PATH: SYSTEM_PATH, TOOLCELL_LOG_LEVEL: 'info'};
  delete env.TOOLCELL_REEXEC;
  assertProtocolOnly(await converse(command, args, {cwd: dir.path, env}));
});

test('the README\'s npm form, npm --prefix DIR --silent start, writes only JSON-RPC on stdout', async () => {
  const readme = await readFile(join(PACKAGE_ROOT, 'README.md'), 'utf8');
  const written = /`"command": "npm", "args": (\[[^\]]*\])`/.exec(readme);
  assert.ok(written, 'the README names the npm form');
  const args = (JSON.parse(written[1]!) as string[]).map((a) => (a === '/path/to/toolcell' ? PACKAGE_ROOT : a));
  const env: Record<string, string | undefined> = {...process.env, TOOLCELL_LOG_LEVEL: 'info'};
  for (const key of Object.keys(env)) if (key.startsWith('npm_')) delete env[key];
  assertProtocolOnly(await converse('npm', args, {cwd: dir.path, env}));
});
