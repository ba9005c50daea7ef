// The egress proxy attacked from the sandbox's side, with loopback test servers as the "internet".
import assert from 'node:assert/strict';
import {once} from 'node:events';
import {createServer as createHttpServer, request, type IncomingMessage, type Server} from 'node:http';
import {connect, createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket} from 'node:net';
import {after, before, test} from 'node:test';
import type {AuditEgressV1} from '../../../src/audit/audit-event.ts';
import {parseEgressGrant, type EgressGrant, type EgressLookup} from '../../../src/egress/policy.ts';
import {EgressProxy, type EgressSession} from '../../../src/egress/proxy.ts';

// invariant: egress:allowlist:enforced
// invariant: egress:address:refused-ranges
// invariant: egress:dns:resolved-once
// invariant: egress:limits:per-call
// invariant: egress:audit:every-decision

const servers: Array<Server | TcpServer> = [];
let httpPort = 0;
let echoPort = 0;
let stallPort = 0;
let upstreamRequests: Array<{url: string; headers: IncomingMessage['headers']}> = [];
const stalled = new Set<Socket>();

async function listen(server: Server | TcpServer): Promise<number> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

before(async () => {
  httpPort = await listen(createHttpServer((req, res) => {
    upstreamRequests.push({url: req.url ?? '', headers: req.headers});
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/big') {
        res.writeHead(200, {'content-type': 'application/octet-stream', 'content-length': '200000'});
        res.end(Buffer.alloc(200_000, 1));
        return;
      }
      if (req.url === '/stream') {
        res.writeHead(200, {'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked'});
        for (let i = 0; i < 20; i++) res.write(Buffer.alloc(10_000, 2));
        res.end();
        return;
      }
      if (req.url === '/stall-body') {
        res.writeHead(200, {'content-type': 'text/plain'});
        res.write('first');
        stalled.add(req.socket); // never ends
        return;
      }
      res.writeHead(200, {'content-type': 'text/plain', connection: 'keep-alive', 'keep-alive': 'timeout=77', 'x-upstream': 'yes'});
      res.end(`hello ${req.method} ${req.url} ${Buffer.concat(chunks).length}`);
    });
  }));
  echoPort = await listen(createTcpServer((socket) => socket.pipe(socket)));
  stallPort = await listen(createTcpServer((socket) => { stalled.add(socket); socket.on('error', () => {}); })); // accepts, never answers
});

after(async () => {
  for (const s of stalled) s.destroy();
  for (const s of servers) {
    (s as Server).closeAllConnections?.();
    s.close();
  }
});

/** A resolver for tests only: names map to loopback addresses; anything else fails (no real DNS). */
const lookup: EgressLookup = async (name) => {
  const table: Record<string, string[]> = {
    'api.test': ['127.0.0.1'],
    'rebind.test': ['127.0.0.2'],
    'mixed.test': ['127.0.0.1', '127.0.0.2'],
    'meta.test': ['169.254.169.254'],
    'v6loop.test': ['::1'],
  };
  const list = table[name];
  if (!list) throw Object.assign(new Error(`ENOTFOUND ${name}`), {code: 'ENOTFOUND'});
  return list.map((address) => ({address, family: address.includes(':') ? 6 : 4}));
};

interface Harness {
  proxy: EgressProxy;
  session: EgressSession;
  audit: AuditEgressV1[];
  counts: Map<string, number>;
}

async function harness(grant: Partial<EgressGrant> & {allow: string[]}): Promise<Harness> {
  const audit: AuditEgressV1[] = [];
  const counts = new Map<string, number>();
  const proxy = new EgressProxy({lookup, audit: (e) => audit.push(e), count: (tool, outcome) => counts.set(`${tool}/${outcome}`, (counts.get(`${tool}/${outcome}`) ?? 0) + 1)});
  const session = await proxy.open({callId: 'job-1', principal: 'local', tool: 'pkg__tool', profile: 'net-test', grant: parseEgressGrant(grant)});
  return {proxy, session, audit, counts};
}

/** An absolute-form request through the proxy socket, as HTTP_PROXY clients send it. */
function viaProxy(h: Harness, url: string, options: {method?: string; body?: Buffer | string; headers?: Record<string, string>; timeoutMs?: number} = {}):
  Promise<{status: number; headers: IncomingMessage['headers']; body: string; error?: string}> {
  return new Promise((resolve) => {
    const req = request({socketPath: h.session.socketPath, method: options.method ?? 'GET', path: url, headers: {host: URL.parse(url)?.host ?? 'x', ...options.headers}, agent: false});
    const deadline = setTimeout(() => { req.destroy(); resolve({status: 0, headers: {}, body: '', error: 'test deadline'}); }, options.timeoutMs ?? 15_000);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = (error?: string) => { clearTimeout(deadline); resolve({status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), error}); };
      res.on('end', () => done());
      res.on('error', (e) => done(e.message));
      res.on('aborted', () => done('aborted'));
    });
    req.on('error', (e) => { clearTimeout(deadline); resolve({status: 0, headers: {}, body: '', error: e.message}); });
    req.end(options.body);
  });
}

