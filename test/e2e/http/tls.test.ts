/**
 * HTTPS served by the service itself (config `tls.cert`/`tls.key`), with a throwaway test CA:
 * a real MCP client over HTTPS; a certificate swap (reloadTls / SIGHUP) while a call is in flight
 * keeps that call and serves the new certificate on new connections; a bad new pair is refused
 * and the old one kept; and the CLI's refusal to bind a non-loopback address without TLS.
 */
import assert from 'node:assert/strict';
import {copyFileSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import tls from 'node:tls';
import {MemoryAuditSink} from '../../../src/audit/audit-log.ts';
import type {Backend, IsolateJob} from '../../../src/backends/backend.ts';
import {Dispatcher} from '../../../src/dispatch/dispatcher.ts';
import {loadPackages} from '../../../src/policy/load-packages.ts';
import {loadProfiles} from '../../../src/policy/load-profiles.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {testCa, type TestCa} from '../../support/test-ca.ts';
import {connectHttp, errorCode, fakeIsolateBackend, KEYS, spawnCli, startService, until, writeFixtures, type FakeBackendState, type Fixtures} from './support.ts';
import type {ServiceRuntime} from '../../../src/frontend/http/serve-http.ts';

const fixtures = {} as Fixtures;
let ca: TestCa;

before(async () => {
  Object.assign(fixtures, await writeFixtures());
  ca = testCa();
  // This test file runs in its own process: trusting the test CA here reaches fetch (undici), so the SDK client.
  tls.setDefaultCACertificates([...tls.getCACertificates('default'), ca.root]);
  // A package whose one tool (`slow__wait`, 30 s limit) the gated backend holds until the test releases it.
  const {mkdirSync} = await import('node:fs');
  writeFileSync(join(fixtures.profileDir, 'fixture-long.json'), JSON.stringify({name: 'fixture-long', backend: 'isolate', limits: {timeoutMs: 30_000, memoryMb: 32, outputBytes: 65536}}));
  mkdirSync(join(fixtures.toolDir, 'slow'));
  writeFileSync(join(fixtures.toolDir, 'slow/toolcell.json'), JSON.stringify({
    name: 'slow', version: '1.0.0',
    tools: [{name: 'wait', description: 'Returns text once released.', profile: 'fixture-long', isolate: {entry: 'echo.js'},
      inputSchema: {type: 'object', properties: {text: {type: 'string'}}, required: ['text'], additionalProperties: false}}],
  }));
  copyFileSync(join(fixtures.toolDir, 'fixture/echo.js'), join(fixtures.toolDir, 'slow/echo.js'));
});
after(async () => {
  ca?.dispose();
  await fixtures.dispose?.();
});

/** Writes a fresh leaf pair to `name`.pem / `name`.key (key mode 0600) and returns its paths and fingerprint. */
function writePair(name: string): {cert: string; key: string; fingerprint256: string} {
  const leaf = ca.issue();
  const cert = join(fixtures.dir, `${name}.pem`);
  const key = join(fixtures.dir, `${name}.key`);
  writeFileSync(cert, leaf.cert);
  writeFileSync(key, leaf.key, {mode: 0o600});
  return {cert, key, fingerprint256: leaf.fingerprint256};
}

/** Opens a new TLS connection (trusting only the test CA) and returns the fingerprint of the certificate the server presented. Deadline 10 s. */
function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({host: '127.0.0.1', port, ca: [ca.root]});
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no TLS handshake within 10 s'));
    }, 10_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.end();
      resolve(fingerprint);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The fake runtime of `support.ts`, with `slow__wait` held by a gate. */
