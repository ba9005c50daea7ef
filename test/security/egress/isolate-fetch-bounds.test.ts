// The isolate fetch's bounds in the server process, attacked for real on loopback: a body of
// control bytes cannot multiply in the answer (base64, not JSON escapes), a call cannot hold
// more than MAX_FETCHES_IN_FLIGHT answers or memoryMb / 8 of bodies at once, and a flood of
// refused or unreadable requests is charged and writes a bounded number of audit events.
import assert from 'node:assert/strict';
import {createServer, type IncomingMessage, type Server, type ServerResponse} from 'node:http';
import type {AddressInfo} from 'node:net';
import {after, before, test} from 'node:test';
import type {IsolateJob} from '../../../src/backends/backend.ts';
import {isolateEgress, MAX_FETCHES_IN_FLIGHT} from '../../../src/egress/isolate-fetch.ts';
import {SecretStore} from '../../../src/egress/secrets.ts';
import type {EgressDecision} from '../../../src/egress/tls-intercept.ts';
import {useIsolateBackend} from '../../support/isolate-backend.ts';

const backend = useIsolateBackend({workers: 1, poolSize: 0});
let server: Server;
let port = 0;
/** Requests parked by /hold until the test releases them. */
const parked: ServerResponse[] = [];

before(async () => {
  server = createServer((req: IncomingMessage, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const n = Number(url.searchParams.get('n') ?? 0);
    if (url.pathname === '/nul') {
      res.end(Buffer.alloc(n));
    } else if (url.pathname === '/bytes') {
      res.end(Buffer.from(Array.from({length: 256}, (_, i) => i)));
    } else if (url.pathname === '/hold') {
      parked.push(res);
    } else if (url.pathname === '/park') {
      // n bytes, then the end only when the test says so.
      res.write(Buffer.alloc(n, 0x61));
      parked.push(res);
    } else {
      res.end('ok');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
after(() => {
  for (const res of parked) res.destroy();
  server?.closeAllConnections();
  server?.close();
});

function egressFor(memoryMb: number, maxRequests = 1000) {
  const decisions: EgressDecision[] = [];
  let requests = 0;
  let unaudited = 0;
  const egress = isolateEgress({
    secrets: SecretStore.empty().forCall([]), requestTimeoutMs: 10_000, memoryMb, onDecision: (d) => decisions.push(d),
    onUnaudited: (n) => (unaudited = n),
    resolve: async (host, p) => (host === '127.0.0.1' && p === port ? {address: '127.0.0.1'} : {refused: 'not in the allow list'}),
    budget: {request: () => (++requests > maxRequests ? `over the call's limit of ${maxRequests} requests (maxRequests)` : undefined), out: () => undefined, in: () => undefined},
  });
  const fetch = (path: string, method = 'GET') => egress.fetch(JSON.stringify({method, url: `http://127.0.0.1:${port}${path}`, headers: [], body: null}), AbortSignal.timeout(30_000));
  return {egress, fetch, decisions, requests: () => requests, unaudited: () => unaudited};
}

// invariant: isolate:fetch:server-memory-bounded
test('a body of NUL bytes at the memoryMb / 8 cap crosses as base64 (4/3 chars per byte), not as 6-char JSON escapes', async () => {
  const {fetch} = egressFor(16);
  const n = 2 * 2 ** 20 - 1;
  const answer = await fetch(`/nul?n=${n}`);
  const parsed = JSON.parse(answer) as {ok: boolean};
  assert.equal(parsed.ok, true, answer.slice(0, 200));
  assert.ok(answer.length < (n * 4) / 3 + 4096, `answer of ${answer.length} chars for ${n} bytes`);
  const over = JSON.parse(await fetch(`/nul?n=${n + 2}`)) as {ok: boolean; message: string};
  assert.equal(over.ok, false);
  assert.match(over.message, /memoryMb \/ 8/);
});

// invariant: isolate:fetch:server-memory-bounded
test(`a call cannot have more than ${MAX_FETCHES_IN_FLIGHT} fetches waiting, nor memoryMb / 8 of bodies in flight together`, async () => {
  const {fetch, decisions} = egressFor(16);
  const held = Array.from({length: MAX_FETCHES_IN_FLIGHT}, () => fetch('/hold'));
  const deadline = Date.now() + 10_000;
  while (parked.length < MAX_FETCHES_IN_FLIGHT && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(parked.length, MAX_FETCHES_IN_FLIGHT);
  const refused = JSON.parse(await fetch('/hold')) as {ok: boolean; message: string};
  assert.equal(refused.ok, false);
  assert.match(refused.message, new RegExp(`at most ${MAX_FETCHES_IN_FLIGHT} fetches`));
  assert.equal(parked.length, MAX_FETCHES_IN_FLIGHT, 'the refused fetch never reached the upstream');
  for (const res of parked.splice(0)) res.end('late');
  for (const answer of await Promise.all(held)) assert.equal((JSON.parse(answer) as {ok: boolean}).ok, true);
  assert.equal((JSON.parse(await fetch('/')) as {ok: boolean}).ok, true, 'answered again once the others were delivered');
  assert.ok(decisions.some((d) => !d.allowed));

  // Two bodies of 1.2 MiB each whose ends never come: together over the 2 MiB cap of memoryMb 16, so one is refused.
  const n = 1.2 * 2 ** 20;
  const two = [fetch(`/park?n=${n}`), fetch(`/park?n=${n}`)];
  const first = JSON.parse(await Promise.race(two)) as {ok: boolean; message?: string};
  assert.equal(first.ok, false);
  assert.match(first.message ?? '', /in flight together exceed/);
  for (const res of parked.splice(0)) res.end();
  await Promise.all(two);
  assert.equal((JSON.parse(await fetch(`/nul?n=${n}`)) as {ok: boolean}).ok, true, 'the bytes were released');
});

// invariant: egress:audit:every-decision
test('a flood of refused and unreadable isolate fetches is charged to maxRequests and writes at most maxRequests + 1 audit events', async () => {
  const {egress, fetch, decisions, requests, unaudited} = egressFor(16, 5);
  const answers = [];
  for (let i = 0; i < 300; i++) answers.push(await fetch('/', 'TRACE'));
  for (let i = 0; i < 100; i++) answers.push(await egress.fetch('{not json', AbortSignal.timeout(10_000)));
  for (let i = 0; i < 100; i++) answers.push(await egress.fetch(JSON.stringify({method: 'GET', url: 'not a url', headers: [], body: null}), AbortSignal.timeout(10_000)));
  assert.ok(answers.every((a) => (JSON.parse(a) as {ok: boolean}).ok === false));
  assert.equal(requests(), 500, 'every request is charged, readable or not');
  assert.ok(decisions.length <= 6, `${decisions.length} audit decisions`);
  assert.equal(decisions.length + unaudited(), 500, 'the rest are counted');
  assert.match((JSON.parse(await fetch('/')) as {message: string}).message, /maxRequests/, 'still answering, with the limit');
});

// invariant: isolate:fetch:grant-only
test('bytes cross into the isolate unchanged (base64 decoded there): arrayBuffer, bytes and text', async () => {
  const {egress} = egressFor(64);
  const job: IsolateJob = {kind: 'isolate', id: 'bytes-1', filename: 'test/bytes.js', args: {url: `http://127.0.0.1:${port}/bytes`, text: `http://127.0.0.1:${port}/`},
    limits: {timeoutMs: 5000, memoryMb: 64, outputBytes: 64 * 1024}, egress,
    source: `export default async (args) => {
      const a = new Uint8Array(await (await fetch(args.url)).arrayBuffer());
      const b = await (await fetch(args.url)).bytes();
      const t = await (await fetch(args.text)).text();
      return {a: Array.from(a).every((v, i) => v === i) && a.length, b: b.length, t};
    }`};
  const result = await backend.run(job, {signal: AbortSignal.timeout(40_000)});
  assert.equal(result.failed, false, JSON.stringify(result));
  assert.deepEqual(JSON.parse(result.stdout), {a: 256, b: 256, t: 'ok'});
});