/** Opens a CONNECT tunnel through the proxy socket; resolves with the status and, when 200, the socket. */
function tunnel(h: Harness, authority: string): Promise<{status: number; body: string; socket?: Socket}> {
  return new Promise((resolve, reject) => {
    const req = request({socketPath: h.session.socketPath, method: 'CONNECT', path: authority, agent: false});
    const deadline = setTimeout(() => { req.destroy(); reject(new Error('test deadline: CONNECT')); }, 15_000);
    req.on('connect', (res, socket, head) => {
      clearTimeout(deadline);
      if (res.statusCode === 200) {
        resolve({status: 200, body: '', socket});
        return;
      }
      const chunks: Buffer[] = [head];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', () => {});
      socket.on('close', () => resolve({status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString()}));
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { clearTimeout(deadline); resolve({status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString()}); });
    });
    req.on('error', (e) => { clearTimeout(deadline); reject(e); });
    req.end();
  });
}

async function withHarness(grant: Partial<EgressGrant> & {allow: string[]}, body: (h: Harness) => Promise<void>): Promise<void> {
  const h = await harness(grant);
  try {
    await body(h);
  } finally {
    await h.session.close();
    await h.proxy.close();
  }
}

/** After each attack: the upstream and the proxy still answer an allowed request. */
async function stillAnswers(h: Harness): Promise<void> {
  const r = await viaProxy(h, `http://127.0.0.1:${httpPort}/ok`);
  assert.equal(r.status, 200, `the proxy still answers: ${JSON.stringify(r)}`);
}

test('an allowed host answers through the proxy; hop-by-hop headers are stripped both ways; the decision is audited without values', async () => {
  await withHarness({allow: [`127.0.0.1:${httpPort}`]}, async (h) => {
    upstreamRequests = [];
    const r = await viaProxy(h, `http://127.0.0.1:${httpPort}/hello?q=secret-query`, {method: 'POST', body: 'abc',
      headers: {'proxy-authorization': 'Basic c2VjcmV0', connection: 'x-drop-me', 'x-drop-me': '1', 'x-keep': 'kept-value'}});
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello POST /hello?q=secret-query 3');
    assert.equal(r.headers['x-upstream'], 'yes');
    assert.notEqual(r.headers['keep-alive'], 'timeout=77', "the upstream's Keep-Alive is not relayed");
    const seen = upstreamRequests[0]!;
    assert.equal(seen.url, '/hello?q=secret-query', 'origin-form upstream');
    assert.equal(seen.headers['proxy-authorization'], undefined);
    assert.equal(seen.headers['x-drop-me'], undefined);
    assert.equal(seen.headers['x-keep'], 'kept-value');
    assert.equal(seen.headers.host, `127.0.0.1:${httpPort}`);
    const event = h.audit.at(-1)!;
    assert.partialDeepStrictEqual(event, {type: 'egress.allowed', jobId: 'job-1', principal: 'local', tool: 'pkg__tool', host: '127.0.0.1', port: httpPort,
      method: 'POST', status: 200, bytesOut: 3, rule: `127.0.0.1:${httpPort}`});
    assert.ok(event.bytesIn > 0);
    const text = JSON.stringify(h.audit);
    assert.doesNotMatch(text, /secret-query|kept-value|c2VjcmV0|hello/, 'no path, query, header value or body in the audit');
    assert.equal(h.counts.get('pkg__tool/allowed'), 1);
  });
});

