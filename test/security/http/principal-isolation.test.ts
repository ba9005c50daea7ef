/**
 * Two principals on one service: grants hide and refuse the other's tools (a refusal looks
 * exactly like an unknown tool), and one principal's flood only rate-limits that principal:
 * the other's calls keep succeeding, never BUSY, never RATE_LIMITED.
 */
// invariant: http:principals:isolated
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {QuotaAdmission, quotaQueueProblems} from '../../../src/policy/quota.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {connectHttp, errorCode, fakeRuntime, KEYS, refusalOf, startService, writeFixtures} from '../../e2e/http/support.ts';

/** A dedicated /metrics reader with no grants (a reader granted only some packages is refused at config load). */
const SCRAPER = 'scraper-key-0123456789abcdef0123456789abcd';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let env: Awaited<ReturnType<typeof fakeRuntime>>;
let service: HttpService;
let metrics: ServiceMetrics;
const DISPATCH = {isolate: {concurrency: 2, maxQueued: 8}, container: {concurrency: 1, maxQueued: 8}, queueWaitMs: 30_000, graceMs: 200};

before(async () => {
  fixtures = await writeFixtures();
  metrics = new ServiceMetrics({defaultMetrics: false});
  const quota = new QuotaAdmission({
    defaults: {ratePerSec: 100, burst: 100, maxInFlight: 4},
    principals: {'key:alice': {ratePerSec: 5, burst: 5, maxInFlight: 3}},
    onLimited: (_p, limit) => metrics.rateLimited(limit),
  });
  assert.deepEqual(quotaQueueProblems(quota, ['key:alice'], {isolate: DISPATCH.isolate, container: DISPATCH.container}), [], 'the quotas fit the queues (the service refuses them otherwise)');
  env = await fakeRuntime(fixtures, {admission: quota, dispatch: DISPATCH, onCallFinished: metrics.onCallFinished});
  service = await startService(env.runtime, {
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}, {name: 'scraper', sha256: hashApiKey(SCRAPER)}],
    grants: [{principal: 'key:alice', packages: ['fixture']}, {principal: 'key:bob', packages: ['other']}],
    metrics: {principals: ['key:scraper']},
  }, {metrics});
});

after(async () => {
  await service.shutdown({drainMs: 0});
  await fixtures.dispose();
});

for (const era of ['legacy', 'modern'] as const) {
  test(`${era}: each principal lists only its granted tools`, async () => {
    const alice = await connectHttp(service.url, {token: KEYS.alice, era});
    const bob = await connectHttp(service.url, {token: KEYS.bob, era});
    try {
      assert.deepEqual((await alice.client.listTools()).tools.map((t) => t.name).sort(), ['fixture__double', 'fixture__echo', 'fixture__spin']);
      assert.deepEqual((await bob.client.listTools()).tools.map((t) => t.name), ['other__shout']);
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test(`${era}: calling another principal's tool looks exactly like calling an unknown tool, and nothing runs`, async () => {
    const alice = await connectHttp(service.url, {token: KEYS.alice, era});
    const bob = await connectHttp(service.url, {token: KEYS.bob, era});
    const runs = env.backend.runs;
    const audited = env.audit.events.length;
    try {
      const ungranted = await refusalOf(alice.client.callTool({name: 'other__shout', arguments: {text: 'hi'}}));
      const unknown = await refusalOf(alice.client.callTool({name: 'other__whisper', arguments: {text: 'hi'}}));
      assert.equal(ungranted.code, unknown.code);
      assert.equal(ungranted.message.replace('other__shout', 'NAME'), unknown.message.replace('other__whisper', 'NAME'));
      const reverse = await refusalOf(bob.client.callTool({name: 'fixture__double', arguments: {x: 1}}));
      assert.equal(reverse.code, unknown.code);
      assert.equal(reverse.message.replace('fixture__double', 'NAME'), unknown.message.replace('other__whisper', 'NAME'));
      assert.equal(env.backend.runs, runs, 'no sandbox ran');
      assert.deepEqual(env.audit.events.slice(audited).map((e) => [e.type, e.principal, e.tool, e.rule]), [
        ['tool.call.denied', 'key:alice', 'other__shout', 'grants'],
        ['tool.call.denied', 'key:alice', 'other__whisper', 'unknown-tool'],
        ['tool.call.denied', 'key:bob', 'fixture__double', 'grants'],
      ], 'each refusal is audited (and only the refusals: nothing ran)');
      const own = await bob.client.callTool({name: 'other__shout', arguments: {text: 'hi'}});
      assert.deepEqual(own.content, [{type: 'text', text: 'HI'}]);
    } finally {
      await alice.close();
      await bob.close();
    }
  });
}

test("one principal flooding long calls gets RATE_LIMITED while the other principal's calls keep succeeding (never BUSY)", {timeout: 60_000}, async () => {
  const alice = await connectHttp(service.url, {token: KEYS.alice, era: 'modern'});
  const bob = await connectHttp(service.url, {token: KEYS.bob, era: 'modern'});
  const aliceCodes: Array<string | undefined> = [];
  const retryAfter: number[] = [];
  let flooding = true;
  const flood = (async () => {
    const pending: Array<Promise<void>> = [];
    while (flooding) {
      pending.push(alice.client.callTool({name: 'fixture__spin', arguments: {}}).then((r) => {
        aliceCodes.push(errorCode(r));
        const after = (r._meta?.['toolcell/error'] as {retryAfterMs?: number} | undefined)?.retryAfterMs;
        if (after !== undefined) retryAfter.push(after);
      }));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await Promise.all(pending);
  })();
  try {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const bobResults = await Promise.all([0, 1].map(async (lane) => {
      const texts: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await bob.client.callTool({name: 'other__shout', arguments: {text: `lane${lane}-${i}`}});
        assert.equal(r.isError, undefined, `bob's call failed: ${JSON.stringify(r)}`);
        texts.push((r.content as Array<{text: string}>)[0]!.text);
      }
      return texts;
    }));
    assert.deepEqual(bobResults, [0, 1].map((lane) => [0, 1, 2].map((i) => `LANE${lane}-${i}`)));
  } finally {
    flooding = false;
    await flood;
    await alice.close();
    await bob.close();
  }
  const limited = aliceCodes.filter((c) => c === 'RATE_LIMITED').length;
  assert.ok(limited > 0, 'alice was rate-limited');
  assert.ok(retryAfter.length === limited && retryAfter.every((ms) => ms > 0), 'every refusal says when to retry');
  assert.ok(!aliceCodes.includes('BUSY'), 'alice never reached the dispatcher queue bound either');
  assert.ok(aliceCodes.every((c) => c === 'RATE_LIMITED' || c === 'TIMEOUT'), `alice: ${[...new Set(aliceCodes)].join(',')}`);
  const text = await (await fetch(`${service.origin}/metrics`, {headers: {Authorization: `Bearer ${SCRAPER}`}})).text();
  assert.match(text, /toolcell_rate_limited_total\{limit="(rate|in-flight)"\} [1-9]/);
  assert.match(text, /toolcell_tool_calls_total\{tool="other__shout",outcome="ok"\} [1-9]/);
});
