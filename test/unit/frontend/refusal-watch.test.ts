// RefusalWatch (bursts of refusals by one principal, reported without the principal) and the
// scrape-time counters the alert rules watch: isolate worker restarts and containers left behind.
import assert from 'node:assert/strict';
import {hostname} from 'node:os';
import {test} from 'node:test';
import type Docker from 'dockerode';
import type {AuditEventV2} from '../../../src/audit/audit-event.ts';
import {MemoryAuditSink} from '../../../src/audit/audit-log.ts';
import {MANAGED_LABEL, OWNER_LABEL} from '../../../src/backends/container/host-config.ts';
import {Provenance} from '../../../src/backends/container/provenance.ts';
import {reapContainers} from '../../../src/backends/container/reaper.ts';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {MAX_TRACKED_REFUSERS, RefusalWatch} from '../../../src/frontend/refusal-watch.ts';
import {tempDir} from '../../support/temp.ts';

function watch(limits = {threshold: 3, windowMs: 1000}) {
  let now = 0;
  const refusals: string[] = [];
  const bursts: string[] = [];
  const w = new RefusalWatch({limits, now: () => now, onRefusal: (r) => refusals.push(r), onBurst: (r) => bursts.push(r)});
  return {w, refusals, bursts, advance: (ms: number) => (now += ms)};
}

test('a burst is one principal reaching the threshold for one rule within the window, reported once per window', () => {
  const {w, bursts, advance} = watch();
  w.observe('key:a', 'grants');
  w.observe('key:a', 'grants');
  w.observe('key:b', 'grants');
  w.observe('key:a', 'pin');
  assert.deepEqual(bursts, [], 'two principals, two rules: nobody reached 3');
  w.observe('key:a', 'grants');
  assert.deepEqual(bursts, ['grants']);
  w.observe('key:a', 'grants');
  w.observe('key:a', 'grants');
  assert.deepEqual(bursts, ['grants'], 'once per window');
  advance(1000);
  w.observe('key:a', 'grants');
  w.observe('key:a', 'grants');
  assert.deepEqual(bursts, ['grants'], 'a new window starts from zero');
  w.observe('key:a', 'grants');
  assert.deepEqual(bursts, ['grants', 'grants']);
});

test('slow refusals (under the threshold per window) never make a burst', () => {
  const {w, bursts, advance} = watch();
  for (let i = 0; i < 20; i++) {
    w.observe('key:a', 'grants');
    advance(600);
  }
  assert.deepEqual(bursts, []);
});

test('rule labels are bounded: odd or client-looking rules become "other", and at most 32 distinct rules are reported', () => {
  const {w, refusals} = watch();
  w.observe('key:a', undefined);
  w.observe('key:a', 'Grants');
  w.observe('key:a', 'x'.repeat(40));
  w.observe('key:a', 'pin"} 1\nfake_metric{a="');
  assert.deepEqual(refusals, ['other', 'other', 'other', 'other']);
  for (let i = 0; i < 40; i++) w.observe('key:a', `rule-${i}`);
  assert.equal(new Set(refusals).size, 33, '32 rules and "other"');
});

test('memory is bounded: past MAX_TRACKED_REFUSERS the least recently refused window is forgotten', () => {
  const {w, bursts} = watch({threshold: 2, windowMs: 60_000});
  w.observe('key:first', 'grants');
  for (let i = 0; i < MAX_TRACKED_REFUSERS; i++) w.observe(`sub:${i}`, 'grants');
  w.observe('key:first', 'grants');
  assert.deepEqual(bursts, [], 'key:first was forgotten and starts again');
  w.observe('key:first', 'grants');
  assert.deepEqual(bursts, ['grants']);
});

test('a long principal id (a token subject) is tracked by its hash: same principal, same window; different ones apart', () => {
  const {w, bursts} = watch();
  const long = `sub:${'x'.repeat(10_000)}`;
  w.observe(long, 'grants');
  w.observe(`${long}y`, 'grants');
  w.observe(long, 'grants');
  assert.deepEqual(bursts, []);
  w.observe(long, 'grants');
  assert.deepEqual(bursts, ['grants']);
});

test('tap writes every event through and observes only *.denied events', async () => {
  const {w, refusals} = watch();
  const sink = new MemoryAuditSink();
  const tapped = w.tap(sink);
  const base = {v: 2, at: new Date(0).toISOString(), auditId: 'a', jobId: 'j', transport: 'http', durationMs: 0, principal: 'key:a', tool: 't', inputSha256: 'x'} as const;
  tapped.write({...base, type: 'tool.call.completed', outcome: 'ok'} as AuditEventV2);
  tapped.write({...base, type: 'tool.call.denied', outcome: 'denied', code: 'DENIED', rule: 'pin'} as AuditEventV2);
  tapped.write({...base, type: 'tool.call.rate-limited', outcome: 'rate-limited'} as AuditEventV2);
  assert.equal(sink.events.length, 3);
  assert.deepEqual(refusals, ['pin']);
  await tapped.close();
});

const scrape = async (metrics: ServiceMetrics, name: string) => (await metrics.render()).body.split('\n').filter((l) => l.startsWith(name));

test('toolcell_isolate_worker_restarts_total follows the runtime\'s running total at scrape time', async () => {
  const metrics = new ServiceMetrics({defaultMetrics: false});
  let restarts = 0;
  metrics.watchWorkerRestarts(() => restarts);
  assert.deepEqual(await scrape(metrics, 'toolcell_isolate_worker_restarts_total '), ['toolcell_isolate_worker_restarts_total 0']);
  restarts = 2;
  assert.deepEqual(await scrape(metrics, 'toolcell_isolate_worker_restarts_total '), ['toolcell_isolate_worker_restarts_total 2']);
  restarts = 5;
  assert.deepEqual(await scrape(metrics, 'toolcell_isolate_worker_restarts_total '), ['toolcell_isolate_worker_restarts_total 5']);
});

test('toolcell_containers_left_behind_total counts orphans an orphans-only reap removed, and failed removals', async () => {
  const state = await tempDir('toolcell-prov-');
  try {
    const provenance = Provenance.of(state.path);
    const deadOwner = `${hostname()}/999999999/gone`;
    const mine = (n: number) => {
      const {name, labels} = provenance.claim(deadOwner);
      return {Id: `${n}`.padStart(64, '0'), Names: [`/${name}`], Labels: {...labels, [MANAGED_LABEL]: 'true', [OWNER_LABEL]: deadOwner}};
    };
    const listed = [mine(1), mine(2), mine(3)];
    const engine = {
      listContainers: async () => listed,
      getContainer: (id: string) => ({
        remove: async () => {
          if (id === listed[2]!.Id) throw Object.assign(new Error('device busy'), {statusCode: 500});
        },
      }),
    } as unknown as Docker;
    const metrics = new ServiceMetrics({defaultMetrics: false});
    const before = await scrape(metrics, 'toolcell_containers_left_behind_total{');
    const value = (lines: string[], found: string) => Number(lines.find((l) => l.includes(`found="${found}"`))!.split(' ')[1]);
    const result = await reapContainers(engine, {orphansOnly: true, provenance});
    assert.equal(result.removed.length, 2);
    assert.equal(result.failed.length, 1);
    const afterReap = await scrape(metrics, 'toolcell_containers_left_behind_total{');
    assert.equal(value(afterReap, 'orphans') - value(before, 'orphans'), 2);
    assert.equal(value(afterReap, 'remove-failed') - value(before, 'remove-failed'), 1);
  } finally {
    await state.dispose();
  }
});
