// An upstream hands the real credential back in a form the literal scrubber cannot read (gzip, a transfer coding, Range pieces), attacked for real on loopback through the TLS interceptor, the proxy's plain-HTTP forward and the isolate fetch: refused (502, rule upstream), Range never forwarded, the tool never gets the value.
// invariant: egress:secret:no-unscrubbable-responses
// invariant: egress:secret:scrubbed-from-every-response
import assert from 'node:assert/strict';
import {createServer as createHttpsServer, request as httpsRequest, type Server as HttpsServer} from 'node:https';
import {createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse} from 'node:http';
import {connect} from 'node:net';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {gunzipSync, gzipSync} from 'node:zlib';
import type {AuditEgressV2} from '../../../src/audit/audit-event.ts';
import {EgressCa} from '../../../src/egress/ca.ts';
import {isolateEgress} from '../../../src/egress/isolate-fetch.ts';
import {parseEgressGrant} from '../../../src/egress/policy.ts';
import {EgressProxy} from '../../../src/egress/proxy.ts';
import type {CallSecrets, SecretStore} from '../../../src/egress/secrets.ts';
import {TlsInterceptor, type EgressDecision} from '../../../src/egress/tls-intercept.ts';
import {closeServers, listenLoopback, noBudget, withLoopbackInterceptor, writeSecretStore} from '../../support/egress.ts';
import {tempDir} from '../../support/temp.ts';

const VALUE = 'tc-live-Encoded-Credential-5e6f7a8b';
const NAME = 'api.toolcell.test';

let dir: Awaited<ReturnType<typeof tempDir>>;
let egressCa: EgressCa;
let upstreamCa: EgressCa;
let api: HttpsServer;
let apiPort = 0;
let plain: HttpServer;
let plainPort = 0;
let store: SecretStore;
let interceptor: TlsInterceptor;
/** What the upstreams received: Range and Accept-Encoding of each request. */
const seen: Array<{url: string; range?: string; ifRange?: string; acceptEncoding?: string}> = [];

/**
 * The hostile answers, all carrying `text` (which holds the real value): compressed whatever was
 * asked, a transfer coding, a piece per Range, a forced 206, multipart/byteranges.
 */
function hostile(req: IncomingMessage, res: ServerResponse, text: string): void {
  seen.push({url: req.url ?? '', range: req.headers.range, ifRange: req.headers['if-range'] as string | undefined, acceptEncoding: req.headers['accept-encoding']});
  const body = Buffer.from(text);
  const asked = /gzip/.test(String(req.headers['accept-encoding'] ?? ''));
  switch (req.url) {
    case '/gzip-always':
      res.writeHead(200, {'content-type': 'application/json', 'content-encoding': 'gzip'}).end(gzipSync(body));
      return;
    case '/gzip-identity':
      // Stacked codings: identity alone is allowed, not next to gzip.
      res.writeHead(200, {'content-encoding': 'identity, gzip'}).end(gzipSync(body));
      return;
    case '/te-gzip':
      res.writeHead(200, {'transfer-encoding': 'gzip, chunked'}).end(gzipSync(body));
      return;
    case '/force-206':
      res.writeHead(206, {'content-range': `bytes 0-19/${body.length}`}).end(body.subarray(0, 20));
      return;
    case '/byteranges':
      res.writeHead(200, {'content-type': 'multipart/byteranges; boundary=B'}).end(`--B\r\ncontent-range: bytes 0-19/${body.length}\r\n\r\n${body.subarray(0, 20)}\r\n--B--\r\n`);
      return;
    default: {
      const m = /bytes=(\d+)-(\d+)/.exec(String(req.headers.range ?? ''));
      if (m) {
        res.writeHead(206, {'content-range': `bytes ${m[1]}-${m[2]}/${body.length}`}).end(body.subarray(Number(m[1]), Number(m[2]) + 1));
      } else if (asked) {
        res.writeHead(200, {'content-encoding': 'gzip'}).end(gzipSync(body));
      } else {
        res.writeHead(200, {'content-type': 'application/json'}).end(body);
      }
    }
  }
}

