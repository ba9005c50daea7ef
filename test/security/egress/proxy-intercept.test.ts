// TLS interception wired into the egress proxy: only hosts that carry a granted secret are
// intercepted (the sandbox sees a leaf of the egress CA there); every other allowed HTTPS host is
// tunnelled untouched (the sandbox sees the upstream's own certificate). Loopback servers only.
import assert from 'node:assert/strict';
import {Agent, request as httpRequest} from 'node:http';
import {createServer as createHttpsServer, type Server} from 'node:https';
import {connect} from 'node:net';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {connect as tlsConnect, type TLSSocket} from 'node:tls';
import type {AuditEgressV2} from '../../../src/audit/audit-event.ts';
import {EgressCa} from '../../../src/egress/ca.ts';
import {parseEgressGrant, type EgressLookup} from '../../../src/egress/policy.ts';
import {EgressProxy, type EgressSession} from '../../../src/egress/proxy.ts';
import type {SecretStore} from '../../../src/egress/secrets.ts';
import {TlsInterceptor} from '../../../src/egress/tls-intercept.ts';
import {closeServers, listenLoopback, writeSecretStore} from '../../support/egress.ts';
import {tempDir} from '../../support/temp.ts';

const VALUE = 'tc-proxy-credential-0f9e8d7c6b5a';
const API = 'api.toolcell.test';
const OTHER = 'other.toolcell.test';

let dir: Awaited<ReturnType<typeof tempDir>>;
let egressCa: EgressCa;
let publicCa: EgressCa;
let api: Server;
let other: Server;
let apiPort = 0;
let otherPort = 0;
let store: SecretStore;
let interceptor: TlsInterceptor;
const seen: Array<{server: string; authorization?: string; key?: string}> = [];

const lookup: EgressLookup = async (name) => {
  if (name === API || name === OTHER) return [{address: '127.0.0.1', family: 4}];
  throw Object.assign(new Error(`ENOTFOUND ${name}`), {code: 'ENOTFOUND'});
};

before(async () => {
  dir = await tempDir();
  egressCa = await EgressCa.open(join(dir.path, 'state', 'egress-ca'));
  publicCa = await EgressCa.open(join(dir.path, 'public-ca'));
  const apiLeaf = await publicCa.leaf(API);
  api = createHttpsServer({cert: apiLeaf.cert, key: apiLeaf.key}, (req, res) => {
    seen.push({server: 'api', authorization: req.headers.authorization});
    res.writeHead(req.headers.authorization === `Bearer ${VALUE}` ? 200 : 401, {'content-type': 'text/plain'});
    res.end(`api saw ${req.headers.authorization}`);
  });
  apiPort = await listenLoopback(api);
  const otherLeaf = await publicCa.leaf(OTHER);
  other = createHttpsServer({cert: otherLeaf.cert, key: otherLeaf.key}, (req, res) => {
    seen.push({server: 'other', key: String(req.headers['x-key'])});
    res.end('other');
  });
  otherPort = await listenLoopback(other);
  store = await writeSecretStore(dir, {API: {env: 'TC_PROXY_API', hosts: [`${API}:${apiPort}`], header: 'Authorization', format: 'Bearer {}'}}, {TC_PROXY_API: VALUE});
  interceptor = new TlsInterceptor({ca: egressCa, upstreamCa: publicCa.certPem});
});
after(async () => {
  interceptor?.close();
  closeServers([api, other]);
  await dir?.dispose();
});

/** CONNECT through the session's socket, then TLS (trusting the egress CA and the test's public CA), then one GET. */
async function viaProxy(session: EgressSession, host: string, port: number, headers: Record<string, string>): Promise<{status: number; body: string; issuer: string}> {
  const raw = connect(session.socketPath);
  raw.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  const reply = await new Promise<string>((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.includes('\r\n\r\n')) {
        raw.off('data', onData);
        resolve(text);
      }
    };
    raw.on('data', onData);
    raw.once('error', reject);
    setTimeout(() => reject(new Error('no CONNECT reply')), 10_000).unref();
  });
  assert.match(reply, /^HTTP\/1\.1 200/, reply);
  const tls: TLSSocket = tlsConnect({socket: raw, servername: host, ca: [egressCa.certPem, publicCa.certPem]});
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', () => resolve());
    tls.once('error', reject);
  });
  const issuer = tls.getPeerX509Certificate()?.issuer ?? '';
  // An agent whose only connection is the tunnel's TLS socket.
  const agent = new Agent();
  agent.createConnection = () => tls;
  return await new Promise((resolve, reject) => {
    const req = httpRequest({host, port, path: '/', headers: {host: `${host}:${port}`, ...headers}, agent, signal: AbortSignal.timeout(15_000)}, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        tls.destroy();
        resolve({status: res.statusCode ?? 0, body, issuer});
      });
    });
    req.on('error', reject);
    req.end();
  });
}