async function gatedRuntime(): Promise<{runtime: ServiceRuntime; state: FakeBackendState; held: () => number; release: () => void}> {
  const profiles = await loadProfiles([fixtures.profileDir]);
  const loaded = await loadPackages([fixtures.toolDir], profiles);
  assert.deepEqual(loaded.rejected, []);
  const {backend, state} = fakeIsolateBackend();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let held = 0;
  const gated: Backend<IsolateJob> = {
    ...backend,
    async run(job, options) {
      if (job.filename.endsWith('slow/echo.js')) {
        held++;
        await Promise.race([gate, new Promise((resolve) => options.signal.addEventListener('abort', resolve, {once: true}))]);
      }
      return backend.run(job, options);
    },
  };
  const dispatcher = new Dispatcher({isolate: gated}, {isolate: {concurrency: 16, maxQueued: 256}, container: {concurrency: 4, maxQueued: 64}, queueWaitMs: 30_000, graceMs: 400});
  const runtime: ServiceRuntime = {tools: loaded.tools, dispatcher, audit: new MemoryAuditSink(), containerGrants: new Map(), unavailable: [], close: () => dispatcher.close()};
  return {runtime, state, held: () => held, release};
}

// invariant: http:tls:reload-keeps-serving
test('HTTPS: a real MCP client calls a tool; a new certificate mid-call leaves the call to finish and serves new connections; a bad pair keeps the old one', {timeout: 60_000}, async () => {
  const first = writePair('live');
  const {runtime, held, release} = await gatedRuntime();
  const service = await startService(runtime, {tls: {cert: first.cert, key: first.key}});
  const clients: Array<{close: () => Promise<void>}> = [];
  try {
    assert.match(service.url, /^https:\/\/127\.0\.0\.1:\d+\/mcp$/);
    assert.equal(await presented(service.port), first.fingerprint256);
    const plain = await fetch(`http://127.0.0.1:${service.port}/healthz`).then((r) => r.status, () => 'refused');
    assert.notEqual(plain, 200, 'plain HTTP is not served on the HTTPS port');

    const {client, close} = await connectHttp(service.url, {era: 'modern'});
    clients.push({close});
    assert.deepEqual((await client.callTool({name: 'fixture__double', arguments: {x: 21}})).content, [{type: 'text', text: '42'}]);

    const slow = client.callTool({name: 'slow__wait', arguments: {text: 'made it'}}, {timeout: 30_000});
    await until(() => held() === 1, 10_000, 'the slow call to reach the backend');

    // Swap the files in place (what a cert manager does) and reload, while connections keep coming.
    const second = ca.issue();
    writeFileSync(first.cert, second.cert);
    writeFileSync(first.key, second.key, {mode: 0o600});
    const during = Promise.all([0, 1, 2, 3, 4].map(() => presented(service.port)));
    const outcome = await service.reloadTls();
    assert.deepEqual(outcome, {reloaded: true, fingerprint256: second.fingerprint256});
    for (const fingerprint of await during) assert.ok([first.fingerprint256, second.fingerprint256].includes(fingerprint), 'every connection during the reload was served');
    assert.equal(await presented(service.port), second.fingerprint256, 'a new connection sees the new certificate');

    release();
    const result = await slow;
    assert.equal(errorCode(result), undefined, JSON.stringify(result));
    assert.deepEqual(result.content, [{type: 'text', text: 'made it'}], 'the call in flight during the reload completed');

    // A bad new pair: a key of another certificate, then a key others can read. Both refused, the old pair stays.
    const stranger = ca.issue();
    writeFileSync(first.key, stranger.key, {mode: 0o600});
    const mismatch = await service.reloadTls();
    assert.equal(mismatch.reloaded, false);
    assert.match(mismatch.reloaded ? '' : mismatch.reason, /is not the private key of the certificate/);
    writeFileSync(first.key, second.key);
    const {chmodSync} = await import('node:fs');
    chmodSync(first.key, 0o644);
    const readable = await service.reloadTls();
    assert.match(readable.reloaded ? '' : readable.reason, /has mode 0644/);
    assert.equal(await presented(service.port), second.fingerprint256, 'the old (good) certificate is still served');
    const again = await connectHttp(service.url, {era: 'legacy'});
    clients.push(again);
    assert.deepEqual((await again.client.callTool({name: 'fixture__double', arguments: {x: 2}})).content, [{type: 'text', text: '4'}]);
  } finally {
    release();
    for (const c of clients) await c.close();
    await service.shutdown({drainMs: 0});
  }
});

