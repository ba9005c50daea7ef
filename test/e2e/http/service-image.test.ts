/**
 * The service image (top-level Dockerfile): builds on this machine from the local base image
 * (no registry), runs as a non-root user, serves an isolate tool over Streamable HTTP to an
 * SDK client on loopback, and stops gracefully (exit 0) on `docker stop` (SIGTERM).
 * Without a Docker engine: skipped with one loud line locally, a failure when CI is set.
 */
import assert from 'node:assert/strict';
import {execFile, execFileSync} from 'node:child_process';
import {chmodSync, existsSync, readdirSync, readFileSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {promisify} from 'node:util';
import {test} from 'node:test';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {dockerAvailable} from '../../support/docker.ts';
import {connectHttp, KEYS, REPO, until, writeFixtures} from './support.ts';

const run = promisify(execFile);
const IMAGE = process.env.TOOLCELL_SERVICE_IMAGE ?? 'toolcell/service:test';
const BASE = process.env.TOOLCELL_BASE_IMAGE ?? 'toolcell/base';

// Without an engine or the base image: one loud line and a skip locally; with CI set, this throws
// and the file fails (test/support/docker.ts).
const ready = await dockerAvailable({images: [BASE]});
const skip = ready ? false : `SKIPPED: no Docker engine or no ${BASE} image (see the line above)`;

/** Extra CA certificates the build needs to reach the npm registry (TLS-intercepting egress), as PEM text. */
function extraCaCerts(): string {
  const file = process.env.TOOLCELL_BUILD_CA_FILE;
  if (file) return readFileSync(file, 'utf8');
  const dir = '/usr/local/share/ca-certificates';
  if (!existsSync(dir)) return '';
  return readdirSync(dir).filter((f) => f.endsWith('.crt')).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
}

test('the service image builds, runs non-root, serves a tool over HTTP and stops with exit 0', {skip, timeout: 1_800_000}, async () => {
  const ca = extraCaCerts();
  await run('docker', ['build', '--build-arg', `BASE=${BASE}`, ...(ca ? ['--build-arg', `EXTRA_CA_CERTS=${ca}`] : []), '-t', IMAGE, REPO],
    {maxBuffer: 64 * 2 ** 20, timeout: 1_500_000});

  const fixtures = await writeFixtures();
  const name = `toolcell-service-test-${process.pid}-${Date.now()}`;
  try {
    const config = join(fixtures.dir, 'config.json');
    writeFileSync(config, JSON.stringify({
      apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}],
      grants: [{principal: 'key:alice', packages: ['fixture']}],
      shutdown: {drainMs: 5000},
      // Bound to 0.0.0.0 inside the container, reached through a loopback port mapping: the test is the proxy.
      tls: {terminatedBy: 'proxy'},
    }));
    execFileSync('chmod', ['-R', 'a+rX', fixtures.dir]);
    chmodSync(config, 0o644);
    await run('docker', ['run', '-d', '--name', name, '-p', '127.0.0.1::8080',
      '-v', `${fixtures.dir}:/fixtures:ro`, '-v', `${config}:/etc/toolcell/config.json:ro`,
      IMAGE, 'serve', '--http', '0.0.0.0:8080', '--config', '/etc/toolcell/config.json',
      '--tools', '/fixtures/tools', '--profiles', '/fixtures/profiles', '--no-containers']);
    const port = (await run('docker', ['port', name, '8080/tcp'])).stdout.trim().split('\n')[0]!.split(':').pop();
    const origin = `http://127.0.0.1:${port}`;
    await until(async () => (await fetch(`${origin}/healthz`).catch(() => undefined))?.status === 200, 60_000, 'the service to answer /healthz');
    assert.equal((await run('docker', ['exec', name, 'id', '-u'])).stdout.trim(), '10001', 'the service runs as uid 10001, not root');
    // isolated-vm was rebuilt with every patch in patches/ (build/Release loads before any prebuild).
    const record = JSON.parse((await run('docker', ['exec', name, 'cat', '/app/node_modules/isolated-vm/build/toolcell-patches.json'])).stdout) as {patches?: Array<{name?: string}>};
    assert.deepEqual((record.patches ?? []).map((p) => p.name).sort(), readdirSync(join(REPO, 'patches')).filter((f) => f.endsWith('.patch')).sort(),
      'the service image runs isolated-vm built with toolcell\'s patches');
    await run('docker', ['exec', name, 'test', '-f', '/app/node_modules/isolated-vm/build/Release/isolated_vm.node']);

    const noKey = await fetch(`${origin}/mcp`, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'});
    assert.equal(noKey.status, 401, 'bound to 0.0.0.0 inside the container: authentication is on');
    await noKey.text();
    for (const era of ['legacy', 'modern'] as const) {
      const {client, close} = await connectHttp(`${origin}/mcp`, {token: KEYS.alice, era});
      try {
        assert.deepEqual((await client.callTool({name: 'fixture__double', arguments: {x: 21}})).content, [{type: 'text', text: '42'}]);
      } finally {
        await close();
      }
    }
    const ready = await fetch(`${origin}/readyz`);
    assert.equal(ready.status, 200, await ready.text());

    await run('docker', ['stop', '-t', '30', name], {timeout: 60_000});
    const exitCode = (await run('docker', ['inspect', '-f', '{{.State.ExitCode}}', name])).stdout.trim();
    const logs = await run('docker', ['logs', name]).then((r) => r.stdout + r.stderr);
    assert.equal(exitCode, '0', logs);
    assert.match(logs, /SIGTERM: shutting down/);
    assert.match(logs, /toolcell: stopped/);
  } finally {
    await run('docker', ['rm', '-f', name]).catch(() => {});
    await fixtures.dispose();
  }
});
