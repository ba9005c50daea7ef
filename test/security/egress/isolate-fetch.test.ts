// The isolate's fetch, attacked for real against servers this test starts on loopback: the
// credential reaches only its host, the tool sees only its placeholder, limits and the call's
// deadline hold, and nothing of the host crosses into the isolate.
import assert from 'node:assert/strict';
import {createServer as createHttpServer, type IncomingMessage, type Server} from 'node:http';
import {createServer as createHttpsServer} from 'node:https';
import {join} from 'node:path';
import {performance} from 'node:perf_hooks';
import {after, before, test} from 'node:test';
import type {IsolateJob, IsolateLimits} from '../../../src/backends/backend.ts';
import {EgressCa} from '../../../src/egress/ca.ts';
import {isolateEgress, type ResolvedDestination} from '../../../src/egress/isolate-fetch.ts';
import type {SecretStore} from '../../../src/egress/secrets.ts';
import type {EgressDecision} from '../../../src/egress/tls-intercept.ts';
import {useIsolateBackend} from '../../support/isolate-backend.ts';
import {closeServers, listenLoopback, writeSecretStore} from '../../support/egress.ts';
import {tempDir} from '../../support/temp.ts';

const VALUE = 'tc-isolate-credential-9a8b7c6d5e';
const NAME = 'api.toolcell.test';
const LIMITS: IsolateLimits = {timeoutMs: 5000, memoryMb: 64, outputBytes: 256 * 1024};

const backend = useIsolateBackend({workers: 1, poolSize: 0});
let dir: Awaited<ReturnType<typeof tempDir>>;
let publicCa: EgressCa;
let api: Server;
let other: Server;
let apiPort = 0;
let otherPort = 0;
let store: SecretStore;
const apiSeen: Array<{authorization?: string; url?: string; body: string}> = [];
const otherSeen: Array<{url?: string; body: string}> = [];
const closedRequests: string[] = [];

const bodyOf = async (req: IncomingMessage) => {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
};

before(async () => {
  dir = await tempDir();
  publicCa = await EgressCa.open(join(dir.path, 'public-ca'));
  const leaf = await publicCa.leaf(NAME);
  api = createHttpsServer({cert: leaf.cert, key: leaf.key}, async (req, res) => {
    const body = await bodyOf(req);
    apiSeen.push({authorization: req.headers.authorization, url: req.url, body});
    if (req.url === '/big') {
      res.end(Buffer.alloc(3 * 2 ** 20, 0x61));
      return;
    }
    if (req.url === '/stall') {
      req.socket.on('close', () => closedRequests.push('stall'));
      return; // never answers
    }
    const ok = req.headers.authorization === `Bearer ${VALUE}`;
    res.writeHead(ok ? 200 : 401, {'content-type': 'application/json', 'x-seen': String(req.headers.authorization)});
    res.end(JSON.stringify({ok, seen: req.headers.authorization, body, bytes: [...Buffer.from(body, 'utf8')].slice(0, 4)}));
  });
  apiPort = await listenLoopback(api);
  other = createHttpServer(async (req, res) => {
    otherSeen.push({url: req.url, body: await bodyOf(req)});
    res.end('other');
  });
  otherPort = await listenLoopback(other);
  store = await writeSecretStore(dir, {API: {env: 'TC_ISOLATE_API', hosts: [`${NAME}:${apiPort}`], header: 'Authorization', format: 'Bearer {}'}}, {TC_ISOLATE_API: VALUE});
});
after(async () => {
  closeServers([api, other]);
  await dir?.dispose();
});

/** The test's grant: the API by name (resolved to loopback) and the other server by literal address; everything else refused, naming the grant. */
async function resolve(host: string, port: number): Promise<ResolvedDestination> {
  if (host === NAME && port === apiPort) return {address: '127.0.0.1'};
  if (host === '127.0.0.1' && port === otherPort) return {address: '127.0.0.1'};
  return {refused: `toolcell egress: ${host}:${port} is not in the profile's egress allow list (allowed: ${NAME}:${apiPort}, 127.0.0.1:${otherPort}).`};
}

