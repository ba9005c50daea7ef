// TLS interception for secret hosts, attacked for real on loopback: the credential reaches only
// the verified upstream, the sandbox sees only its placeholder, and refusals send nothing.
import assert from 'node:assert/strict';
import {chmod, lstat, readFile, rename, stat, symlink} from 'node:fs/promises';
import {createServer as createHttpsServer, request as httpsRequest, type Server as HttpsServer} from 'node:https';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {CA_FILES, EgressCa} from '../../../src/egress/ca.ts';
import type {CallSecrets, SecretStore} from '../../../src/egress/secrets.ts';
import {TlsInterceptor, type EgressDecision} from '../../../src/egress/tls-intercept.ts';
import {closeServers, listenLoopback, withLoopbackInterceptor, writeSecretStore} from '../../support/egress.ts';
import {tempDir} from '../../support/temp.ts';

const VALUE = 'tc-live-credential-6f1d2e3c4b5a';
const NAME = 'api.toolcell.test';

let dir: Awaited<ReturnType<typeof tempDir>>;
let egressCa: EgressCa;
let upstreamCa: EgressCa;
let untrustedCa: EgressCa;
let good: HttpsServer;
let bad: HttpsServer;
let stall: HttpsServer;
let goodPort = 0;
let badPort = 0;
let stallPort = 0;
const received: Array<{authorization?: string; host?: string; url?: string}> = [];
let store: SecretStore;
let interceptor: TlsInterceptor;

before(async () => {
  dir = await tempDir();
  egressCa = await EgressCa.open(join(dir.path, 'state', 'egress-ca'));
  upstreamCa = await EgressCa.open(join(dir.path, 'public-ca'));
  untrustedCa = await EgressCa.open(join(dir.path, 'untrusted-ca'));
  const goodLeaf = await upstreamCa.leaf(NAME);
  good = createHttpsServer({cert: goodLeaf.cert, key: goodLeaf.key}, (req, res) => {
    received.push({authorization: req.headers.authorization, host: req.headers.host, url: req.url});
    const ok = req.headers.authorization === `Bearer ${VALUE}`;
    // A hostile or careless upstream that echoes the credential back.
    res.writeHead(ok ? 200 : 401, {'content-type': 'application/json', 'x-echo': String(req.headers.authorization)});
    res.end(JSON.stringify({ok, echo: req.headers.authorization, pad: 'x'.repeat(70_000), tail: req.headers.authorization}));
  });
  goodPort = await listenLoopback(good);
  const badLeaf = await untrustedCa.leaf(NAME);
  bad = createHttpsServer({cert: badLeaf.cert, key: badLeaf.key}, (req, res) => {
    received.push({authorization: req.headers.authorization, host: 'bad'});
    res.end('should never be reached');
  });
  badPort = await listenLoopback(bad);
  stall = createHttpsServer({cert: goodLeaf.cert, key: goodLeaf.key}, () => {
    // Never answers.
  });
  stallPort = await listenLoopback(stall);
  store = await writeSecretStore(dir, {
    API: {env: 'TC_TEST_API', hosts: [`${NAME}:${goodPort}`, `${NAME}:${badPort}`, `${NAME}:${stallPort}`], header: 'Authorization', format: 'Bearer {}'},
    ELSEWHERE: {env: 'TC_TEST_ELSEWHERE', hosts: ['other.toolcell.test'], header: 'X-Key'},
  }, {TC_TEST_API: VALUE, TC_TEST_ELSEWHERE: 'elsewhere-value-123456'});
  interceptor = new TlsInterceptor({ca: egressCa, upstreamCa: upstreamCa.certPem});
});

after(async () => {
  interceptor?.close();
  closeServers([good, bad, stall]);
  await dir?.dispose();
});

