/**
 * Session exhaustion: one principal opening sessions without end only evicts its own least
 * recently used sessions; the total cap answers 503 instead of growing memory without bound.
 */
// invariant: http:sessions:bounded
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {fakeRuntime, initializeBody, KEYS, openRawSession, post, startService, writeFixtures} from '../../e2e/http/support.ts';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let service: HttpService;
const ALICE = {Authorization: `Bearer ${KEYS.alice}`};
const BOB = {Authorization: `Bearer ${KEYS.bob}`};

before(async () => {
  fixtures = await writeFixtures();
  const env = await fakeRuntime(fixtures);
  service = await startService(env.runtime, {
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
    grants: [{principal: 'key:alice', packages: ['fixture']}, {principal: 'key:bob', packages: ['fixture']}],
    sessions: {maxPerPrincipal: 2, max: 3},
  });
});
after(async () => {
  await service.shutdown({drainMs: 0});
  await fixtures.dispose();
});

const list = (headers: Record<string, string>, sid: string) =>
  post(service.url, {jsonrpc: '2.0', id: 9, method: 'tools/list'}, {...headers, 'mcp-protocol-version': '2025-11-25', 'mcp-session-id': sid});

test("a principal's sessions beyond maxPerPrincipal evict its own oldest; other principals' sessions are untouched", async () => {
  const bob1 = await openRawSession(service.url, BOB);
  const a1 = await openRawSession(service.url, ALICE);
  const a2 = await openRawSession(service.url, ALICE);
  const a3 = await openRawSession(service.url, ALICE);
  assert.equal((await list(ALICE, a1)).status, 404, 'the least recently used session of alice was closed');
  for (const sid of [a2, a3]) {
    const r = await list(ALICE, sid);
    assert.equal(r.status, 200);
    await r.text();
  }
  const b = await list(BOB, bob1);
  assert.equal(b.status, 200, "bob's session survived alice's churn");
  await b.text();
});

test('beyond the total cap, initialize gets 503 with a JSON-RPC error', async () => {
  const r = await post(service.url, initializeBody(), BOB);
  assert.equal(r.status, 503);
  assert.match(((await r.json()) as {error: {message: string}}).error.message, /too many open sessions/);
});