let seq = 0;
function run(source: string, options: {secrets?: string[]; egress?: boolean; limits?: IsolateLimits; maxBytesIn?: number; maxRequests?: number; requestTimeoutMs?: number; signal?: AbortSignal} = {}) {
  const decisions: EgressDecision[] = [];
  const secrets = store.forCall(options.secrets ?? ['API']);
  let requests = 0;
  let bytesIn = 0;
  const limits = options.limits ?? LIMITS;
  const egress = options.egress === false ? undefined : isolateEgress({
    secrets, requestTimeoutMs: options.requestTimeoutMs ?? 5000, resolve, memoryMb: limits.memoryMb, upstreamCa: publicCa.certPem,
    onDecision: (d) => decisions.push(d),
    budget: {
      request: () => (++requests > (options.maxRequests ?? 10) ? `over the call's limit of ${options.maxRequests ?? 10} requests (maxRequests)` : undefined),
      out: () => undefined,
      in: (n) => ((bytesIn += n) > (options.maxBytesIn ?? 10 * 2 ** 20) ? `over the call's limit of ${options.maxBytesIn} bytes in (maxBytesIn)` : undefined),
    },
  });
  const job: IsolateJob = {kind: 'isolate', id: `fetch-${++seq}`, source, filename: 'test/fetch.js', args: {api: `https://${NAME}:${apiPort}`, other: `http://127.0.0.1:${otherPort}`}, limits, ...(egress ? {egress} : {})};
  const signal = options.signal ?? AbortSignal.timeout(limits.timeoutMs + 30_000);
  return backend.run(job, {signal}).then((result) => {
    secrets.close();
    return {result, decisions, placeholder: egress?.secrets.API};
  });
}

// invariant: egress:secret:placeholder-only-to-its-hosts
// invariant: egress:secret:never-in-output
test('an isolate tool calls the API with its placeholder; the API gets the real credential; the tool sees only the placeholder', async () => {
  const before = apiSeen.length;
  const {result, decisions, placeholder} = await run(`export default async function (args, context) {
    const res = await fetch(args.api + '/user', {method: 'POST', headers: {authorization: 'Bearer ' + context.secrets.API}, body: {q: 'é'}});
    const json = await res.json();
    console.log('token is', context.secrets.API);
    return {status: res.status, ok: res.ok, json, header: res.headers.get('x-seen'), type: res.headers.get('content-type'), ph: context.secrets.API, url: res.url};
  }`);
  assert.equal(result.failed, false, JSON.stringify(result));
  const value = JSON.parse(result.stdout) as {status: number; ok: boolean; json: {ok: boolean; seen: string; body: string}; header: string; ph: string; url: string};
  assert.equal(value.status, 200);
  assert.equal(value.json.ok, true, 'the API saw the real credential');
  assert.equal(apiSeen[before]?.authorization, `Bearer ${VALUE}`);
  assert.equal(apiSeen[before]?.body, '{"q":"é"}', 'a JSON body is sent as UTF-8 JSON');
  assert.equal(value.ph, placeholder);
  assert.equal(value.json.seen, `Bearer ${placeholder}`, 'the echoed credential came back as the placeholder');
  assert.equal(value.header, `Bearer ${placeholder}`);
  assert.ok(!result.stdout.includes(VALUE) && !result.stderr.includes(VALUE), 'no value in the result or the console');
  assert.ok(result.stderr.includes(placeholder!));
  assert.deepEqual(decisions.map((d) => [d.allowed, d.method, d.host, d.status, d.secrets]), [[true, 'POST', NAME, 200, ['API']]]);
  assert.ok(!JSON.stringify(decisions).includes(VALUE));
});