test('an unlisted host, an unlisted IP literal, another port, and names that resolve to ungranted loopback or metadata addresses are refused naming the grant', async () => {
  await withHarness({allow: [`127.0.0.1:${httpPort}`, `api.test:${httpPort}`, `rebind.test:${httpPort}`, `mixed.test:${httpPort}`, `meta.test:${httpPort}`,
    `v6loop.test:${httpPort}`]}, async (h) => {
    upstreamRequests = [];
    for (const [url, why] of [
      [`http://unlisted.test:${httpPort}/`, /the host "unlisted\.test" port \d+ is not in the allowlist/],
      [`http://127.0.0.2:${httpPort}/`, /the address 127\.0\.0\.2 port \d+ is not in the allowlist/],
      [`http://[::1]:${httpPort}/`, /the address \[::1\] port \d+ is not in the allowlist/],
      [`http://127.0.0.1:${echoPort}/`, /port \d+ is not in the allowlist/],
      [`http://2130706434:${httpPort}/`, /the address 127\.0\.0\.2 port \d+ is not in the allowlist/], // WHATWG URL reads it as 127.0.0.2
      [`http://rebind.test:${httpPort}/`, /resolves to 127\.0\.0\.2, a loopback address that the grant does not name/],
      [`http://mixed.test:${httpPort}/`, /resolves to 127\.0\.0\.2/],
      [`http://meta.test:${httpPort}/`, /169\.254\.169\.254, a metadata address/],
      [`http://v6loop.test:${httpPort}/`, /\[::1\], a loopback address/],
    ] as const) {
      const r = await viaProxy(h, url);
      assert.equal(r.status, 403, `${url}: ${JSON.stringify(r)}`);
      assert.match(r.body, why, url);
      assert.match(r.body, /egress refused by the profile "net-test"/);
      assert.match(r.body, /allows only: 127\.0\.0\.1:\d+, api\.test/);
    }
    assert.equal(upstreamRequests.length, 0, 'no refused request reached an upstream');
    assert.equal(h.audit.filter((e) => e.type === 'egress.denied').length, 9);
    assert.ok(h.audit.every((e) => e.type === 'egress.denied' && e.status === 403 && e.address === undefined));
    // api.test maps to 127.0.0.1, which the grant names literally for this port: allowed.
    assert.equal((await viaProxy(h, `http://api.test:${httpPort}/named`)).status, 200);
    assert.equal(upstreamRequests[0]!.headers.host, `api.test:${httpPort}`);
    await stillAnswers(h);
  });
});