// invariant: egress:secret:placeholder-only-to-its-hosts
// invariant: egress:secret:never-in-output
test('only the secret\'s host is intercepted: the API gets the real credential, another allowed HTTPS host is tunnelled with its own certificate, and the audit names secrets, never values', async () => {
  const events: AuditEgressV2[] = [];
  const proxy = new EgressProxy({lookup, audit: (e) => events.push(e), intercept: interceptor.proxyHook()});
  const secrets = store.forCall(['API']);
  const grant = parseEgressGrant({allow: [`${API}:${apiPort}`, `127.0.0.1:${apiPort}`, `${OTHER}:${otherPort}`, `127.0.0.1:${otherPort}`], requestTimeoutMs: 5000});
  const session = await proxy.open({callId: 'call-1', principal: 'local', tool: 'gh__user', profile: 'gh-egress', grant, secrets});
  try {
    const ph = secrets.placeholders.API!;
    const intercepted = await viaProxy(session, API, apiPort, {authorization: `Bearer ${ph}`});
    assert.equal(intercepted.status, 200, intercepted.body);
    assert.equal(intercepted.body, `api saw Bearer ${ph}`, 'the sandbox sees only its placeholder');
    assert.equal(seen.at(-1)?.authorization, `Bearer ${VALUE}`, 'the API saw the real credential');
    assert.equal(intercepted.issuer, egressCa.certificate().subject, 'the secret host was intercepted (leaf of the egress CA)');

    const tunnelled = await viaProxy(session, OTHER, otherPort, {'x-key': 'plain'});
    assert.equal(tunnelled.body, 'other');
    assert.equal(tunnelled.issuer, publicCa.certificate().subject, 'another allowed host is tunnelled: the upstream\'s own certificate');
    assert.notEqual(tunnelled.issuer, egressCa.certificate().subject);

    const text = JSON.stringify(events);
    assert.ok(!text.includes(VALUE) && !text.includes(ph), 'no value and no placeholder in the audit events');
    const allowed = events.filter((e) => e.type === 'egress.allowed');
    assert.ok(allowed.some((e) => e.host === API && e.method === 'GET' && e.status === 200 && e.secrets?.[0] === 'API'), text);
    // The tunnel's event is written when the tunnel ends (the client closed it).
    const deadline = Date.now() + 10_000;
    while (!events.some((e) => e.host === OTHER && e.method === 'CONNECT') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(events.some((e) => e.type === 'egress.allowed' && e.host === OTHER && e.method === 'CONNECT'), JSON.stringify(events));
  } finally {
    await session.close();
    secrets.close();
    await proxy.close();
  }
});

test('through the proxy, a placeholder over plain HTTP (even to its own host) or in a CONNECT target is refused (403, rule secret) and audited with the secret\'s name only', async () => {
  const events: AuditEgressV2[] = [];
  const proxy = new EgressProxy({lookup, audit: (e) => events.push(e), intercept: interceptor.proxyHook()});
  const secrets = store.forCall(['API']);
  const grant = parseEgressGrant({allow: [`${API}:${apiPort}`, `127.0.0.1:${apiPort}`, `*.toolcell.test:${otherPort}`, `127.0.0.1:${otherPort}`], requestTimeoutMs: 5000});
  const session = await proxy.open({callId: 'call-2', principal: 'local', tool: 'gh__user', profile: 'gh-egress', grant, secrets});
  const ph = secrets.placeholders.API!;
  const before = seen.length;
  try {
    const plain = await new Promise<{status: number; body: string}>((resolve, reject) => {
      const raw = connect(session.socketPath);
      raw.write(`GET http://${API}:${apiPort}/ HTTP/1.1\r\nHost: ${API}:${apiPort}\r\nAuthorization: Bearer ${ph}\r\nConnection: close\r\n\r\n`);
      let text = '';
      raw.on('data', (c: Buffer) => (text += c.toString('utf8')));
      raw.on('end', () => resolve({status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]), body: text}));
      raw.on('error', reject);
    });
    assert.equal(plain.status, 403);
    assert.match(plain.body, /secret "API".*over plain HTTP/);
    const tunnel = await new Promise<string>((resolve, reject) => {
      const raw = connect(session.socketPath);
      raw.write(`CONNECT ${ph.toLowerCase()}.toolcell.test:${otherPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
      let text = '';
      raw.on('data', (c: Buffer) => (text += c.toString('utf8')));
      raw.on('end', () => resolve(text));
      raw.on('error', reject);
    });
    assert.match(tunnel, /^HTTP\/1\.1 403/);
    assert.equal(seen.length, before, 'no upstream got anything');
  } finally {
    await session.close();
    secrets.close();
    await proxy.close();
  }
  const denied = events.filter((e) => e.rule === 'secret');
  assert.equal(denied.length, 2, JSON.stringify(events));
  assert.ok(denied.every((e) => e.type === 'egress.denied' && e.secrets?.[0] === 'API'));
  assert.ok(!JSON.stringify(events).includes(VALUE) && !JSON.stringify(events).includes(ph));
});
