// RedisQuotaStore against a real redis-server: two stores stand for two replicas sharing one principal's bucket, slots and leases; outages in both fail modes.
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {ToolcellError} from '../../../src/errors.ts';
import type {Principal} from '../../../src/policy/principal.ts';
import {RedisQuotaStore, redactRedisUrl, type RedisQuotaOptions} from '../../../src/policy/redis-quota.ts';
import {missingPrograms, startRedis, type TestRedis} from '../../support/redis-server.ts';

const skip = missingPrograms('redis-server');
const principal = (id: string): Principal => ({id, kind: 'api-key', scopes: [], packages: '*'});
const tool = {name: 'p__t'};
let redis: TestRedis;
const stores: RedisQuotaStore[] = [];
let n = 0;

/** A store on the test Redis with its own key prefix (tests do not share buckets). */
function store(prefix: string, options: Partial<RedisQuotaOptions> = {}): RedisQuotaStore {
  const s = new RedisQuotaStore({defaults: {ratePerSec: 0.001, burst: 100, maxInFlight: 100}, url: redis.url, keyPrefix: prefix, leaseMs: 1000, ...options});
  stores.push(s);
  return s;
}

async function until(what: string, check: () => boolean | Promise<boolean>, deadlineMs = 15_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`${what}: not within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function refusal(p: Promise<unknown>): Promise<ToolcellError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ToolcellError, String(err));
    return err;
  }
  assert.fail('expected a refusal');
}

const ready = (s: RedisQuotaStore) => until('store connected', () => s.report().reachable);

before(async () => {
  if (!skip) redis = await startRedis();
});
after(async () => {
  await Promise.all(stores.map((s) => s.close().catch(() => {})));
  await redis?.dispose();
});

// invariant: scale:quota:shared
test('two replicas share one token bucket: together they admit the burst, not twice it', {skip}, async () => {
  const prefix = `t${++n}:`;
  const a = store(prefix, {defaults: {ratePerSec: 0.001, burst: 5, maxInFlight: 100}});
  const b = store(prefix, {defaults: {ratePerSec: 0.001, burst: 5, maxInFlight: 100}});
  await Promise.all([ready(a), ready(b)]);
  const alice = principal('key:alice');
  const outcomes = await Promise.allSettled(Array.from({length: 10}, (_, i) => (i % 2 ? a : b).admit(alice, tool)));
  const admitted = outcomes.filter((o) => o.status === 'fulfilled');
  assert.equal(admitted.length, 5, 'exactly the burst is admitted across both replicas');
  for (const o of outcomes) if (o.status === 'rejected') assert.equal((o.reason as ToolcellError).data.limit, 'rate');
  // Another principal's bucket is untouched.
  (await a.admit(principal('key:bob'), tool))();
});

test('the in-flight cap holds across replicas and a release on one frees a slot for the other', {skip}, async () => {
  const prefix = `t${++n}:`;
  const a = store(prefix, {defaults: {ratePerSec: 1000, burst: 1000, maxInFlight: 2}});
  const b = store(prefix, {defaults: {ratePerSec: 1000, burst: 1000, maxInFlight: 2}});
  await Promise.all([ready(a), ready(b)]);
  const alice = principal('key:alice');
  const r1 = await a.admit(alice, tool);
  await b.admit(alice, tool);
  const refused = await refusal(b.admit(alice, tool));
  assert.equal(refused.code, 'RATE_LIMITED');
  assert.equal(refused.data.limit, 'in-flight');
  assert.equal(await a.sharedInFlight('key:alice'), 2);
  r1();
  r1(); // idempotent
  await until('released slot visible', async () => (await a.sharedInFlight('key:alice')) === 1);
  await b.admit(alice, tool);
});

test('a running call keeps its slot past the lease (renewed); a dead replica\'s slot comes back after the lease', {skip}, async () => {
  const prefix = `t${++n}:`;
  const limits = {ratePerSec: 1000, burst: 1000, maxInFlight: 1};
  const live = store(prefix, {defaults: limits});
  const other = store(prefix, {defaults: limits});
  await Promise.all([ready(live), ready(other)]);
  const alice = principal('key:alice');
  const release = await live.admit(alice, tool);
  await new Promise((r) => setTimeout(r, 2500)); // 2.5 leases: renewal must have kept it
  assert.equal((await refusal(other.admit(alice, tool))).data.limit, 'in-flight', 'a renewed lease still counts');
  release();
  const dying = store(prefix, {defaults: limits});
  await ready(dying);
  await until('slot free', async () => (await other.sharedInFlight('key:alice')) === 0);
  await dying.admit(alice, tool); // never released: the replica "dies"
  const died = Date.now();
  await dying.close(); // stops renewal, like SIGKILL would
  assert.equal((await refusal(other.admit(alice, tool))).data.limit, 'in-flight');
  await until('lease expired', async () => (await other.sharedInFlight('key:alice')) === 0, 5000);
  assert.ok(Date.now() - died <= 1000 + 1500, 'the slot came back within about one lease');
  (await other.admit(alice, tool))();
});

// invariant: scale:redis:fail-closed
test('Redis down: fail-closed refuses BACKEND_UNAVAILABLE without the password, fail-open admits locally; both recover when Redis returns', {skip}, async () => {
  const prefix = `t${++n}:`;
  const closed = store(prefix, {defaults: {ratePerSec: 1000, burst: 1000, maxInFlight: 10}});
  const open = store(prefix, {defaults: {ratePerSec: 1000, burst: 1000, maxInFlight: 1}, failMode: 'open'});
  await Promise.all([ready(closed), ready(open)]);
  const alice = principal('key:alice');
  await redis.stop();
  try {
    await until('outage seen', () => !closed.report().reachable && !open.report().reachable, 10_000);
    const refused = await refusal(closed.admit(alice, tool));
    assert.equal(refused.code, 'BACKEND_UNAVAILABLE');
    assert.match(refused.message, /Redis/);
    assert.equal(refused.data.dependency, 'redis');
    const text = JSON.stringify({m: refused.message, d: refused.data});
    assert.ok(!text.includes(redis.password) && !text.includes(String(redis.port)), 'neither the password nor the address reach the client');
    assert.deepEqual(closed.report(), {store: 'redis', reachable: false, failMode: 'closed', admitting: 'refused'});
    assert.deepEqual(open.report(), {store: 'redis', reachable: false, failMode: 'open', admitting: 'local'});
    // Fail-open still enforces this replica's own limits.
    const local = await open.admit(alice, tool);
    assert.equal((await refusal(open.admit(alice, tool))).data.limit, 'in-flight');
    local();
  } finally {
    await redis.start();
  }
  await until('reconnected', () => closed.report().reachable && open.report().reachable, 15_000);
  (await closed.admit(alice, tool))();
  assert.equal(closed.report().admitting, 'shared');
});

test('a hung Redis (SIGSTOP) refuses calls after the command timeout instead of hanging them, and is seen again once it resumes', {skip}, async () => {
  const prefix = `t${++n}:`;
  const s = store(prefix, {defaults: {ratePerSec: 1000, burst: 1000, maxInFlight: 10}, commandTimeoutMs: 500});
  await ready(s);
  const pid = redis.pid()!;
  process.kill(pid, 'SIGSTOP');
  try {
    const started = Date.now();
    const refused = await refusal(s.admit(principal('key:alice'), tool));
    assert.equal(refused.code, 'BACKEND_UNAVAILABLE');
    assert.ok(Date.now() - started < 5000, 'refused after the command timeout, not left hanging');
    assert.equal(s.report().admitting, 'refused');
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await until('seen reachable again (PING)', () => s.report().reachable, 10_000);
  (await s.admit(principal('key:alice'), tool))();
});

test('redactRedisUrl hides the password and keeps the address', () => {
  assert.equal(redactRedisUrl('redis://:s3cret@10.0.0.1:6380/2'), 'redis://:***@10.0.0.1:6380/2');
  assert.ok(!redactRedisUrl('rediss://user:s3cret@h:1').includes('s3cret'));
  assert.equal(redactRedisUrl('not a url'), '(unparseable redis url)');
  assert.ok(!redactRedisUrl('redis://h:1/?password=s3cret').includes('s3cret'));
});
