/**
 * Attacks on the Streamable HTTP transport (MCP transports §Security Warning, §Session
 * Management; MCP-SECURITY-CHECKLIST 2.2–2.5): foreign Origin, DNS rebinding via Host, oversized
 * bodies, JSON-RPC batches, and session ids that are unknown, expired, or another principal's.
 * Each attack must fail, no tool may run, and a normal call must still work afterwards.
 */
// invariant: http:transport:guarded
import assert from 'node:assert/strict';
import {request as httpRequest} from 'node:http';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {fakeRuntime, initializeBody, KEYS, messagesOf, modernCall, openRawSession, post, startService, writeFixtures} from '../../e2e/http/support.ts';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let env: Awaited<ReturnType<typeof fakeRuntime>>;
let service: HttpService;

const ALICE = {Authorization: `Bearer ${KEYS.alice}`};
const BOB = {Authorization: `Bearer ${KEYS.bob}`};
const LEGACY = {'mcp-protocol-version': '2025-11-25'};
const MAX_BODY = 4096;

before(async () => {
  fixtures = await writeFixtures();
  env = await fakeRuntime(fixtures);
  service = await startService(env.runtime, {
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
    grants: [{principal: 'key:alice', packages: ['fixture']}, {principal: 'key:bob', packages: ['fixture']}],
    allowedOrigins: ['app.toolcell.test'],
    maxBodyBytes: MAX_BODY,
    sessions: {idleSeconds: 1},
  });
});

after(async () => {
  await service.shutdown({drainMs: 0});
  await fixtures.dispose();
});

/** A raw HTTP/1.1 request (fetch cannot set Host): status, headers and body text. */
function raw(options: {method?: string; path?: string; headers?: Record<string, string>; chunks?: string[]}): Promise<{status: number; headers: Record<string, string | string[] | undefined>; body: string}> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({host: '127.0.0.1', port: service.port, method: options.method ?? 'POST', path: options.path ?? '/mcp', headers: options.headers ?? {}}, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({status: res.statusCode ?? 0, headers: res.headers, body}));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const chunk of options.chunks ?? []) req.write(chunk);
    req.end();
  });
}

const call = (x: number) => modernCall('fixture__double', {x});

async function callWorks(headers: Record<string, string> = ALICE): Promise<void> {
  const c = call(4);
  const response = await post(service.url, c.body, {...c.headers, ...headers});
  assert.equal(response.status, 200);
  const [message] = await messagesOf(response);
  assert.equal((message!.result as {content: Array<{text: string}>}).content[0]!.text, '8');
}

function assertJsonRpcError(body: string, code?: number): {code: number; message: string} {
  const parsed = JSON.parse(body) as {jsonrpc: string; error: {code: number; message: string}; id: unknown};
  assert.equal(parsed.jsonrpc, '2.0');
  assert.equal(parsed.id, null);
  if (code !== undefined) assert.equal(parsed.error.code, code);
  return parsed.error;
}

test('a foreign Origin gets 403 with a JSON-RPC error on every route, even with valid credentials; no tool runs', async () => {
  const runs = env.backend.runs;
  for (const origin of ['https://evil.example', 'http://localhost.evil.example', 'null', 'not a url']) {
    const c = call(1);
    const response = await post(service.url, c.body, {...c.headers, ...ALICE, Origin: origin});
    assert.equal(response.status, 403, origin);
    assert.match(assertJsonRpcError(await response.text()).message, /Origin/);
    const metrics = await fetch(`${service.origin}/metrics`, {headers: {Origin: origin}});
    assert.equal(metrics.status, 403);
    await metrics.text();
  }
  assert.equal(env.backend.runs, runs);
  await callWorks({...ALICE, Origin: 'https://app.toolcell.test'});
  await callWorks(ALICE); // no Origin: non-browser clients pass
});

test('a foreign Host (DNS rebinding) gets 403 and no tool runs', async () => {
  const runs = env.backend.runs;
  const c = call(1);
  for (const host of ['evil.example', 'evil.example:80', `attacker.test:${service.port}`, 'localhost.evil.example']) {
    const response = await raw({headers: {'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', Host: host, ...ALICE, ...c.headers}, chunks: [JSON.stringify(c.body)]});
    assert.equal(response.status, 403, host);
    assert.match(assertJsonRpcError(response.body).message, /Host/);
  }
  assert.equal(env.backend.runs, runs);
  const ok = await raw({headers: {'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', Host: `localhost:${service.port}`, ...ALICE, ...c.headers}, chunks: [JSON.stringify(c.body)]});
  assert.equal(ok.status, 200);
});