before(async () => {
  dir = await tempDir();
  egressCa = await EgressCa.open(join(dir.path, 'state', 'egress-ca'));
  upstreamCa = await EgressCa.open(join(dir.path, 'public-ca'));
  const leaf = await upstreamCa.leaf(NAME);
  // The secret's host echoes the credential it received.
  api = createHttpsServer({cert: leaf.cert, key: leaf.key}, (req, res) => hostile(req, res, JSON.stringify({youSent: String(req.headers.authorization ?? '')})));
  apiPort = await listenLoopback(api);
  // Another allowed host, plain HTTP, that holds the value (e.g. the API's public request log).
  plain = createHttpServer((req, res) => hostile(req, res, JSON.stringify({stored: `Bearer ${VALUE}`})));
  plainPort = await listenLoopback(plain);
  store = await writeSecretStore(dir, {API: {env: 'TC_ENC_API', hosts: [`${NAME}:${apiPort}`], header: 'Authorization', format: 'Bearer {}'}}, {TC_ENC_API: VALUE});
  interceptor = new TlsInterceptor({ca: egressCa, upstreamCa: upstreamCa.certPem});
});

after(async () => {
  interceptor?.close();
  closeServers([api, plain]);
  await dir?.dispose();
});

/** Whether `raw` (or, if it is gzip somewhere, its decompression) holds the value. */
function leaks(raw: Buffer): boolean {
  if (raw.toString('latin1').includes(VALUE)) return true;
  for (let i = raw.indexOf(Buffer.from([0x1f, 0x8b])); i >= 0; i = raw.indexOf(Buffer.from([0x1f, 0x8b]), i + 1)) {
    try {
      if (gunzipSync(raw.subarray(i)).toString('latin1').includes(VALUE)) return true;
    } catch {
      // Not a whole gzip stream from here.
    }
  }
  return false;
}

/** A loopback "proxy" that hands each connection to the interceptor, as the CONNECT handler does after its 200. */
const withInterceptor = <T>(secrets: CallSecrets, run: (proxyPort: number, decisions: EgressDecision[]) => Promise<T>): Promise<T> =>
  withLoopbackInterceptor(interceptor, {host: NAME, port: apiPort, address: '127.0.0.1'}, secrets, run);

/** One HTTPS request from the "sandbox" through the interceptor; the body as received, undecoded. */
function sandboxGet(proxyPort: number, path: string, headers: Record<string, string>): Promise<{status: number; headers: IncomingMessage['headers']; body: Buffer}> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({host: '127.0.0.1', port: proxyPort, servername: NAME, ca: egressCa.certPem, path, agent: false,
      headers: {host: `${NAME}:${apiPort}`, ...headers}, signal: AbortSignal.timeout(20_000)}, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks)}));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

test('interceptor: a compressed, transfer-encoded or partial answer from the secret\'s host is refused (502, rule upstream); Range is not forwarded', async () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  const auth = {authorization: `Bearer ${ph}`, 'accept-encoding': 'gzip, br'};
  await withInterceptor(secrets, async (proxyPort, decisions) => {
    for (const path of ['/gzip-always', '/gzip-identity', '/te-gzip', '/force-206', '/byteranges']) {
      const answer = await sandboxGet(proxyPort, path, auth);
      assert.equal(answer.status, 502, `${path}: ${answer.body.toString('latin1').slice(0, 200)}`);
      assert.equal(answer.headers['x-toolcell-egress'], 'upstream', path);
      assert.equal(answer.headers['content-encoding'], undefined, path);
      assert.match(answer.body.toString('utf8'), /Content-Encoding|Transfer-Encoding|partial body/, path);
      assert.ok(!leaks(answer.body), `${path}: the value reached the sandbox`);
      assert.equal(decisions.at(-1)?.allowed, false, path);
      assert.equal(decisions.at(-1)?.rule, 'upstream', path);
    }
    // The tool asks for the echo piece by piece: Range and If-Range never reach the upstream, the answer is whole and scrubbed.
    seen.length = 0;
    const pieces: string[] = [];
    for (const [from, to] of [[0, 24], [25, 60]]) {
      const answer = await sandboxGet(proxyPort, '/range', {...auth, range: `bytes=${from}-${to}`, 'if-range': '"x"'});
      assert.equal(answer.status, 200, answer.body.toString('latin1').slice(0, 200));
      pieces.push(answer.body.toString('latin1'));
    }
    assert.deepEqual(seen.map((s) => [s.range, s.ifRange, s.acceptEncoding]), [[undefined, undefined, 'identity'], [undefined, undefined, 'identity']]);
    assert.ok(!pieces.join('').includes(VALUE) && !leaks(Buffer.from(pieces.join(''), 'latin1')), 'pieces of the value');
    assert.equal(pieces[0], JSON.stringify({youSent: `Bearer ${ph}`}));
    // The interceptor still answers.
    assert.equal((await sandboxGet(proxyPort, '/plain', auth)).status, 200);
  });
  secrets.close();
});

