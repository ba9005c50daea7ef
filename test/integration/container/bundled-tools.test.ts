// The bundled container tools on real input, as their manifests and profiles define them:
// python__run (statistics over a CSV on stdin), shell__run (rg/grep over a read-only mounted
// workspace), json__query (a jq filter over a JSON document on stdin).
import assert from 'node:assert/strict';
import {chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import type {ContainerJob} from '../../../src/backends/backend.ts';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {resolveCommands} from '../../../src/backends/container/resolve-commands.ts';
import {authorizeArgv, buildArgv} from '../../../src/policy/command.ts';
import {ContainerProfile} from '../../../src/policy/profile-schema.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {assertHealthy, docker, dockerAvailable, noSignal} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});
const repo = new URL('../../../', import.meta.url).pathname;

interface Entry {image: string; command: string[]; stdin?: string; workdir?: string; env?: Record<string, string>}
function tool(pkg: string, name: string): {entry: Entry; profile: ContainerProfile} {
  const manifest = JSON.parse(readFileSync(join(repo, 'tools', pkg, 'toolcell.json'), 'utf8')) as {tools: Array<{name: string; profile: string; container: Entry}>};
  const t = manifest.tools.find((x) => x.name === name)!;
  const profile = ContainerProfile.parse(JSON.parse(readFileSync(join(repo, 'profiles', `${t.profile}.json`), 'utf8')));
  return {entry: t.container, profile};
}

describe('bundled container tools', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  let workspace: string;
  let outside: string;
  before(() => {
    backend = new ContainerBackend();
    workspace = mkdtempSync(join(tmpdir(), 'toolcell-ws-'));
    chmodSync(workspace, 0o755); // the tool runs as uid 65534: the workspace must be readable by others
    outside = mkdtempSync(join(tmpdir(), 'toolcell-outside-'));
    mkdirSync(join(workspace, 'src'));
    writeFileSync(join(workspace, 'src', 'a.py'), 'def f():\n    return 1  # TODO: generalise\n');
    writeFileSync(join(workspace, 'src', 'b.txt'), 'nothing here\nTODO: write docs\n');
    writeFileSync(join(workspace, 'README.md'), '# demo\n');
    writeFileSync(join(outside, 'secret'), 'host secret');
    symlinkSync(join(outside, 'secret'), join(workspace, 'link-out'));
  });
  after(async () => {
    await backend.close();
    rmSync(workspace, {recursive: true, force: true});
    rmSync(outside, {recursive: true, force: true});
  });

  /** Builds the job the way policy does: placeholders, allowlist, the profile's limits and grants. */
  async function call(pkg: string, name: string, args: Record<string, unknown>): Promise<Awaited<ReturnType<ContainerBackend['run']>>> {
    const {entry, profile} = tool(pkg, name);
    const commands = await resolveCommands(docker, entry.image, profile.commands);
    const argv = authorizeArgv(buildArgv(entry.command, args), commands, profile.name);
    const field = entry.stdin?.slice(2, -2);
    const stdinValue = entry.stdin === 'json' ? JSON.stringify(args) : field === undefined ? undefined : args[field];
    const job: ContainerJob = {
      kind: 'container', id: `${pkg}-${name}-${Date.now()}`, image: entry.image, argv,
      ...(stdinValue === undefined ? {} : {stdin: typeof stdinValue === 'string' ? stdinValue : JSON.stringify(stdinValue)}),
      limits: {...profile.limits}, network: profile.network, readOnlyRoot: profile.filesystem.readOnlyRoot,
      tmpfs: {...profile.filesystem.tmpfs},
      mounts: profile.filesystem.mounts.map((m) => ({source: m.source.replace('${workspace}', workspace), target: m.target, readOnly: m.readOnly})),
      runtime: profile.runtime, profile: profile.name,
      ...(entry.workdir ? {workdir: entry.workdir} : {}), ...(entry.env ? {env: entry.env} : {}),
    };
    return backend.run(job, {signal: noSignal()});
  }

  test('python__run computes statistics over a CSV given on stdin', async () => {
    const csv = 'city,temp\nOslo,4.5\nRome,18.25\nCairo,29\nLima,19\n';
    const r = await call('python', 'run', {
      code: 'import csv, statistics, sys\nrows = list(csv.DictReader(sys.stdin))\nt = [float(r["temp"]) for r in rows]\n'
        + 'print(len(rows), statistics.mean(t), statistics.median(t), max(rows, key=lambda r: float(r["temp"]))["city"])',
      stdin: csv,
    });
    assert.equal(r.failed, false, r.stderr);
    assert.equal(r.stdout, '4 17.6875 18.625 Cairo\n');
  });

  test('python__run without stdin reads an empty stdin', async () => {
    const r = await call('python', 'run', {code: 'import sys; print(repr(sys.stdin.read()))'});
    assert.equal(r.stdout, "''\n");
  });

  test('shell__run greps a real mounted folder (rg and grep)', async () => {
    const rg = await call('shell', 'run', {command: 'rg', args: ['-n', '--sort', 'path', 'TODO', '.']});
    assert.equal(rg.failed, false, rg.stderr);
    assert.equal(rg.stdout, './src/a.py:2:    return 1  # TODO: generalise\n./src/b.txt:2:TODO: write docs\n');
    const grep = await call('shell', 'run', {command: 'grep', args: ['-rlc', 'TODO', 'src']});
    assert.deepEqual(grep.stdout.trim().split('\n').sort(), ['src/a.py', 'src/b.txt']);
    const wc = await call('shell', 'run', {command: 'wc', args: ['-l', 'README.md']});
    assert.equal(wc.stdout, '1 README.md\n');
  });

  test('shell__run cannot write the workspace (read-only mount)', async () => {
    const r = await call('shell', 'run', {command: 'sed', args: ['-i', 's/demo/pwned/', 'README.md']});
    assert.equal(r.failed, true);
    assert.match(r.stderr, /Read-only file system|Permission denied/);
    assert.equal(readFileSync(join(workspace, 'README.md'), 'utf8'), '# demo\n');
  });

  test('shell__run: a symlink in the workspace pointing outside it resolves inside the container, not on the host', async () => {
    const r = await call('shell', 'run', {command: 'cat', args: ['link-out']});
    assert.equal(r.failed, true);
    assert.doesNotMatch(r.stdout, /host secret/);
  });

  test('shell__run: a command outside the allowlist is DENIED before any container starts', () => {
    const {entry, profile} = tool('shell', 'run');
    assert.throws(() => authorizeArgv(buildArgv(entry.command, {command: 'sh', args: ['-c', 'id']}), new Map([['ls', '/usr/bin/ls']]), profile.name),
      (e: unknown) => e instanceof ToolcellError && e.code === 'DENIED');
  });

  test('json__query filters a real JSON document', async () => {
    const document = {items: [{name: 'pen', price: 2}, {name: 'lamp', price: 30}, {name: 'desk', price: 120}]};
    const r = await call('json', 'query', {filter: '.items[] | select(.price > 10) | .name', document, options: ['--raw-output']});
    assert.equal(r.failed, false, r.stderr);
    assert.equal(r.stdout, 'lamp\ndesk\n');
    const c = await call('json', 'query', {filter: '[.items[].price] | add', document});
    assert.equal(c.stdout, '152\n');
    const text = await call('json', 'query', {filter: '.items | length', document: JSON.stringify(document)});
    assert.equal(text.stdout, '3\n', 'a string document is JSON text');
  });

  test('json__query: a filter that does not compile is a failed call with jq\'s message', async () => {
    const r = await call('json', 'query', {filter: '.items[', document: {}});
    assert.equal(r.failed, true);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /error/i);
    await assertHealthy(backend);
  });
});
