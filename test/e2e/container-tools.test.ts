import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {chmod} from 'node:fs/promises';
import {hostname} from 'node:os';
import {after, before, describe, test} from 'node:test';
import {dockerAvailable, leftAfter} from '../support/docker.ts';
import {connectStdio, errorCode, textOf} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

/**
 * The bundled container tools through a real MCP client over stdio: real programs on real
 * input, each call in a fresh hardened container. Skipped locally without Docker (one loud
 * line); fails in CI.
 */
const ready = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});

/** The `toolcell.job` label of each container that the toolcell server with PID `pid` on this host created (its owner label starts with host/pid/). */
function containersOfServer(pid: number): string[] {
  const out = execFileSync('docker', ['ps', '-a', '--filter', 'label=toolcell.managed=true', '--format', '{{.Label "toolcell.owner"}} {{.Label "toolcell.job"}}'], {encoding: 'utf8'}).trim();
  const prefix = `${hostname()}/${pid}/`;
  return out === '' ? [] : out.split('\n').filter((line) => line.startsWith(prefix)).map((line) => line.slice(line.indexOf(' ') + 1));
}

for (const pool of [0, 2]) describe(`bundled container tools over stdio, container pool ${pool}`, {skip: !ready && 'no Docker engine or sandbox images'}, () => {
  let workspace: Awaited<ReturnType<typeof tempDir>>;
  let server: Awaited<ReturnType<typeof connectStdio>>;
  let serverPid: number | undefined;

  before(async () => {
    workspace = await tempDir();
    await workspace.write('notes/todo.md', '# Plans\n- TODO: write tests\n- done: ship\n- TODO: benchmark\n');
    await workspace.write('src/main.py', 'print("hello")  # TODO: greet properly\n');
    await workspace.write('README.md', 'nothing to do here\n');
    // Tools run as uid 65534: the workspace must be world-readable (mkdtemp makes it 0700).
    await chmod(workspace.path, 0o755);
    server = await connectStdio(['--workspace', workspace.path, '--audit-log', 'off', '--container-pool', String(pool)]);
    serverPid = server.pid();
  });
  after(async () => {
    await server?.close();
    await workspace?.dispose();
    // The server removes its containers (pool members included) when its client goes away.
    for (let i = 0; i < 100 && serverPid !== undefined && containersOfServer(serverPid).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    if (serverPid !== undefined) assert.deepEqual(containersOfServer(serverPid), [], 'no container of this server is left after it stopped');
  });

  test('python__run computes statistics over a CSV given on stdin', async () => {
    const csv = 'city,temp\nOslo,4.5\nLima,19.0\nCairo,28.5\nQuito,14.0\n';
    const code = [
      'import csv, statistics, sys',
      'rows = list(csv.DictReader(sys.stdin))',
      'temps = [float(r["temp"]) for r in rows]',
      'print(f"n={len(temps)} mean={statistics.mean(temps):.2f} median={statistics.median(temps):.2f} max={max(rows, key=lambda r: float(r[\'temp\']))[\'city\']}")',
    ].join('\n');
    const result = await server.client.callTool({name: 'python__run', arguments: {code, stdin: csv}});
    assert.equal(result.isError, undefined, textOf(result));
    assert.equal(textOf(result).trim(), 'n=4 mean=16.50 median=16.50 max=Cairo');
    assert.equal((result._meta?.['toolcell/usage'] as {backend: string}).backend, 'container');
  });

  test('python__run: a failing program is TOOL_FAILED with the exit code and the stderr tail', async () => {
    const result = await server.client.callTool({name: 'python__run', arguments: {code: 'raise SystemExit("boom: bad input")'}});
    assert.equal(result.isError, true);
    assert.equal(errorCode(result), 'TOOL_FAILED');
    assert.match(textOf(result), /exited with code 1/);
    assert.match(textOf(result), /boom: bad input/);
  });

  test('shell__run greps the real mounted workspace, read-only', async () => {
    const result = await server.client.callTool({name: 'shell__run', arguments: {command: 'grep', args: ['-rn', 'TODO', '.']}});
    assert.equal(result.isError, undefined, textOf(result));
    const lines = textOf(result).trim().split('\n').sort();
    assert.deepEqual(lines, ['./notes/todo.md:2:- TODO: write tests', './notes/todo.md:4:- TODO: benchmark', './src/main.py:1:print("hello")  # TODO: greet properly']);
    const write = await server.client.callTool({name: 'shell__run', arguments: {command: 'sed', args: ['-i', 's/TODO/DONE/', 'notes/todo.md']}});
    assert.equal(write.isError, true, 'the workspace is mounted read-only');
  });

  test('shell__run: shell metacharacters are literal arguments, and a command outside the allowlist never runs', async () => {
    const literal = await server.client.callTool({name: 'shell__run', arguments: {command: 'ls', args: ['; cat /etc/shadow', '$(id)']}});
    assert.equal(literal.isError, true);
    assert.match(textOf(literal), /cannot access '; cat \/etc\/shadow'|No such file/);
    const denied = await server.client.callTool({name: 'shell__run', arguments: {command: 'curl', args: ['http://127.0.0.1']}});
    assert.equal(denied.isError, true);
    assert.equal(errorCode(denied), 'INVALID_ARGUMENTS', 'the schema enum refuses it before policy');
  });

  test('json__query filters a real JSON document with jq', async () => {
    const document = {items: [{name: 'pen', price: 2.5}, {name: 'lamp', price: 30}, {name: 'desk', price: 120}]};
    const result = await server.client.callTool({name: 'json__query', arguments: {filter: '[.items[] | select(.price > 10) | .name]', document, options: ['--compact-output']}});
    assert.equal(result.isError, undefined, textOf(result));
    assert.deepEqual(JSON.parse(textOf(result)), ['lamp', 'desk']);
  });

  test(pool > 0 ? 'the warm pool keeps started containers ready for these tools' : 'without a pool, no container waits ahead of demand', async () => {
    const members = () => containersOfServer(serverPid!).filter((job) => job === 'pool');
    for (let i = 0; i < 150 && pool > 0 && members().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    if (pool > 0) assert.ok(members().length > 0, 'pool members exist');
    else assert.equal(members().length, 0);
  });

  test('no container with our label is left behind by these calls', async () => {
    // This server's containers only (other test files run beside this one), polled with a
    // deadline: a removal may still be finishing just after its call's result returned.
    const exited = async () => {
      const out = execFileSync('docker', ['ps', '-a', '--filter', 'label=toolcell.managed=true', '--filter', 'status=exited', '--format', '{{.ID}} {{.Label "toolcell.owner"}}'], {encoding: 'utf8'}).trim();
      const prefix = `${hostname()}/${serverPid}/`;
      return out === '' ? [] : out.split('\n').filter((line) => line.slice(line.indexOf(' ') + 1).startsWith(prefix)).map((line) => line.slice(0, line.indexOf(' ')));
    };
    assert.deepEqual(await leftAfter(exited), []);
  });
});