interface Budget {requests: number; bytesIn: number}
/** A "proxy" on loopback that hands every connection to the interceptor, as the CONNECT handler does after its 200. */
async function withProxy<T>(port: number, secrets: CallSecrets, run: (proxyPort: number, decisions: EgressDecision[]) => Promise<T>, budget: Budget = {requests: 10, bytesIn: 1 << 20}, requestTimeoutMs = 5000): Promise<T> {
  let requests = 0;
  let bytesIn = 0;
  try {
    return await withLoopbackInterceptor(interceptor, {host: NAME, port, address: '127.0.0.1'}, secrets, run, {
      requestTimeoutMs,
      budget: {
        request: () => (++requests > budget.requests ? `over the call's limit of ${budget.requests} requests (maxRequests)` : undefined),
        out: () => undefined,
        in: (n) => ((bytesIn += n) > budget.bytesIn ? `over the call's limit of ${budget.bytesIn} bytes in (maxBytesIn)` : undefined),
      },
    });
  } finally {
    secrets.close();
  }
}

/** One HTTPS request from the "sandbox": trusts only the egress CA, as a sandbox with the CA mounted does. */
function sandboxGet(proxyPort: number, upstreamPort: number, headers: Record<string, string>, path = '/user'): Promise<{status: number; headers: Record<string, unknown>; body: string}> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({host: '127.0.0.1', port: proxyPort, servername: NAME, ca: egressCa.certPem, path, agent: false,
      headers: {host: `${NAME}:${upstreamPort}`, ...headers}, signal: AbortSignal.timeout(20_000)}, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8')}));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

// invariant: egress:secret:placeholder-only-to-its-hosts
test('the upstream gets the real credential in the configured header; the sandbox sees only its placeholder, even when the upstream echoes it', async () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  await withProxy(goodPort, secrets, async (proxyPort, decisions) => {
    const before = received.length;
    const res = await sandboxGet(proxyPort, goodPort, {authorization: `Bearer ${ph}`});
    assert.equal(res.status, 200, res.body.slice(0, 200));
    const body = JSON.parse(res.body) as {ok: boolean; echo: string; tail: string};
    assert.equal(body.ok, true, 'the upstream saw the real credential');
    assert.equal(received[before]?.authorization, `Bearer ${VALUE}`);
    assert.equal(received[before]?.host, `${NAME}:${goodPort}`, 'Host is the name the sandbox asked for');
    // invariant: egress:secret:never-in-output
    assert.ok(!res.body.includes(VALUE) && !JSON.stringify(res.headers).includes(VALUE), 'the echoed value is scrubbed from the response');
    assert.equal(body.echo, `Bearer ${ph}`);
    assert.equal(body.tail, `Bearer ${ph}`, 'also past a chunk boundary');
    assert.equal(res.headers['x-echo'], `Bearer ${ph}`);
    assert.deepEqual(decisions.map((d) => [d.allowed, d.status, d.secrets]), [[true, 200, ['API']]]);
    assert.ok(!JSON.stringify(decisions).includes(VALUE) && !JSON.stringify(decisions).includes(ph));
  });
});

test('a placeholder of a secret that does not belong to the host is refused (403, rule secret) and nothing reaches the upstream', async () => {
  const secrets = store.forCall(['API', 'ELSEWHERE']);
  await withProxy(goodPort, secrets, async (proxyPort, decisions) => {
    const before = received.length;
    const res = await sandboxGet(proxyPort, goodPort, {'x-key': secrets.placeholders.ELSEWHERE!});
    assert.equal(res.status, 403);
    assert.match(res.body, /secret "ELSEWHERE".*may be sent only to other\.toolcell\.test/);
    assert.equal(received.length, before, 'the upstream got no request');
    assert.deepEqual(decisions.map((d) => [d.allowed, d.rule, d.secrets]), [[false, 'secret', ['ELSEWHERE']]]);
    // The server still answers on the same path.
    assert.equal((await sandboxGet(proxyPort, goodPort, {authorization: secrets.placeholders.API!})).status, 200);
  });
});

