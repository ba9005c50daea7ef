import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {existsSync} from 'node:fs';
import {mkdir, readdir, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {PACKAGE_ROOT} from '../../src/paths.ts';
import {tempDir} from '../support/temp.ts';

/**
 * The packed tarball installed as a user installs it (issue 14, point 2), run by the system's
 * older Node: as a project dependency (npm hoists the `node` package out of toolcell's folder)
 * and globally into a prefix. The CLI must find Node 24 by Node's package resolution and re-run
 * itself on it. Slow (npm installs about 120 packages, from its cache when it can): one pack,
 * two installs. Needs the npm registry for what the cache lacks.
 */
const OLD_NODE = '/usr/bin/node';
const oldNodeMajor = async () => Number((await exec(OLD_NODE, ['-p', 'process.versions.node'], {cwd: PACKAGE_ROOT}, 10_000)).stdout.split('.')[0]);

/** PATH with the system's older node and npm only (no node_modules/.bin of this checkout). */
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Runs a command in its own process group; at the deadline the whole group is killed (npm starts children of its own). */
function exec(command: string, args: string[], options: {cwd: string; env?: Record<string, string>}, deadlineMs: number) {
  return new Promise<{code: number | null; stdout: string; stderr: string}>((resolve, reject) => {
    const env: Record<string, string | undefined> = {...process.env};
    delete env.TOOLCELL_REEXEC;
    // npm run sets these for the scripts it runs; the commands here must not inherit this checkout's npm context.
    for (const key of Object.keys(env)) if (key.startsWith('npm_') || key === 'NODE') delete env[key];
    Object.assign(env, {PATH, TOOLCELL_LOG_LEVEL: 'warn'}, options.env);
    const child = spawn(command, args, {cwd: options.cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe']});
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch { /* already gone */ }
      reject(new Error(`${command} ${args.join(' ')}: no exit within ${deadlineMs} ms\n${stderr.slice(-2000)}`));
    }, deadlineMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({code, stdout, stderr});
    });
  });
}

let dir: Awaited<ReturnType<typeof tempDir>>;
let tarball: string;
const npmFlags = ['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'];
const skip = !existsSync(OLD_NODE) && `no ${OLD_NODE}: nothing to show the re-run with`;

before(async () => {
  if (skip) return;
  dir = await tempDir('toolcell-install-');
  // --ignore-scripts: pack the dist/ that `npm test` built; a build here would rewrite dist/ under the other e2e tests.
  const pack = await exec('npm', ['pack', '--ignore-scripts', '--pack-destination', dir.path, ...npmFlags], {cwd: PACKAGE_ROOT}, 120_000);
  assert.equal(pack.code, 0, pack.stderr);
  const found = (await readdir(dir.path)).filter((f) => f.endsWith('.tgz'));
  assert.equal(found.length, 1, `one tarball: ${found.join(', ')}`);
  tarball = join(dir.path, found[0]!);
});
after(() => dir?.dispose());

test('installed as a project dependency, the bin and node_modules/toolcell/dist/cli.js run under the system Node by re-running on Node 24', {skip}, async (t) => {
  if (await oldNodeMajor() >= 24) t.diagnostic(`${OLD_NODE} is already Node 24: the re-run is not exercised`);
  const project = join(dir.path, 'project');
  await mkdir(project);
  await writeFile(join(project, 'package.json'), JSON.stringify({name: 'uses-toolcell', version: '1.0.0', private: true}));
  const install = await exec('npm', ['install', tarball, ...npmFlags], {cwd: project}, 300_000);
  assert.equal(install.code, 0, install.stderr);
  assert.ok(!existsSync(join(project, 'node_modules/toolcell/node_modules/node')), 'npm hoisted the node package (the case that broke)');
  const viaBin = await exec('./node_modules/.bin/toolcell', ['list', '--no-containers'], {cwd: project}, 60_000);
  assert.equal(viaBin.code, 0, viaBin.stderr);
  assert.match(viaBin.stdout, /text__word_count\s+\[isolate, profile isolate-strict\]/);
  const viaNode = await exec(OLD_NODE, ['node_modules/toolcell/dist/cli.js', 'list', '--no-containers'], {cwd: project}, 60_000);
  assert.equal(viaNode.code, 0, viaNode.stderr);
  assert.match(viaNode.stdout, /text__word_count/);
  // A real call: the re-run Node 24 loads isolated-vm's prebuilt binary and runs an isolate.
  const call = await exec(OLD_NODE, ['node_modules/toolcell/dist/cli.js', 'call', 'text__word_count', '--args', '{"text": "one two three"}', '--no-containers'], {cwd: project}, 60_000);
  assert.equal(call.code, 0, call.stderr);
  assert.match(JSON.stringify(JSON.parse(call.stdout).structuredContent), /"words":3/);
});

test('installed globally into a prefix, <prefix>/bin/toolcell runs under the system Node', {skip}, async () => {
  const prefix = join(dir.path, 'global');
  const install = await exec('npm', ['install', '--global', '--prefix', prefix, tarball, ...npmFlags], {cwd: dir.path}, 300_000);
  assert.equal(install.code, 0, install.stderr);
  const list = await exec(join(prefix, 'bin', 'toolcell'), ['list', '--no-containers'], {cwd: dir.path}, 60_000);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /text__word_count\s+\[isolate, profile isolate-strict\]/);
});

test('when no Node 24 can be found, the system Node prints what to do and exits 2 (no re-run loop)', {skip}, async (t) => {
  if (await oldNodeMajor() >= 24) return t.skip(`${OLD_NODE} is Node 24: nothing to refuse`);
  // TOOLCELL_REEXEC=1 is what a re-run that landed on a Node older than 24 sees.
  const r = await exec(OLD_NODE, [join(PACKAGE_ROOT, 'dist/cli.js'), 'list'], {cwd: dir.path, env: {TOOLCELL_REEXEC: '1'}}, 30_000);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^toolcell: Node\.js 24 is required \(this is v\d+\.[^)]*\).*Install Node 24 and put it first on PATH, or reinstall toolcell/);
  assert.equal(r.stdout, '');
});
