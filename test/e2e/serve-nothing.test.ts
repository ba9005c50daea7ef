import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {hashApiKey} from '../../src/policy/service-config.ts';
import {CLI} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';
import {spawnCli} from './http/support.ts';

/**
 * A server never silently serves nothing (issue 14, point 5): a `--tools` directory that is not
 * there, every package rejected, or every tool left out is exit 2 with the reason; over HTTP, a
 * principal that can call no tool is warned about in one line, and a config under which nobody
 * can call anything is exit 2.
 */
function serve(args: string[], deadlineMs = 60_000) {
  return new Promise<{code: number | null; stderr: string}>((resolve, reject) => {
    // stdin is /dev/null: a stdio server that did start ends at once on EOF (exit 0).
    const child = spawn(process.execPath, ['--no-node-snapshot', CLI, 'serve', '--audit-log', 'off', ...args],
      {stdio: ['ignore', 'ignore', 'pipe'], env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}});
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve ${args.join(' ')}: no exit within ${deadlineMs} ms; stderr:\n${stderr}`));
    }, deadlineMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({code, stderr});
    });
  });
}

let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir();
  await dir.write('rejected/bad/toolcell.json', {name: 'bad', version: '1.0.0', tools: [{name: 'x', description: 'x', profile: 'no-such-profile', inputSchema: {type: 'object'}, isolate: {entry: 'x.js'}}]});
  await dir.write('empty/README.txt', 'no package here');
  await dir.write('containers/py/toolcell.json', {name: 'py', version: '1.0.0', tools: [{name: 'run', description: 'x', profile: 'python-offline', inputSchema: {type: 'object'},
    container: {image: 'toolcell/python', command: ['python3', '-c', 'print(1)']}}]});
  await dir.write('keys-no-grants.json', {apiKeys: [{name: 'alice', sha256: hashApiKey('a'.repeat(43))}]});
  await dir.write('one-key-without-grant.json', {apiKeys: [{name: 'alice', sha256: hashApiKey('a'.repeat(43))}, {name: 'bob', sha256: hashApiKey('b'.repeat(43))}],
    grants: [{principal: 'key:alice', packages: ['text']}]});
  await dir.write('grants-unserved.json', {apiKeys: [{name: 'alice', sha256: hashApiKey('a'.repeat(43))}], grants: [{principal: 'key:alice', packages: ['python']}]});
});
after(() => dir.dispose());

test('serve --tools DIR that does not exist is exit 2 naming it (stdio and HTTP)', async () => {
  const missing = join(dir.path, 'no-such-dir');
  for (const transport of [[], ['--http', '127.0.0.1:0']]) {
    const {code, stderr} = await serve([...transport, '--tools', missing]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^toolcell: --tools: ".*no-such-dir" cannot be read \(ENOENT\)/m);
  }
});

test('every package rejected, no package found, or every tool left out: exit 2 with the reason', async () => {
  const rejected = await serve(['--no-bundled-tools', '--tools', join(dir.path, 'rejected')]);
  assert.equal(rejected.code, 2);
  // The rejection is one log line (JSON: stderr is not a terminal), naming the package and the reason.
  assert.match(rejected.stderr, /"package":"bad".*"msg":"package rejected: tool \\"x\\": names unknown profile \\"no-such-profile\\"/);
  assert.match(rejected.stderr, /^toolcell: serve: nothing to serve: no tool loaded; 1 package\(s\) rejected \(see above\)$/m);
  const empty = await serve(['--no-bundled-tools', '--tools', join(dir.path, 'empty')]);
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /--tools .*empty holds no tool package/);
  assert.match(empty.stderr, /nothing to serve: no tool loaded \(no tool package found in the tool directories\)/);
  const off = await serve(['--no-bundled-tools', '--tools', join(dir.path, 'containers'), '--no-containers', '--http', '127.0.0.1:0']);
  assert.equal(off.code, 2);
  assert.match(off.stderr, /nothing to serve: every loaded tool \(1\) is left out: container tools are turned off \(--no-containers\)/);
});

test('with tools to serve, stdio serve still starts (and ends on EOF with exit 0)', async () => {
  const {code, stderr} = await serve(['--tools', join(dir.path, 'empty'), '--no-containers']);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /--tools .*empty holds no tool package/, 'the empty directory is still named');
});

test('HTTP: API keys without grants: nobody can call anything, exit 2; grants only for unserved packages likewise', async () => {
  for (const config of ['keys-no-grants.json', 'grants-unserved.json']) {
    const {code, stderr} = await serve(['--http', '127.0.0.1:0', '--no-containers', '--config', join(dir.path, config)]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^toolcell: warning: API key principal key:alice (has no grant|is granted only packages that are not served \(python\))/m);
    assert.match(stderr, /grants: no principal can call any served tool/);
  }
});

test('HTTP: one line per principal without a grant, and the service still serves the others', async () => {
  const server = await spawnCli(['--http', '127.0.0.1:0', '--no-containers', '--audit-log', 'off', '--config', join(dir.path, 'one-key-without-grant.json')]);
  try {
    const warnings = server.stderr().split('\n').filter((l) => l.includes('warning:'));
    assert.deepEqual(warnings, ['toolcell: warning: API key principal key:bob has no grant: it can list and call no tool (add {"principal": "key:bob", "packages": [...]} to "grants")']);
  } finally {
    server.child.kill('SIGTERM');
    const timer = setTimeout(() => server.child.kill('SIGKILL'), 15_000);
    await server.exited;
    clearTimeout(timer);
  }
});