// invariant: egress:tls:upstream-verified
test('an upstream whose certificate does not verify gets no request and no secret (502, rule upstream-tls)', async () => {
  const secrets = store.forCall(['API']);
  await withProxy(badPort, secrets, async (proxyPort, decisions) => {
    const before = received.length;
    const res = await sandboxGet(proxyPort, badPort, {authorization: `Bearer ${secrets.placeholders.API!}`});
    assert.equal(res.status, 502);
    assert.match(res.body, /certificate .* is not trusted/);
    assert.equal(received.length, before, 'the untrusted upstream got nothing');
    assert.equal(decisions[0]?.rule, 'upstream-tls');
  });
});

test('a Host header that names another host than the tunnel is refused (421) before anything is sent', async () => {
  const secrets = store.forCall(['API']);
  await withProxy(goodPort, secrets, async (proxyPort, decisions) => {
    const before = received.length;
    const res = await sandboxGet(proxyPort, goodPort, {host: 'other.toolcell.test', authorization: secrets.placeholders.API!});
    assert.equal(res.status, 421);
    assert.equal(received.length, before);
    assert.equal(decisions[0]?.rule, 'egress');
  });
});

test('the per-call request and byte limits stop interception with a clear message', async () => {
  const secrets = store.forCall(['API']);
  await withProxy(goodPort, secrets, async (proxyPort, decisions) => {
    assert.equal((await sandboxGet(proxyPort, goodPort, {authorization: secrets.placeholders.API!})).status, 200);
    const second = await sandboxGet(proxyPort, goodPort, {authorization: secrets.placeholders.API!});
    assert.equal(second.status, 429);
    assert.match(second.body, /maxRequests/);
    assert.deepEqual(decisions.map((d) => d.allowed), [true, false]);
  }, {requests: 1, bytesIn: 1 << 20});
  const again = store.forCall(['API']);
  await withProxy(goodPort, again, async (proxyPort, decisions) => {
    await assert.rejects(sandboxGet(proxyPort, goodPort, {authorization: again.placeholders.API!}));
    assert.equal(decisions[0]?.allowed, false);
    assert.match(decisions[0]?.reason ?? '', /maxBytesIn/);
  }, {requests: 10, bytesIn: 1000});
});

test('an upstream that stalls is timed out at requestTimeoutMs (504)', async () => {
  const secrets = store.forCall(['API']);
  await withProxy(stallPort, secrets, async (proxyPort, decisions) => {
    const res = await sandboxGet(proxyPort, stallPort, {authorization: secrets.placeholders.API!});
    assert.equal(res.status, 504);
    assert.equal(decisions[0]?.rule, 'timeout');
  }, undefined, 300);
});

// invariant: egress:ca:key-private
test('the CA key is 0600 in a 0700 directory; a looser key, a symlinked key or an open directory is refused', async () => {
  const caDir = join(dir.path, 'state', 'egress-ca');
  assert.equal((await stat(caDir)).mode & 0o777, 0o700);
  const keyFile = join(caDir, CA_FILES.key);
  assert.equal((await lstat(keyFile)).mode & 0o777, 0o600);
  assert.equal((await stat(join(caDir, CA_FILES.cert))).mode & 0o777, 0o644);
  assert.ok(!(await readFile(join(caDir, CA_FILES.cert), 'utf8')).includes('PRIVATE KEY'), 'the mountable certificate carries no key');
  assert.ok(!(await readFile(join(caDir, CA_FILES.bundle), 'utf8')).includes('PRIVATE KEY'));
  assert.equal((await EgressCa.open(caDir)).certPem, egressCa.certPem, 'the same CA is used again');

  await chmod(keyFile, 0o640);
  await assert.rejects(EgressCa.open(caDir), /mode 640; the CA key must be 0600/);
  await chmod(keyFile, 0o600);

  await rename(keyFile, `${keyFile}.real`);
  await symlink(`${keyFile}.real`, keyFile);
  await assert.rejects(EgressCa.open(caDir), /symlink/);

  await chmod(caDir, 0o755);
  await assert.rejects(EgressCa.open(caDir), /open to group or others/);
  await chmod(caDir, 0o700);
});