test('proxy plain-HTTP forward of a call with secrets: Accept-Encoding becomes identity, Range is dropped, a compressed or partial answer is refused (502, audited rule upstream)', async () => {
  const audits: AuditEgressV2[] = [];
  const proxy = new EgressProxy({lookup: async () => [{address: '127.0.0.1', family: 4}], audit: (e) => audits.push(e)});
  const secrets = store.forCall(['API']);
  const session = await proxy.open({callId: 'enc-1', principal: 'local', tool: 't', profile: 'p', grant: parseEgressGrant({allow: [`127.0.0.1:${plainPort}`], requestTimeoutMs: 5000}), secrets});
  const get = (path: string, extra = '') => new Promise<Buffer>((resolve, reject) => {
    const c = connect(session.socketPath, () => c.write(`GET http://127.0.0.1:${plainPort}${path} HTTP/1.1\r\nHost: 127.0.0.1:${plainPort}\r\nAccept-Encoding: gzip\r\n${extra}Connection: close\r\n\r\n`));
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error('no answer'));
    }, 15_000);
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    c.on('error', reject);
  });
  try {
    seen.length = 0;
    const asked = await get('/stored', 'Range: bytes=0-15\r\nIf-Range: "x"\r\n');
    assert.match(asked.toString('latin1'), /^HTTP\/1\.1 200 OK\r\n/, asked.toString('latin1').slice(0, 200));
    assert.deepEqual(seen.map((s) => [s.range, s.ifRange, s.acceptEncoding]), [[undefined, undefined, 'identity']]);
    assert.ok(!leaks(asked), 'the value in the answer');
    // The body is chunked (the scrubber holds back a tail): join the chunks.
    let rest = asked.toString('latin1').slice(asked.indexOf('\r\n\r\n') + 4);
    let body = '';
    for (let size = parseInt(rest, 16); size > 0; size = parseInt(rest, 16)) {
      const start = rest.indexOf('\r\n') + 2;
      body += rest.slice(start, start + size);
      rest = rest.slice(start + size + 2);
    }
    assert.equal(body, JSON.stringify({stored: `Bearer ${secrets.placeholders.API}`}), 'the body is whole and scrubbed');
    for (const path of ['/gzip-always', '/te-gzip', '/force-206', '/byteranges']) {
      const answer = await get(path);
      assert.match(answer.toString('latin1'), /^HTTP\/1\.1 502 /, `${path}: ${answer.toString('latin1').slice(0, 200)}`);
      assert.ok(!leaks(answer), `${path}: the value reached the sandbox`);
      assert.equal(audits.at(-1)?.type, 'egress.denied', path);
      assert.equal(audits.at(-1)?.rule, 'upstream', path);
    }
    assert.match((await get('/stored')).toString('latin1'), /^HTTP\/1\.1 200/, 'the proxy still answers');
  } finally {
    await session.close();
    await proxy.close();
    secrets.close();
  }
});

test('isolate fetch: a compressed or partial answer is refused; Range is not forwarded', async () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  const egress = isolateEgress({secrets, budget: noBudget(), requestTimeoutMs: 5000, memoryMb: 64, upstreamCa: upstreamCa.certPem, onDecision: () => {},
    resolve: async (host, port) => (host === NAME && port === apiPort ? {address: '127.0.0.1'} : {refused: 'not allowed'})});
  const fetch = (path: string, extra: string[][] = []) => egress.fetch(JSON.stringify({method: 'GET', url: `https://${NAME}:${apiPort}${path}`,
    headers: [['authorization', `Bearer ${ph}`], ['accept-encoding', 'gzip'], ...extra], body: null}), AbortSignal.timeout(20_000));
  try {
    for (const path of ['/gzip-always', '/te-gzip', '/force-206', '/byteranges']) {
      const answer = JSON.parse(await fetch(path)) as {ok: boolean; message?: string; body64?: string};
      assert.equal(answer.ok, false, path);
      assert.match(answer.message ?? '', /Content-Encoding|Transfer-Encoding|partial body/, path);
    }
    seen.length = 0;
    const whole = JSON.parse(await fetch('/range', [['range', 'bytes=0-15']])) as {ok: boolean; status: number; body64: string};
    assert.equal(whole.ok, true);
    assert.equal(whole.status, 200);
    assert.deepEqual(seen.map((s) => [s.range, s.acceptEncoding]), [[undefined, 'identity']]);
    const body = Buffer.from(whole.body64, 'base64');
    assert.ok(!leaks(body));
    assert.equal(body.toString('utf8'), JSON.stringify({youSent: `Bearer ${ph}`}));
  } finally {
    secrets.close();
  }
});
