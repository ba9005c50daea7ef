/**
 * Red team (issue 12): a neighbour without credentials opened TCP connections that never sent a
 * byte (or one TLS handshake byte); Node's headersTimeout starts only at the first byte and
 * there was no maxConnections, so 1100 idle sockets exhausted the file descriptors and took
 * /healthz down for every tenant. Now each connection must complete its first request's headers
 * within connections.firstRequestMs, one source address holds at most
 * connections.maxPerAddress connections, and the service keeps answering others meanwhile.
 */
// invariant: http:connections:idle-bounded
import assert from 'node:assert/strict';
import {request as httpRequest} from 'node:http';
import {connect, type Socket} from 'node:net';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {fakeRuntime, KEYS, modernCall, startService, writeFixtures} from '../../e2e/http/support.ts';
import {testCa} from '../../support/test-ca.ts';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let service: HttpService;
const FIRST_REQUEST_MS = 3000;
const PER_ADDRESS = 20;
const sockets: Socket[] = [];

before(async () => {
  fixtures = await writeFixtures();
  const env = await fakeRuntime(fixtures);
  service = await startService(env.runtime, {
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}], grants: [{principal: 'key:alice', packages: ['fixture']}],
    connections: {firstRequestMs: FIRST_REQUEST_MS, maxPerAddress: PER_ADDRESS, max: 200},
  });
});

after(async () => {
  for (const s of sockets) s.destroy();
  await service?.shutdown({drainMs: 0});
  await fixtures?.dispose();
});

/** Opens an idle connection from `localAddress` (sends nothing, or `first`); resolves how long until the server closed it (ms), or -1 after `deadlineMs`. */
function idle(localAddress: string, first: string | undefined, deadlineMs: number, port = service.port): Promise<number> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect({host: '127.0.0.1', port, localAddress});
    sockets.push(socket);
    let done = false;
    const finish = (ms: number) => {
      if (done) return;
      done = true;
      clearTimeout(hazard);
      socket.destroy();
      resolve(ms);
    };
    const hazard = setTimeout(() => finish(-1), deadlineMs);
    socket.on('connect', () => {
      if (first !== undefined) socket.write(first);
    });
    socket.on('data', () => finish(-2)); // the server must answer nothing
    socket.on('error', () => finish(Date.now() - started));
    socket.on('close', () => finish(Date.now() - started));
  });
}

/** A request over node:http from `localAddress` (a loopback address the attacker does not use), with its own 10 s deadline. */
function ask(localAddress: string, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{status: number; text: string}> {
  return new Promise((resolve) => {
    const req = httpRequest({host: '127.0.0.1', port: service.port, localAddress, method, path, agent: false, timeout: 10_000,
      headers: {Host: `127.0.0.1:${service.port}`, ...headers}}, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({status: res.statusCode ?? 0, text}));
      res.on('error', () => resolve({status: 0, text}));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({status: 0, text: ''}));
    req.end(body);
  });
}

test('idle connections (silent, one byte, half a request line) are closed unanswered within firstRequestMs; one address holds at most maxPerAddress; /healthz and a tool call still answer', async () => {
  const attacker = '127.0.0.3';
  // 3x the per-address cap, in three flavours: nothing, one byte of a request, an unfinished request line.
  const flavours = [undefined, 'G', 'GET /healthz HT'];
  const attacks = Array.from({length: 3 * PER_ADDRESS}, (_, i) => idle(attacker, flavours[i % 3], FIRST_REQUEST_MS + 8000));
  await new Promise((resolve) => setTimeout(resolve, 300));
  // During the attack another address gets its answers.
  const health = await ask('127.0.0.2', 'GET', '/healthz');
  assert.equal(health.status, 200, 'healthz answers during the attack');
  const call = modernCall('fixture__double', {x: 21});
  const called = await ask('127.0.0.2', 'POST', '/mcp', JSON.stringify(call.body), {
    'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', Authorization: `Bearer ${KEYS.alice}`, ...call.headers,
  });
  assert.equal(called.status, 200, `authenticated tool call answers during the attack: ${called.text.slice(0, 200)}`);
  assert.match(called.text, /42/);
  const closedAfter = await Promise.all(attacks);
  assert.ok(!closedAfter.includes(-2), 'the server answered an idle connection');
  assert.ok(!closedAfter.includes(-1), `every idle connection is closed by the server: ${closedAfter.filter((t) => t === -1).length} still open`);
  // Those over the per-address cap are closed at once; the rest at the deadline (loose upper bound for a busy host).
  const early = closedAfter.filter((t) => t < FIRST_REQUEST_MS - 200).length;
  assert.ok(early >= 2 * PER_ADDRESS, `at least ${2 * PER_ADDRESS} connections over the per-address cap closed at once (got ${early})`);
  assert.ok(Math.max(...closedAfter) < FIRST_REQUEST_MS + 6000, `closed within the deadline (max ${Math.max(...closedAfter)} ms)`);
  // After the attack, the server still answers the attacker's address too.
  assert.equal((await ask(attacker, 'GET', '/healthz')).status, 200);
});

test('a keep-alive connection left idle after its request is closed after keepAliveMs', async () => {
  const socket = connect({host: '127.0.0.1', port: service.port, localAddress: '127.0.0.4'});
  sockets.push(socket);
  const closed = await new Promise<number>((resolve) => {
    const hazard = setTimeout(() => resolve(-1), 15_000);
    let started = 0;
    socket.on('connect', () => socket.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${service.port}\r\n\r\n`));
    socket.on('data', () => (started ||= Date.now()));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(hazard);
      resolve(started === 0 ? -2 : Date.now() - started);
    });
  });
  socket.destroy();
  assert.ok(closed >= 0, `the server answered and then closed the idle keep-alive connection (${closed})`);
  assert.ok(closed < 12_000, `closed ${closed} ms after the answer (keepAliveMs 5000 by default)`);
});

test('HTTPS: silent connections and one TLS handshake byte are closed unanswered within firstRequestMs', async () => {
  const ca = testCa();
  const leaf = ca.issue();
  const cert = join(fixtures.dir, 'idle.pem');
  const key = join(fixtures.dir, 'idle.key');
  writeFileSync(cert, leaf.cert);
  writeFileSync(key, leaf.key, {mode: 0o600});
  const env = await fakeRuntime(fixtures);
  const tlsService = await startService(env.runtime, {tls: {cert, key}, connections: {firstRequestMs: FIRST_REQUEST_MS}});
  try {
    const closedAfter = await Promise.all(Array.from({length: 10}, (_, i) => idle('127.0.0.5', i % 2 === 0 ? undefined : '\x16', FIRST_REQUEST_MS + 8000, tlsService.port)));
    assert.ok(!closedAfter.includes(-2), 'the server answered an idle connection');
    assert.ok(!closedAfter.includes(-1), 'every idle TLS connection is closed by the server');
    assert.ok(Math.max(...closedAfter) < FIRST_REQUEST_MS + 6000, `closed within the deadline (max ${Math.max(...closedAfter)} ms)`);
  } finally {
    await tlsService.shutdown({drainMs: 0});
    ca.dispose();
  }
});
