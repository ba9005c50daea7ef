import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {PACKAGE_ROOT} from '../../src/paths.ts';
import {runCli} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

/** `toolcell --version` and `toolcell profiles` (issue 14, point 7). */
const run = (args: string[]) => runCli(args);

let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir();
  await dir.write('profiles/rw-data.json', {name: 'rw-data', description: 'writes /data', backend: 'container',
    limits: {timeoutMs: 3000, memoryMb: 64, cpus: 0.25, pids: 8, outputBytes: 4096}, network: 'none',
    filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: [{source: '${workspace}/data', target: '/data', readOnly: false}]},
    commands: ['sh'], runtime: 'runsc'});
  await dir.write('bad/loose.json', {name: 'loose', backend: 'isolate', limits: {timeoutMs: 1000, memoryMb: 16, outputBytes: 10}, network: 'host'});
});
after(() => dir.dispose());

test('toolcell --version prints package.json\'s version and exits 0', async () => {
  const {version} = JSON.parse(await readFile(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {version: string};
  const r = await run(['--version']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, `${version}\n`);
});

test('toolcell profiles: each bundled profile with its backend and grants in words', async () => {
  const r = await run(['profiles']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^isolate-strict {2}\[isolate\]/m);
  assert.match(r.stdout, /^ {2}limits {6}timeout 2000 ms, CPU time 2000 ms, memory 32 MB \(V8 heap\), output 65536 bytes$/m);
  assert.match(r.stdout, /^shell-workspace {2}\[container\]/m);
  assert.match(r.stdout, /^ {2}filesystem {2}root read-only; tmpfs \/tmp 16m \(noexec\); mounts \$\{workspace\} at \/workspace \(read-only\)$/m);
  assert.match(r.stdout, /^ {2}commands {4}ls cat head tail wc sort uniq grep sed jq rg \(allowlist for argv\[0\]\)$/m);
  const headers = r.stdout.split('\n').filter((l) => /^[a-z][a-z0-9-]* {2}\[/.test(l)).length;
  assert.match(r.stdout, new RegExp(`^${headers} profile\\(s\\):$`, 'm'));
  for (const kind of ['limits', 'network', 'filesystem', 'commands', 'runtime']) {
    assert.equal(r.stdout.split('\n').filter((l) => l.startsWith(`  ${kind} `)).length, headers, `one ${kind} line per profile`);
  }
});

test('toolcell profiles --json, with --profiles adding to the bundled ones and --no-bundled-profiles leaving them out', async () => {
  const r = await run(['profiles', '--json', '--profiles', join(dir.path, 'profiles')]);
  assert.equal(r.code, 0, r.stderr);
  const {profiles} = JSON.parse(r.stdout) as {profiles: {name: string; backend: string; limits: object; grants: Record<string, string>}[]};
  assert.ok(profiles.some((p) => p.name === 'isolate-strict'));
  const mine = profiles.find((p) => p.name === 'rw-data')!;
  assert.equal(mine.backend, 'container');
  assert.deepEqual(mine.limits, {timeoutMs: 3000, memoryMb: 64, cpus: 0.25, pids: 8, outputBytes: 4096});
  assert.equal(mine.grants.filesystem, 'root read-only; tmpfs /tmp 8m (noexec); mounts ${workspace}/data at /data (read-write)');
  assert.match(mine.grants.runtime ?? '', /^runsc \(gVisor\)/);
  const only = JSON.parse((await run(['profiles', '--json', '--no-bundled-profiles', '--profiles', join(dir.path, 'profiles')])).stdout) as {profiles: {name: string}[]};
  assert.deepEqual(only.profiles.map((p) => p.name), ['rw-data']);
});

test('toolcell profiles with an invalid profile exits 2 naming the file and the field', async () => {
  const r = await run(['profiles', '--profiles', join(dir.path, 'bad')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /bad\/loose\.json: invalid profile: .*network/);
});