test('an oversized body gets 413 with a JSON-RPC error, not HTML, whether declared or chunked; no tool runs', async () => {
  const runs = env.backend.runs;
  const big = modernCall('fixture__echo', {text: 'x'.repeat(MAX_BODY * 4)});
  const declared = await post(service.url, big.body, {...big.headers, ...ALICE});
  assert.equal(declared.status, 413);
  assert.match(declared.headers.get('content-type') ?? '', /application\/json/);
  assert.match(assertJsonRpcError(await declared.text(), -32000).message, /Payload Too Large.*4096/);
  const text = JSON.stringify(big.body);
  const chunked = await raw({
    headers: {'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'Transfer-Encoding': 'chunked', ...ALICE, ...big.headers},
    chunks: [text.slice(0, 3000), text.slice(3000, 6000), text.slice(6000)],
  });
  assert.equal(chunked.status, 413);
  assertJsonRpcError(chunked.body, -32000);
  assert.equal(env.backend.runs, runs);
  await callWorks();
});

test('JSON-RPC batches are refused with a JSON-RPC error (batching was removed in 2025-06-18); no tool runs', async () => {
  const runs = env.backend.runs;
  const c = call(1);
  const batches = [[c.body], [c.body, {...c.body, id: 2}], [initializeBody()], []];
  for (const batch of batches) {
    const response = await post(service.url, batch, {...c.headers, ...ALICE});
    assert.equal(response.status, 400);
    assert.match(assertJsonRpcError(await response.text(), -32600).message, /batch/i);
  }
  const sid = await openRawSession(service.url, ALICE);
  const inSession = await post(service.url, [{jsonrpc: '2.0', id: 5, method: 'tools/call', params: {name: 'fixture__double', arguments: {x: 1}}}], {...ALICE, ...LEGACY, 'mcp-session-id': sid});
  assert.equal(inSession.status, 400);
  assertJsonRpcError(await inSession.text(), -32600);
  assert.equal(env.backend.runs, runs);
});

test('malformed requests get JSON-RPC errors: wrong content type 415, invalid JSON 400, unknown method 405', async () => {
  const wrongType = await fetch(service.url, {method: 'POST', headers: {...ALICE, 'Content-Type': 'text/plain'}, body: '{}'});
  assert.equal(wrongType.status, 415);
  assertJsonRpcError(await wrongType.text());
  const notJson = await post(service.url, '{"jsonrpc": "2.0", ', ALICE);
  assert.equal(notJson.status, 400);
  assertJsonRpcError(await notJson.text(), -32700);
  const scalar = await post(service.url, '42', ALICE);
  assert.equal(scalar.status, 400);
  assertJsonRpcError(await scalar.text(), -32600);
  const put = await fetch(service.url, {method: 'PUT', headers: ALICE});
  assert.equal(put.status, 405);
  assert.equal(put.headers.get('allow'), 'GET, POST, DELETE');
  await put.text();
});

test('2025 sessions: ids are long, random, visible ASCII; a request without one gets 400; an unknown one 404', async () => {
  const ids = new Set<string>();
  for (let i = 0; i < 5; i++) ids.add(await openRawSession(service.url, ALICE));
  assert.equal(ids.size, 5);
  for (const id of ids) assert.match(id, /^[\x21-\x7E]{32,}$/);
  const list = {jsonrpc: '2.0', id: 2, method: 'tools/list'};
  const missing = await post(service.url, list, {...ALICE, ...LEGACY});
  assert.equal(missing.status, 400);
  assertJsonRpcError(await missing.text());
  const unknown = await post(service.url, list, {...ALICE, ...LEGACY, 'mcp-session-id': 'Zm9yZ2VkLXNlc3Npb24taWQtMDEyMzQ1Njc4OWFi'});
  assert.equal(unknown.status, 404);
  assertJsonRpcError(await unknown.text(), -32001);
});

test("a session answers only the principal that opened it: another principal's request with its id gets 404", async () => {
  const runs = env.backend.runs;
  const sid = await openRawSession(service.url, ALICE);
  const callBody = {jsonrpc: '2.0', id: 3, method: 'tools/call', params: {name: 'fixture__double', arguments: {x: 5}}};
  const hijack = await post(service.url, callBody, {...BOB, ...LEGACY, 'mcp-session-id': sid});
  assert.equal(hijack.status, 404, 'bob is authenticated but the session is not his');
  assertJsonRpcError(await hijack.text(), -32001);
  const anonymous = await post(service.url, callBody, {...LEGACY, 'mcp-session-id': sid});
  assert.equal(anonymous.status, 401, 'a session id is never a credential');
  await anonymous.text();
  const hijackGet = await fetch(service.url, {headers: {...BOB, ...LEGACY, Accept: 'text/event-stream', 'mcp-session-id': sid}});
  assert.equal(hijackGet.status, 404);
  await hijackGet.text();
  const hijackDelete = await fetch(service.url, {method: 'DELETE', headers: {...BOB, ...LEGACY, 'mcp-session-id': sid}});
  assert.equal(hijackDelete.status, 404);
  await hijackDelete.text();
  assert.equal(env.backend.runs, runs, 'no tool ran');
  const own = await post(service.url, callBody, {...ALICE, ...LEGACY, 'mcp-session-id': sid});
  assert.equal(own.status, 200, 'the owner still uses the session');
  const [message] = await messagesOf(own);
  assert.equal((message!.result as {content: Array<{text: string}>}).content[0]!.text, '10');
});

test('a deleted session and an expired (idle) session both get 404', async () => {
  const list = {jsonrpc: '2.0', id: 2, method: 'tools/list'};
  const deleted = await openRawSession(service.url, ALICE);
  const del = await fetch(service.url, {method: 'DELETE', headers: {...ALICE, ...LEGACY, 'mcp-session-id': deleted}});
  assert.equal(del.status, 200);
  await del.text();
  const afterDelete = await post(service.url, list, {...ALICE, ...LEGACY, 'mcp-session-id': deleted});
  assert.equal(afterDelete.status, 404);
  await afterDelete.text();

  const idle = await openRawSession(service.url, ALICE);
  const first = await post(service.url, list, {...ALICE, ...LEGACY, 'mcp-session-id': idle});
  assert.equal(first.status, 200);
  await first.text();
  await new Promise((resolve) => setTimeout(resolve, 1700)); // idleSeconds is 1; the sweep runs every 250 ms
  const expired = await post(service.url, list, {...ALICE, ...LEGACY, 'mcp-session-id': idle});
  assert.equal(expired.status, 404);
  assertJsonRpcError(await expired.text(), -32001);
});

test('an unsupported MCP-Protocol-Version header gets 400', async () => {
  const sid = await openRawSession(service.url, ALICE);
  const response = await post(service.url, {jsonrpc: '2.0', id: 2, method: 'tools/list'}, {...ALICE, 'mcp-protocol-version': '1999-01-01', 'mcp-session-id': sid});
  assert.equal(response.status, 400);
  await response.text();
});

test('2025 SSE streams start with a priming event and resume only inside their own session and stream', async () => {
  const sid = await openRawSession(service.url, ALICE);
  const response = await post(service.url, {jsonrpc: '2.0', id: 7, method: 'tools/call', params: {name: 'fixture__double', arguments: {x: 2}, _meta: {progressToken: 5}}},
    {...ALICE, ...LEGACY, 'mcp-session-id': sid});
  const text = await response.text();
  assert.match(text, /^id: \S+\nretry: 1000\ndata: \n\n/, 'priming event: an id, a retry hint, empty data');
  const ids = [...text.matchAll(/^id: (\S+)$/gm)].map((m) => m[1]!);
  assert.equal(ids.length, 5, 'priming, three progress notifications (queued, running, finished), the result');

  // Resume after the priming event: the later events of that stream are replayed.
  const controller = new AbortController();
  const resumed = await fetch(service.url, {headers: {...ALICE, ...LEGACY, Accept: 'text/event-stream', 'mcp-session-id': sid, 'last-event-id': ids[0]!}, signal: controller.signal});
  assert.equal(resumed.status, 200);
  const reader = resumed.body!.getReader();
  let replay = '';
  while (!replay.includes('"id":7')) {
    const {value, done} = await reader.read();
    if (done) break;
    replay += new TextDecoder().decode(value);
  }
  controller.abort();
  assert.deepEqual([...replay.matchAll(/^id: (\S+)$/gm)].map((m) => m[1]), ids.slice(1));

  // Another principal cannot resume it, and an id the session never issued is refused.
  const foreign = await fetch(service.url, {headers: {...BOB, ...LEGACY, Accept: 'text/event-stream', 'mcp-session-id': sid, 'last-event-id': ids[0]!}});
  assert.equal(foreign.status, 404);
  await foreign.text();
  const forged = await fetch(service.url, {headers: {...ALICE, ...LEGACY, Accept: 'text/event-stream', 'mcp-session-id': sid, 'last-event-id': 'forged.1'}});
  assert.ok(forged.status >= 400, `forged event id: ${forged.status}`);
  await forged.text();
});
