// 2025-protocol sessions shared through Redis: two in-process HTTP services stand for two replicas; a real SDK client's requests alternate between them.
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {Client, StreamableHTTPClientTransport} from '@modelcontextprotocol/client';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {RedisQuotaStore} from '../../../src/policy/redis-quota.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {RedisSessionRecords} from '../../../src/policy/session-records.ts';
import {fakeRuntime, KEYS, openRawSession, post, startService, writeFixtures, type Fixtures} from '../../e2e/http/support.ts';
import {missingPrograms, startRedis, type TestRedis} from '../../support/redis-server.ts';

const skip = missingPrograms('redis-server');
let fixtures: Fixtures | undefined;
let redis: TestRedis | undefined;
const stores: RedisQuotaStore[] = [];
const services: HttpService[] = [];

const CONFIG = {
  apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
  grants: [{principal: 'key:alice', packages: '*'}, {principal: 'key:bob', packages: '*'}],
};

/** A replica: its own runtime and service, quotas and session records in the shared Redis. */
async function replica(): Promise<HttpService> {
  const store = new RedisQuotaStore({defaults: {ratePerSec: 1000, burst: 1000, maxInFlight: 16}, url: redis!.url, keyPrefix: 'sessions-test:'});
  stores.push(store);
  const {runtime} = await fakeRuntime(fixtures!, {admission: store});
  const service = await startService(runtime, CONFIG, {sessionRecords: new RedisSessionRecords(store.client, 'sessions-test:'), sharedState: () => store.report()});
  services.push(service);
  const deadline = Date.now() + 10_000;
  while (!store.report().reachable) {
    if (Date.now() > deadline) throw new Error('store did not connect');
    await new Promise((r) => setTimeout(r, 50));
  }
  return service;
}

let a: HttpService;
let b: HttpService;
before(async () => {
  if (skip) return;
  fixtures = await writeFixtures();
  redis = await startRedis();
  a = await replica();
  b = await replica();
});
after(async () => {
  await Promise.all(services.map((s) => s.shutdown({drainMs: 0}).catch(() => {})));
  await Promise.all(stores.map((s) => s.close().catch(() => {})));
  await redis?.dispose();
  await fixtures?.dispose();
});

// invariant: scale:sessions:shared
test('a 2025 session opened on one replica works on the other, request after request (real SDK client)', {skip}, async () => {
  let n = 0;
  const seen: string[] = [];
  // Every request goes to the other replica than the one before (a balancer without affinity).
  const alternate: typeof fetch = (input, init) => {
    const target = (n++ % 2 === 0 ? a : b).origin;
    seen.push(target);
    const url = new URL(input instanceof Request ? input.url : String(input));
    return fetch(`${target}${url.pathname}${url.search}`, init);
  };
  const transport = new StreamableHTTPClientTransport(new URL(a.url), {authProvider: {token: async () => KEYS.alice}, fetch: alternate});
  const client = new Client({name: 'replica-hopper', version: '1.0.0'});
  try {
    await client.connect(transport);
    assert.equal(client.getNegotiatedProtocolVersion?.() ?? '2025-11-25', '2025-11-25');
    assert.ok(transport.sessionId, 'a 2025 session');
    for (let i = 0; i < 6; i++) {
      const result = await client.callTool({name: 'fixture__double', arguments: {x: i}});
      assert.equal(result.isError, undefined, JSON.stringify(result));
    }
    assert.equal((await client.listTools()).tools.length, 4);
    assert.ok(new Set(seen).size === 2, 'requests reached both replicas');
  } finally {
    await client.close().catch(() => {});
  }
});

test('a shared session id answers only its principal: another principal gets 404 on every replica, and DELETE ends it everywhere', {skip}, async () => {
  const alice = {authorization: `Bearer ${KEYS.alice}`};
  const bob = {authorization: `Bearer ${KEYS.bob}`};
  const id = await openRawSession(a.url, alice);
  const list = {jsonrpc: '2.0', id: 2, method: 'tools/list'};
  const headers = (who: Record<string, string>) => ({...who, 'mcp-session-id': id, 'mcp-protocol-version': '2025-11-25'});
  // Bob first, on the replica that never saw the session: it must not be rebuilt for him.
  for (const service of [b, a]) {
    const stolen = await post(service.url, list, headers(bob));
    assert.equal(stolen.status, 404, 'a foreign principal cannot use the session');
    await stolen.text();
  }
  const ok = await post(b.url, list, headers(alice));
  assert.equal(ok.status, 200);
  await ok.text();
  const gone = await fetch(b.url, {method: 'DELETE', headers: headers(alice)});
  assert.ok(gone.status < 300, `DELETE answered ${gone.status}`);
  await gone.text();
  for (const service of [a, b]) {
    const after = await post(service.url, list, headers(alice));
    assert.equal(after.status, 404, 'ended on every replica');
    await after.text();
  }
});
