// A hostile upstream hands the real credential back where the scrubber used not to look (the
// reason phrase, a header name, a later request without the placeholder): attacked for real on
// loopback through the TLS interceptor and the isolate fetch; the tool never sees the value.
import assert from 'node:assert/strict';
import {createServer as createHttpsServer, request as httpsRequest, type Server as HttpsServer} from 'node:https';
import {createServer as createHttpServer, type Server as HttpServer} from 'node:http';
import {connect} from 'node:net';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {EgressCa} from '../../../src/egress/ca.ts';
import {isolateEgress} from '../../../src/egress/isolate-fetch.ts';
import {parseEgressGrant} from '../../../src/egress/policy.ts';
import {EgressProxy} from '../../../src/egress/proxy.ts';
import type {CallSecrets, SecretStore} from '../../../src/egress/secrets.ts';
import {TlsInterceptor} from '../../../src/egress/tls-intercept.ts';
import {closeServers, listenLoopback, noBudget, withLoopbackInterceptor, writeSecretStore} from '../../support/egress.ts';
import {tempDir} from '../../support/temp.ts';

// Mixed case: a header name comes back lower-cased.
const VALUE = 'tc-Stored-Credential-77AAbb99';
const NAME = 'api.toolcell.test';

let dir: Awaited<ReturnType<typeof tempDir>>;
let egressCa: EgressCa;
let upstreamCa: EgressCa;
let api: HttpsServer;
let apiPort = 0;
let paste: HttpServer;
let pastePort = 0;
let stored = '';
let store: SecretStore;
let interceptor: TlsInterceptor;

before(async () => {
  dir = await tempDir();
  egressCa = await EgressCa.open(join(dir.path, 'state', 'egress-ca'));
  upstreamCa = await EgressCa.open(join(dir.path, 'public-ca'));
  const leaf = await upstreamCa.leaf(NAME);
  // The hostile "API": echoes the credential in its reason phrase and as a header name, stores it and hands it back to a later request.
  api = createHttpsServer({cert: leaf.cert, key: leaf.key}, (req, res) => {
    const auth = String(req.headers.authorization ?? '');
    const token = auth.replace(/^Bearer /, '');
    if (req.url === '/reason') {
      res.statusMessage = `Unauthorized token ${token}`;
      res.statusCode = 401;
      res.end('no\n');
    } else if (req.url === '/hdrname') {
      res.setHeader(`x-${token}`, '1');
      res.end('ok\n');
    } else if (req.url === '/store') {
      stored = auth;
      res.end('stored\n');
    } else if (req.url === '/fetch') {
      res.setHeader('x-last', stored);
      res.end(`last credential: ${stored}\n`);
    } else {
      res.end('?\n');
    }
  });
  apiPort = await listenLoopback(api);
  // Another allowed host, plain HTTP, that the credential reached by another way (a paste the API made public).
  paste = createHttpServer((req, res) => {
    res.writeHead(200, 'leaked ' + VALUE, {[`x-${VALUE}`]: '1', 'x-copy': VALUE});
    res.end(`paste: ${VALUE}`);
  });
  pastePort = await listenLoopback(paste);
  store = await writeSecretStore(dir, {API: {env: 'TC_SCRUB_API', hosts: [`${NAME}:${apiPort}`], header: 'Authorization', format: 'Bearer {}'}}, {TC_SCRUB_API: VALUE});
  interceptor = new TlsInterceptor({ca: egressCa, upstreamCa: upstreamCa.certPem});
});

after(async () => {
  interceptor?.close();
  closeServers([api, paste]);
  await dir?.dispose();
});

/** A loopback "proxy" that hands each connection to the interceptor, as the CONNECT handler does after its 200. */
const withInterceptor = <T>(secrets: CallSecrets, run: (proxyPort: number) => Promise<T>): Promise<T> =>
  withLoopbackInterceptor(interceptor, {host: NAME, port: apiPort, address: '127.0.0.1'}, secrets, run);

/** One HTTPS request from the "sandbox" through the interceptor: the whole answer as text (status line, headers, body). */
function sandboxGet(proxyPort: number, path: string, headers: Record<string, string>): Promise<{status: number; reason: string; raw: string}> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({host: '127.0.0.1', port: proxyPort, servername: NAME, ca: egressCa.certPem, path, agent: false,
      headers: {host: `${NAME}:${apiPort}`, ...headers}, signal: AbortSignal.timeout(20_000)}, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({status: res.statusCode ?? 0, reason: res.statusMessage ?? '', raw: `${res.statusMessage}\n${res.rawHeaders.join('\n')}\n${Buffer.concat(chunks).toString('utf8')}`}));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const leaks = (text: string) => text.includes(VALUE) || text.toLowerCase().includes(VALUE.toLowerCase());