test('the placeholder sent to another allowed host is refused (rule secret) and that host gets nothing', async () => {
  const before = otherSeen.length;
  const {result, decisions} = await run(`export default async function (args, context) {
    const tries = {};
    for (const [name, init, url] of [
      ['query', {}, args.other + '/?k=' + context.secrets.API],
      ['header', {headers: {'x-k': context.secrets.API}}, args.other + '/'],
      ['body', {method: 'POST', body: 'k=' + context.secrets.API}, args.other + '/'],
      ['bytes', {method: 'POST', body: new Uint8Array([...('k=' + context.secrets.API)].map((c) => c.charCodeAt(0)))}, args.other + '/'],
    ]) {
      try { await fetch(url, init); tries[name] = 'sent'; } catch (e) { tries[name] = e.name + ': ' + e.message; }
    }
    const fine = await (await fetch(args.other + '/plain')).text();
    return {tries, fine};
  }`);
  assert.equal(result.failed, false, JSON.stringify(result));
  const value = JSON.parse(result.stdout) as {tries: Record<string, string>; fine: string};
  for (const [name, outcome] of Object.entries(value.tries)) assert.match(outcome, /^TypeError: The placeholder of secret "API" was found .* may be sent only to api\.toolcell\.test/, name);
  assert.equal(value.fine, 'other', 'the host itself stays reachable');
  assert.deepEqual(otherSeen.slice(before).map((s) => s.url), ['/plain'], 'only the clean request arrived');
  assert.deepEqual(decisions.map((d) => [d.allowed, d.rule, d.secrets]), [
    [false, 'secret', ['API']], [false, 'secret', ['API']], [false, 'secret', ['API']], [false, 'secret', ['API']], [true, undefined, undefined]]);
});

