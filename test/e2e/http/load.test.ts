/**
 * Load: 50 concurrent SDK clients (half 2025-11-25 sessions, half 2026-07-28) x 20 calls each
 * against an isolate tool over HTTP. Correctness only: zero errors, every call answered with
 * its own result, every call audited once. Latency numbers belong to bench/http-load.mjs.
 */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {QuotaAdmission} from '../../../src/policy/quota.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {anyRuntime, connectHttp, KEYS, RUNTIME_KINDS, startService, until, useFixtures} from './support.ts';

const CLIENTS = 50;
const CALLS = 20;

const fixtures = useFixtures();

for (const kind of RUNTIME_KINDS) {
  test(`${kind} runtime: ${CLIENTS} clients x ${CALLS} calls: zero errors, no call lost, each result its own`, {timeout: 300_000}, async () => {
    const quota = new QuotaAdmission({defaults: {ratePerSec: 20, burst: 40, maxInFlight: 16}, principals: {'key:load': {ratePerSec: 100_000, burst: 100_000, maxInFlight: CLIENTS}}});
    const env = await anyRuntime(kind, fixtures, {admission: quota});
    const service = await startService(env.runtime, {
      apiKeys: [{name: 'load', sha256: hashApiKey(KEYS.alice)}],
      grants: [{principal: 'key:load', packages: ['fixture']}],
      quotas: {principals: {'key:load': {ratePerSec: 100_000, burst: 100_000, maxInFlight: CLIENTS}}},
      sessions: {maxPerPrincipal: CLIENTS},
    });
    try {
      const clients = await Promise.all(Array.from({length: CLIENTS}, (_, i) => connectHttp(service.url, {token: KEYS.alice, era: i % 2 === 0 ? 'legacy' : 'modern'})));
      const failures: string[] = [];
      let answered = 0;
      await Promise.all(clients.map(async ({client}, c) => {
        for (let i = 0; i < CALLS; i++) {
          const x = c * 1000 + i;
          try {
            const result = await client.callTool({name: 'fixture__double', arguments: {x}});
            const text = (result.content as Array<{text: string}>)[0]?.text;
            if (result.isError || text !== String(2 * x)) failures.push(`client ${c} call ${i}: ${JSON.stringify(result)}`);
            answered++;
          } catch (err) {
            failures.push(`client ${c} call ${i}: ${(err as Error).message}`);
          }
        }
      }));
      await Promise.all(clients.map((c) => c.close()));
      assert.deepEqual(failures.slice(0, 5), [], `${failures.length} failures`);
      assert.equal(answered, CLIENTS * CALLS);
      await until(async () => (await env.auditEvents()).filter((e) => e.tool === 'fixture__double').length >= CLIENTS * CALLS, 10_000, 'every call audited');
      const events = (await env.auditEvents()).filter((e) => e.tool === 'fixture__double');
      assert.equal(events.length, CLIENTS * CALLS, 'one audit event per call');
      assert.ok(events.every((e) => e.outcome === 'ok' && e.principal === 'key:load' && e.transport === 'http'));
      assert.equal(new Set(events.map((e) => e.jobId)).size, CLIENTS * CALLS, 'every call is its own job');
      assert.equal(quota.inFlight('key:load'), 0, 'every admission was released');
    } finally {
      await service.shutdown({drainMs: 1000});
    }
  });
}