// invariant: egress:secret:scrubbed-from-every-response
// invariant: egress:secret:never-in-output
test('interceptor: the value in the reason phrase, in a header name, or handed back to a request without the placeholder never reaches the sandbox', async () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  await withInterceptor(secrets, async (proxyPort) => {
    const reason = await sandboxGet(proxyPort, '/reason', {authorization: `Bearer ${ph}`});
    assert.equal(reason.status, 401);
    assert.equal(reason.reason, 'Unauthorized', 'the standard reason phrase, not the upstream\'s');
    assert.ok(!leaks(reason.raw), 'reason phrase');
    const name = await sandboxGet(proxyPort, '/hdrname', {authorization: `Bearer ${ph}`});
    assert.equal(name.status, 200);
    assert.ok(!leaks(name.raw), 'header name (lower-cased value)');
    await sandboxGet(proxyPort, '/store', {authorization: `Bearer ${ph}`});
    assert.equal(stored, `Bearer ${VALUE}`, 'the upstream holds the real value');
    const later = await sandboxGet(proxyPort, '/fetch', {});
    assert.equal(later.status, 200);
    assert.ok(!leaks(later.raw), 'a later request that carried no placeholder');
    assert.match(later.raw, new RegExp(`last credential: Bearer ${ph}`));
  });
  secrets.close();
  // The interceptor still answers after the attacks.
  const again = store.forCall(['API']);
  await withInterceptor(again, async (proxyPort) => assert.equal((await sandboxGet(proxyPort, '/fetch', {})).status, 200));
  again.close();
});

// invariant: egress:secret:scrubbed-from-every-response
test('isolate fetch: the value in the status text, in a header name, or handed back to a request without the placeholder never reaches the isolate', async () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  const egress = isolateEgress({secrets, budget: noBudget(), requestTimeoutMs: 5000, memoryMb: 64, upstreamCa: upstreamCa.certPem, onDecision: () => {},
    resolve: async (host, port) => (host === NAME && port === apiPort ? {address: '127.0.0.1'} : {refused: 'not allowed'})});
  const fetch = (path: string, auth: boolean) => egress.fetch(JSON.stringify({method: 'GET', url: `https://${NAME}:${apiPort}${path}`, headers: auth ? [['authorization', `Bearer ${ph}`]] : [], body: null}), AbortSignal.timeout(20_000));
  const reason = await fetch('/reason', true);
  assert.equal((JSON.parse(reason) as {status: number; statusText: string}).statusText, 'Unauthorized');
  assert.ok(!leaks(reason), 'status text');
  const name = await fetch('/hdrname', true);
  assert.equal((JSON.parse(name) as {ok: boolean}).ok, true);
  assert.ok(!leaks(name), 'header name');
  await fetch('/store', true);
  assert.equal(stored, `Bearer ${VALUE}`);
  const later = await fetch('/fetch', false);
  const answer = JSON.parse(later) as {ok: boolean; body64: string; headers: string[][]};
  assert.equal(answer.ok, true);
  const body = Buffer.from(answer.body64, 'base64').toString('utf8');
  assert.ok(!leaks(later) && !leaks(body), 'a later request that carried no placeholder');
  assert.equal(body, `last credential: Bearer ${ph}\n`);
  secrets.close();
});

// invariant: egress:secret:scrubbed-from-every-response
test('proxy plain-HTTP forward: a value another allowed host hands back is scrubbed from the status line, header names and values, and the body', async () => {
  const proxy = new EgressProxy({lookup: async () => [{address: '127.0.0.1', family: 4}], audit: () => {}});
  const secrets = store.forCall(['API']);
  const session = await proxy.open({callId: 'scrub-1', principal: 'local', tool: 't', profile: 'p', grant: parseEgressGrant({allow: [`127.0.0.1:${pastePort}`], requestTimeoutMs: 5000}), secrets});
  try {
    const get = () => new Promise<string>((resolve, reject) => {
      const c = connect(session.socketPath, () => c.write(`GET http://127.0.0.1:${pastePort}/ HTTP/1.1\r\nHost: 127.0.0.1:${pastePort}\r\nConnection: close\r\n\r\n`));
      let out = '';
      c.on('data', (d: Buffer) => (out += d.toString('latin1')));
      c.on('close', () => resolve(out));
      c.on('error', reject);
      setTimeout(() => {
        c.destroy();
        reject(new Error('no answer'));
      }, 15_000).unref();
    });
    const answer = await get();
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/, answer.slice(0, 200));
    assert.ok(!leaks(answer), 'no value anywhere in the answer');
    // The body is chunked (the scrubber holds back a tail): join the chunks.
    let rest = answer.slice(answer.indexOf('\r\n\r\n') + 4);
    let body = '';
    for (let size = parseInt(rest, 16); size > 0; size = parseInt(rest, 16)) {
      const start = rest.indexOf('\r\n') + 2;
      body += rest.slice(start, start + size);
      rest = rest.slice(start + size + 2);
    }
    assert.equal(body, `paste: ${secrets.placeholders.API}`);
    assert.match(await get(), /^HTTP\/1\.1 200/, 'the proxy still answers');
  } finally {
    await session.close();
    await proxy.close();
    secrets.close();
  }
});