test('CONNECT: plain TCP to an allowed host:port is relayed both ways; a CONNECT to an unlisted target is refused before any connection', async () => {
  await withHarness({allow: [`127.0.0.1:${echoPort}`]}, async (h) => {
    const t = await tunnel(h, `127.0.0.1:${echoPort}`);
    assert.equal(t.status, 200);
    const socket = t.socket!;
    try {
      socket.write('ping through the tunnel');
      const [echo] = await Promise.race([once(socket, 'data'), new Promise((_, rej) => setTimeout(() => rej(new Error('no echo')), 10_000))]) as [Buffer];
      assert.equal(echo.toString(), 'ping through the tunnel');
    } finally {
      socket.end();
    }
    await once(socket, 'close');
    const refused = await tunnel(h, `127.0.0.1:${httpPort}`);
    assert.equal(refused.status, 403);
    assert.match(refused.body, /not in the allowlist; the profile's egress grant allows only: 127\.0\.0\.1:\d+/);
    const bad = await tunnel(h, 'no-port-here');
    assert.equal(bad.status, 400);
    // the allowed tunnel is audited when it ends, with its bytes
    for (let i = 0; i < 50 && !h.audit.some((e) => e.type === 'egress.allowed'); i++) await new Promise((r) => setTimeout(r, 20));
    assert.partialDeepStrictEqual(h.audit.find((e) => e.type === 'egress.allowed'), {method: 'CONNECT', status: 200, bytesOut: 23, bytesIn: 23});
  });
});

test('the request limit: maxRequests counts requests and tunnels, allowed or refused; past it 429 naming the limit, and the session records the limit hit', async () => {
  await withHarness({allow: [`127.0.0.1:${httpPort}`], maxRequests: 3}, async (h) => {
    assert.equal((await viaProxy(h, `http://127.0.0.1:${httpPort}/1`)).status, 200);
    assert.equal((await viaProxy(h, `http://unlisted.test/`)).status, 403);
    assert.equal((await viaProxy(h, `http://127.0.0.1:${httpPort}/3`)).status, 200);
    const over = await viaProxy(h, `http://127.0.0.1:${httpPort}/4`);
    assert.equal(over.status, 429);
    assert.match(over.body, /allows maxRequests = 3 requests per call/);
    assert.equal(h.session.limitHit?.limit, 'maxRequests');
    // a flood past the limit is refused and not audited one by one
    for (let i = 0; i < 20; i++) assert.equal((await viaProxy(h, `http://127.0.0.1:${httpPort}/x`)).status, 429);
    assert.ok(h.audit.length <= 5, `audit bounded: ${h.audit.length}`);
    assert.ok(h.session.usage.unaudited >= 19);
    assert.ok((h.counts.get('pkg__tool/limit') ?? 0) >= 20);
  });
});

test('the byte limits: a body over maxBytesOut gets 413; a response over maxBytesIn is cut (declared length: 502), and the limit is recorded', async () => {
  await withHarness({allow: [`127.0.0.1:${httpPort}`, `127.0.0.1:${echoPort}`], maxBytesOut: 1000, maxBytesIn: 50_000}, async (h) => {
    upstreamRequests = [];
    const big = await viaProxy(h, `http://127.0.0.1:${httpPort}/upload`, {method: 'POST', body: Buffer.alloc(5000)});
    assert.equal(big.status, 413);
    assert.match(big.body, /maxBytesOut = 1000 bytes/);
    assert.equal(upstreamRequests.length, 0, 'a declared oversized body never reaches the upstream');
    assert.equal(h.session.limitHit?.limit, 'maxBytesOut');
    const declared = await viaProxy(h, `http://127.0.0.1:${httpPort}/big`);
    assert.equal(declared.status, 502);
    assert.match(declared.body, /maxBytesIn = 50000 bytes/);
    const streamed = await viaProxy(h, `http://127.0.0.1:${httpPort}/stream`);
    assert.ok(streamed.error !== undefined || streamed.body.length <= 50_000, 'a streamed response is cut at the limit');
    assert.ok(streamed.body.length <= 50_000);
  });
  await withHarness({allow: [`127.0.0.1:${echoPort}`], maxBytesOut: 100_000, maxBytesIn: 1000}, async (h) => {
    const t = await tunnel(h, `127.0.0.1:${echoPort}`);
    const socket = t.socket!;
    let received = 0;
    socket.on('data', (c: Buffer) => { received += c.length; });
    socket.on('error', () => {});
    socket.write(Buffer.alloc(5000, 7));
    await Promise.race([once(socket, 'close'), new Promise((_, rej) => setTimeout(() => rej(new Error('tunnel not cut')), 10_000))]);
    assert.ok(received <= 1000 + 65_536, `tunnel cut near maxBytesIn (got ${received})`);
    assert.equal(h.session.limitHit?.limit, 'maxBytesIn');
    assert.ok(h.audit.some((e) => e.type === 'egress.denied' && e.rule === 'maxBytesIn'));
  });
});

test('an upstream that stalls is timed out: a silent HTTP upstream gets 504, a response body that stops is cut, a silent tunnel is closed', async () => {
  await withHarness({allow: [`127.0.0.1:${stallPort}`, `127.0.0.1:${httpPort}`], requestTimeoutMs: 500}, async (h) => {
    const started = performance.now();
    const r = await viaProxy(h, `http://127.0.0.1:${stallPort}/`);
    assert.equal(r.status, 504);
    assert.match(r.body, /requestTimeoutMs = 500 ms/);
    assert.ok(performance.now() - started < 10_000);
    const body = await viaProxy(h, `http://127.0.0.1:${httpPort}/stall-body`);
    assert.equal(body.status, 200);
    assert.ok(body.error !== undefined, 'the stalled body ends in an error, not a hang');
    const t = await tunnel(h, `127.0.0.1:${stallPort}`);
    assert.equal(t.status, 200);
    t.socket!.on('error', () => {});
    await Promise.race([once(t.socket!, 'close'), new Promise((_, rej) => setTimeout(() => rej(new Error('silent tunnel not closed')), 10_000))]);
    assert.equal(h.session.limitHit?.limit, 'requestTimeoutMs');
    await stillAnswers(h);
  });
});

test('not a proxy request: origin-form, https:// in the clear, and Upgrade are refused with a reason', async () => {
  await withHarness({allow: [`127.0.0.1:${httpPort}`]}, async (h) => {
    const origin = await viaProxy(h, '/relative'.replace(/^/, ''), {headers: {host: `127.0.0.1:${httpPort}`}}).catch(() => ({status: 0, body: ''}));
    assert.equal(origin.status, 400);
    assert.match(origin.body, /absolute-form/);
    const https = await viaProxy(h, `https://127.0.0.1:${httpPort}/`);
    assert.equal(https.status, 400);
    assert.match(https.body, /CONNECT/);
    await stillAnswers(h);
  });
});

test('the socket is private to the call: mode 0600 in a 0700 directory, removed when the session closes; a closed session refuses', async () => {
  const {stat, access} = await import('node:fs/promises');
  const h = await harness({allow: [`127.0.0.1:${httpPort}`]});
  const dir = await stat(h.session.dir);
  assert.equal(dir.mode & 0o777, 0o700);
  assert.equal((await stat(h.session.socketPath)).mode & 0o777, 0o600);
  const t = await tunnel(h, `127.0.0.1:${httpPort}`);
  t.socket!.on('error', () => {});
  const closed = once(t.socket!, 'close');
  await h.session.close();
  await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('open tunnel survived close')), 5000))]);
  await assert.rejects(access(h.session.dir));
  await assert.rejects(new Promise((resolve, reject) => connect(h.session.socketPath).on('connect', resolve).on('error', reject)));
  await h.proxy.close();
});