test('an unlisted host or address is refused with a message naming the grant', async () => {
  const {result, decisions} = await run(`export default async function (args) {
    const out = [];
    for (const url of ['http://127.0.0.2:${'${1}'}/', 'https://evil.toolcell.test/', 'file:///etc/passwd', 'http://user:pw@127.0.0.1:1/']) {
      try { await fetch(url); out.push('sent'); } catch (e) { out.push(e.message); }
    }
    return out;
  }`.replace('${1}', String(otherPort)));
  const value = JSON.parse(result.stdout) as string[];
  assert.match(value[0]!, /127\.0\.0\.2:\d+ is not in the profile's egress allow list/);
  assert.match(value[1]!, /evil\.toolcell\.test:443 is not in the profile's egress allow list/);
  assert.match(value[2]!, /only http: and https:/);
  assert.match(value[3]!, /credentials in the URL/);
  assert.ok(decisions.every((d) => !d.allowed && d.rule === 'egress'));
});

// invariant: isolate:fetch:grant-only
test('without an egress grant there is no fetch, and context.secrets is empty; with one, nothing of the host is reachable from fetch or its answers', async () => {
  const none = await run(`export default (args, context) => ({fetch: typeof fetch, secrets: context.secrets, keys: Object.getOwnPropertyNames(globalThis).filter((k) => /fetch|ivm|^Reference$|Callback/i.test(k))})`, {egress: false});
  assert.deepEqual(JSON.parse(none.result.stdout), {fetch: 'undefined', secrets: {}, keys: []});
  const granted = await run(`export default async (args) => {
    const res = await fetch(args.other + '/');
    const seen = [];
    for (const v of [fetch, res, res.headers, res.text, res.headers.get]) {
      for (const k of Reflect.ownKeys(v)) { const d = Object.getOwnPropertyDescriptor(v, k); if (d.value && typeof d.value === 'object' && !(d.value instanceof Object)) seen.push(String(k)); }
      if (Object.getPrototypeOf(v) !== Object.prototype && Object.getPrototypeOf(v) !== Function.prototype && Object.getPrototypeOf(v) !== Object.getPrototypeOf(async function () {})) seen.push('foreign prototype');
    }
    return {seen, keys: Object.getOwnPropertyNames(globalThis).filter((k) => /ivm|^Reference$|Callback|deliver/i.test(k)), src: fetch.toString().includes('send(')};
  }`);
  assert.equal(granted.result.failed, false, JSON.stringify(granted.result));
  assert.deepEqual(JSON.parse(granted.result.stdout), {seen: [], keys: [], src: true});
});

test('response bodies are bounded by maxBytesIn and by the isolate\'s memoryMb', async () => {
  const source = `export default async (args) => { try { await fetch(args.api + '/big'); return 'read'; } catch (e) { return e.message; } }`;
  const byBytes = await run(source, {maxBytesIn: 1024 * 1024});
  assert.match(JSON.parse(byBytes.result.stdout) as string, /maxBytesIn/);
  const byMemory = await run(source, {limits: {...LIMITS, memoryMb: 16}});
  assert.match(JSON.parse(byMemory.result.stdout) as string, /larger than 2097152 bytes \(memoryMb \/ 8/);
  const requests = await run(`export default async (args) => { const out = []; for (let i = 0; i < 3; i++) { try { await fetch(args.other + '/'); out.push('ok'); } catch (e) { out.push(e.message); } } return out; }`, {maxRequests: 2});
  const answers = JSON.parse(requests.result.stdout) as string[];
  assert.deepEqual(answers.slice(0, 2), ['ok', 'ok']);
  assert.match(answers[2]!, /maxRequests/);
});

test('a fetch that waits on a stalled upstream is ended by the call\'s deadline (timeoutMs of wall clock while idle), and the request is destroyed', async () => {
  const before = closedRequests.length;
  const started = performance.now();
  const {result, decisions} = await run(`export default async (args) => { await fetch(args.api + '/stall'); return 'answered'; }`, {limits: {...LIMITS, timeoutMs: 1000}, requestTimeoutMs: 60_000});
  const elapsed = performance.now() - started;
  assert.equal(result.timedOut, true, JSON.stringify(result));
  assert.ok(elapsed < 1000 + 15_000, `ended in ${Math.round(elapsed)} ms`);
  const deadline = performance.now() + 10_000;
  while (closedRequests.length === before && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(closedRequests.length, before + 1, 'the upstream request was closed when the call ended');
  assert.deepEqual(decisions.map((d) => d.allowed), [false]);
  // The backend still answers.
  const next = await run(`export default async (args) => (await fetch(args.other + '/')).text()`);
  assert.equal(JSON.parse(next.result.stdout), 'other');
});

test('cancelling the call disposes its request', async () => {
  const before = closedRequests.length;
  const stallsBefore = apiSeen.filter((s) => s.url === '/stall').length;
  const controller = new AbortController();
  const pending = run(`export default async (args) => { await fetch(args.api + '/stall'); return 'answered'; }`, {requestTimeoutMs: 60_000, signal: controller.signal});
  const deadline = performance.now() + 10_000;
  while (apiSeen.filter((s) => s.url === '/stall').length === stallsBefore && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(apiSeen.filter((s) => s.url === '/stall').length, stallsBefore + 1, 'the request reached the upstream');
  controller.abort();
  const {result} = await pending;
  assert.equal(result.isCanceled, true);
  while (closedRequests.length === before && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(closedRequests.length, before + 1);
});

test('a call with egress whose worker dies is not run again: its request reached the upstream once, and the call fails BACKEND_UNAVAILABLE', async () => {
  const stalls = () => apiSeen.filter((s) => s.url === '/stall').length;
  const before = stalls();
  const pending = run(`export default async (args) => { await fetch(args.api + '/stall'); return 'answered'; }`, {requestTimeoutMs: 60_000})
    .then((r) => ({result: r.result}), (error: unknown) => ({error}));
  const deadline = performance.now() + 15_000;
  while (stalls() === before && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(stalls(), before + 1, 'the request reached the upstream');
  // Kill the worker this test file's backend started (by its PID), as a crash would.
  for (const pid of backend.workerPids()) process.kill(pid, 'SIGKILL');
  const outcome = await pending;
  assert.ok('error' in outcome, `the call was not re-run to success: ${JSON.stringify(outcome)}`);
  assert.equal((outcome.error as {code?: string}).code, 'BACKEND_UNAVAILABLE');
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(stalls(), before + 1, 'the request was sent once, not again by a re-run');
  // The backend replaces its worker and answers.
  const next = await run(`export default async (args) => (await fetch(args.other + '/')).text()`);
  assert.equal(JSON.parse(next.result.stdout), 'other');
});