test('without tls.cert the service has nothing to reload, and says so', {timeout: 30_000}, async () => {
  const {runtime} = await gatedRuntime();
  const service = await startService(runtime, {});
  try {
    assert.match(service.url, /^http:\/\//);
    assert.deepEqual(await service.reloadTls(), {reloaded: false, reason: 'no certificate configured (tls.cert/tls.key): nothing to reload'});
  } finally {
    await service.shutdown({drainMs: 0});
  }
});

test('start-up with an unusable key is refused before the socket is bound', {timeout: 30_000}, async () => {
  const pair = writePair('startup');
  const {chmodSync} = await import('node:fs');
  chmodSync(pair.key, 0o640);
  const {runtime} = await gatedRuntime();
  await assert.rejects(startService(runtime, {tls: {cert: pair.cert, key: pair.key}}), /tls\.key: .*has mode 0640/);
  await runtime.close?.();
});

// invariant: http:tls:reload-keeps-serving
test('CLI: SIGHUP reloads the certificate (a bad pair is refused, the process keeps serving); without TLS SIGHUP is not fatal', {timeout: 90_000}, async () => {
  const pair = writePair('cli');
  const config = join(fixtures.dir, 'tls-service.json');
  writeFileSync(config, JSON.stringify({tls: {cert: 'cli.pem', key: 'cli.key'}}));
  const server = await spawnCli(['--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers', '--config', config, '--audit-log', 'off']);
  const plain = await spawnCli(['--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers', '--audit-log', 'off']);
  try {
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+\/mcp$/);
    const port = Number(new URL(server.url).port);
    assert.equal(await presented(port), pair.fingerprint256);

    const next = ca.issue();
    writeFileSync(pair.cert, next.cert);
    writeFileSync(pair.key, next.key, {mode: 0o600});
    server.child.kill('SIGHUP');
    await until(() => server.stderr().includes(`SIGHUP: TLS certificate reloaded (sha256 ${next.fingerprint256})`), 15_000, 'the reload line');
    assert.equal(await presented(port), next.fingerprint256);

    writeFileSync(pair.key, ca.issue().key, {mode: 0o600});
    server.child.kill('SIGHUP');
    await until(() => /SIGHUP: TLS certificate not reloaded: tls\.key: .*is not the private key/.test(server.stderr()), 15_000, 'the refusal line');
    assert.equal(await presented(port), next.fingerprint256, 'the old certificate is kept');
    const {client, close} = await connectHttp(server.url);
    try {
      assert.deepEqual((await client.callTool({name: 'fixture__double', arguments: {x: 5}})).content, [{type: 'text', text: '10'}]);
    } finally {
      await close();
    }

    plain.child.kill('SIGHUP');
    await until(() => plain.stderr().includes('SIGHUP: TLS certificate not reloaded: no certificate configured'), 15_000, 'the no-TLS line');
    assert.equal((await fetch(plain.url.replace(/\/mcp$/, '/healthz'))).status, 200, 'SIGHUP did not stop a plain-HTTP server');
  } finally {
    for (const s of [server, plain]) {
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
      await s.exited;
    }
  }
});

// invariant: http:tls:required-off-loopback
test('CLI: binding 0.0.0.0 with authentication but without TLS (or the proxy statement) is refused: exit 2, both options named', {timeout: 30_000}, async () => {
  const config = join(fixtures.dir, 'no-tls.json');
  writeFileSync(config, JSON.stringify({apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}], grants: [{principal: 'key:alice', packages: '*'}]}));
  const server = await spawnCli(['--http', '0.0.0.0:0', '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers', '--config', config], {expectUrl: false});
  const exit = await server.exited;
  assert.equal(exit.code, 2, server.stderr());
  assert.match(server.stderr(), /refusing to listen on 0\.0\.0\.0: .*requires TLS.*"tls": \{"cert": PATH, "key": PATH\}.*"tls": \{"terminatedBy": "proxy"\}/);
  assert.equal(server.url, '', 'never served');
});
