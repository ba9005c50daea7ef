// Fair share over HTTP with the real service and isolate backend: 20 API keys flood, a quiet key's calls all succeed and start within one round of reaching the dispatcher; the audit file's chain verifies.
// invariant: dispatch:fair-share:quiet-principal-served
import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';
import {test} from 'node:test';
import {verifyAuditChain} from '../../../src/audit/verify-chain.ts';
import {QuotaAdmission} from '../../../src/policy/quota.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {tempDir} from '../../support/temp.ts';
import {connectHttp, realRuntime, startService} from './support.ts';

const FLOODERS = 20;
const PER_FLOODER = 15;
const QUIET_CALLS = 3;
const key = (name: string) => `${name}-key-0123456789abcdef0123456789abcdef`;

test(`${FLOODERS} API keys flooding one isolate backend over HTTP cannot starve a quiet key`, {timeout: 300_000}, async () => {
  const tmp = await tempDir('toolcell-fair-http-');
  await tmp.write('profiles/fair-spin.json', {name: 'fair-spin', backend: 'isolate', limits: {timeoutMs: 5000, memoryMb: 32, outputBytes: 4096}});
  await tmp.write('tools/fair/toolcell.json', {name: 'fair', version: '1.0.0', tools: [{name: 'spin', description: 'Spins 5 ms.',
    inputSchema: {type: 'object', properties: {}, additionalProperties: false}, profile: 'fair-spin', isolate: {entry: 'spin.js'}}]});
  await tmp.write('tools/fair/spin.js', 'export default () => { const t = Date.now(); while (Date.now() - t < 5) {} return "done"; };\n');
  const names = [...Array.from({length: FLOODERS}, (_, i) => `flood${i}`), 'quiet'];
  const quotas = {ratePerSec: 1000, burst: 1000, maxInFlight: PER_FLOODER + 2};
  const quota = new QuotaAdmission({defaults: quotas, principals: {}});
  const env = await realRuntime({toolDir: `${tmp.path}/tools`, profileDir: `${tmp.path}/profiles`, dir: tmp.path}, {
    admission: quota,
    // Two slots, so that the flood queues; generous waits: order is asserted, not time.
    dispatch: {isolate: {concurrency: 2, maxQueued: 1000}, container: {concurrency: 1, maxQueued: 1}, queueWaitMs: 120_000, graceMs: 30_000},
  });
  const service = await startService(env.runtime, {
    apiKeys: names.map((name) => ({name, sha256: hashApiKey(key(name))})),
    grants: names.map((name) => ({principal: `key:${name}`, packages: ['fair']})),
    quotas,
    // 21 tenants share this test's one loopback address; in production they come from their own
    // (or through a proxy, for which the README says to raise maxPerAddress the same way).
    connections: {maxPerAddress: 1024},
  });
  // Watch the order at the dispatcher: when the HTTP layer hands it each call, and when each starts.
  // (Time a request spends in transit and in the service's event loop before that is not the scheduler's.)
  const dispatcher = env.runtime.dispatcher;
  const run = dispatcher.run.bind(dispatcher);
  const starts: string[] = [];
  const quietSeen: {arrivedAfter: number; queuedAtArrival: number; startedAt: number}[] = [];
  dispatcher.run = (job, signal, onStart, onEvent, principal) => {
    const seen = principal === 'key:quiet' ? {arrivedAfter: starts.length, queuedAtArrival: dispatcher.stats().isolate.queued, startedAt: -1} : undefined;
    if (seen) quietSeen.push(seen);
    return run(job, signal, () => {
      if (seen) seen.startedAt = starts.length;
      starts.push(principal ?? '');
      onStart?.();
    }, onEvent, principal);
  };
  const clients: Awaited<ReturnType<typeof connectHttp>>[] = [];
  try {
    for (const name of names) clients.push(await connectHttp(service.url, {token: key(name), era: 'modern'}));
    const quietClient = clients.at(-1)!.client;
    const done: string[] = [];
    const flood: Promise<boolean>[] = [];
    for (let round = 0; round < PER_FLOODER; round++) {
      for (let f = 0; f < FLOODERS; f++) {
        flood.push(clients[f]!.client.callTool({name: 'fair__spin', arguments: {}}).then((r) => {
          done.push(`flood${f}`);
          return !r.isError;
        }, () => false));
      }
    }
    // Let the flood reach the dispatcher and start.
    const deadline = Date.now() + 60_000;
    while (done.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const quietOk: boolean[] = [];
    for (let i = 0; i < QUIET_CALLS; i++) {
      const result = await quietClient.callTool({name: 'fair__spin', arguments: {}});
      quietOk.push(!result.isError && JSON.stringify(result.content).includes('done'));
    }
    const floodOk = await Promise.all(flood);
    assert.deepEqual(quietOk, Array(QUIET_CALLS).fill(true), 'every quiet call succeeded');
    assert.equal(quietSeen.length, QUIET_CALLS);
    for (const [i, call] of quietSeen.entries()) {
      // Meaningful only while the flood waits at the dispatcher (FIFO would put the quiet call behind all of it).
      assert.ok(call.queuedAtArrival > 2 * FLOODERS, `quiet call ${i} reached the dispatcher while ${call.queuedAtArrival} flood calls waited`);
      // One round: each other waiting key (weight 1) starts at most one call before it.
      const behind = call.startedAt - call.arrivedAfter;
      assert.ok(behind >= 0 && behind <= FLOODERS, `quiet call ${i} started after ${behind} other calls (at most ${FLOODERS}; FIFO: ${call.queuedAtArrival})`);
    }
    assert.ok(floodOk.every(Boolean), 'every flood call completed too');
    // The real service's audit file is an intact chain.
    await service.shutdown({drainMs: 1000});
    await env.runtime.close();
    const verdict = verifyAuditChain(await readFile(env.auditFile));
    assert.ok(verdict.intact, JSON.stringify(verdict));
    assert.equal(verdict.events, FLOODERS * PER_FLOODER + QUIET_CALLS);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await service.shutdown({drainMs: 1000}).catch(() => {});
    await env.runtime.close().catch(() => {});
    await tmp.dispose();
  }
});
