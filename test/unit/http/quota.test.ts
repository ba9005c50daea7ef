import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ToolcellError} from '../../../src/errors.ts';
import type {Principal} from '../../../src/policy/principal.ts';
import {IN_FLIGHT_RETRY_MS, QuotaAdmission, quotaQueueProblems} from '../../../src/policy/quota.ts';

const principal = (id: string): Principal => ({id, kind: 'api-key', scopes: [], packages: '*'});
const tool = {name: 'p__t'};
const alice = principal('key:alice');
const bob = principal('key:bob');

function clock() {
  let t = 1000;
  return {now: () => t, advance: (ms: number) => (t += ms)};
}

const refusal = (fn: () => unknown): ToolcellError => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ToolcellError);
    return err;
  }
  assert.fail('expected RATE_LIMITED');
};

test('a burst is admitted, the next call is RATE_LIMITED with the exact wait until a token refills', () => {
  const c = clock();
  const q = new QuotaAdmission({defaults: {ratePerSec: 4, burst: 3, maxInFlight: 100}, now: c.now});
  for (let i = 0; i < 3; i++) q.admit(alice, tool)();
  const err = refusal(() => q.admit(alice, tool));
  assert.equal(err.code, 'RATE_LIMITED');
  assert.equal(err.data.limit, 'rate');
  assert.equal(err.data.retryAfterMs, 250, '1 token at 4/s');
  c.advance(249);
  assert.equal(refusal(() => q.admit(alice, tool)).data.retryAfterMs, 1);
  c.advance(1);
  q.admit(alice, tool)();
});

test('tokens refill at ratePerSec up to burst, never beyond', () => {
  const c = clock();
  const q = new QuotaAdmission({defaults: {ratePerSec: 10, burst: 2, maxInFlight: 100}, now: c.now});
  c.advance(60_000);
  q.admit(alice, tool)();
  q.admit(alice, tool)();
  assert.equal(refusal(() => q.admit(alice, tool)).data.limit, 'rate');
});

test('the in-flight cap refuses without consuming a token, and a release makes room', () => {
  const c = clock();
  const q = new QuotaAdmission({defaults: {ratePerSec: 1, burst: 3, maxInFlight: 2}, now: c.now});
  const r1 = q.admit(alice, tool);
  q.admit(alice, tool);
  const err = refusal(() => q.admit(alice, tool));
  assert.equal(err.data.limit, 'in-flight');
  assert.equal(err.data.retryAfterMs, IN_FLIGHT_RETRY_MS);
  assert.equal(q.inFlight('key:alice'), 2);
  r1();
  r1();
  assert.equal(q.inFlight('key:alice'), 1, 'release is idempotent');
  q.admit(alice, tool);
  assert.equal(refusal(() => q.admit(alice, tool)).data.limit, 'in-flight', 'the third token was kept by the refused call');
});

test("one principal's flood never touches another principal's bucket or in-flight allowance", () => {
  const c = clock();
  const limited: string[] = [];
  const q = new QuotaAdmission({defaults: {ratePerSec: 1, burst: 5, maxInFlight: 3}, now: c.now, onLimited: (p, limit) => limited.push(`${p.id}:${limit}`)});
  let refused = 0;
  for (let i = 0; i < 1000; i++) {
    try {
      q.admit(alice, tool);
    } catch {
      refused++;
    }
  }
  assert.equal(refused, 997);
  assert.ok(limited.every((l) => l.startsWith('key:alice:')));
  for (let i = 0; i < 3; i++) q.admit(bob, tool);
  assert.equal(q.inFlight('key:bob'), 3);
});

test('per-principal overrides replace only the fields they name', () => {
  const q = new QuotaAdmission({defaults: {ratePerSec: 1, burst: 1, maxInFlight: 1}, principals: {'key:bob': {burst: 10, maxInFlight: 5}}});
  assert.deepEqual(q.limitsOf('key:bob'), {ratePerSec: 1, burst: 10, maxInFlight: 5});
  assert.deepEqual(q.limitsOf('key:alice'), {ratePerSec: 1, burst: 1, maxInFlight: 1});
  for (let i = 0; i < 5; i++) q.admit(bob, tool);
  assert.throws(() => new QuotaAdmission({defaults: {ratePerSec: 0, burst: 1, maxInFlight: 1}}), RangeError);
  assert.throws(() => new QuotaAdmission({defaults: {ratePerSec: 1, burst: 1, maxInFlight: 1}, principals: {x: {maxInFlight: 0}}}), RangeError);
});

test('idle full buckets are forgotten, so memory does not grow with principals seen once', () => {
  const c = clock();
  const q = new QuotaAdmission({defaults: {ratePerSec: 1000, burst: 1, maxInFlight: 1}, now: c.now});
  for (let i = 0; i < 10_000; i++) {
    q.admit(principal(`sub:${i}`), tool)();
    c.advance(2);
  }
  assert.ok(q.trackedPrincipals <= 4096, `tracked ${q.trackedPrincipals}`);
});

test('quotaQueueProblems refuses an in-flight cap that could fill a dispatcher queue by itself', () => {
  const ok = new QuotaAdmission({defaults: {ratePerSec: 1, burst: 1, maxInFlight: 16}});
  assert.deepEqual(quotaQueueProblems(ok, [], {isolate: {maxQueued: 256}, container: {maxQueued: 64}}), []);
  const big = new QuotaAdmission({defaults: {ratePerSec: 1, burst: 1, maxInFlight: 16}, principals: {'key:bulk': {maxInFlight: 64}}});
  const problems = quotaQueueProblems(big, ['key:bulk'], {isolate: {maxQueued: 256}, container: {maxQueued: 64}});
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /key:bulk.*64/);
});
