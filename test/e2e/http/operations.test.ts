/**
 * Operations endpoints beside /mcp: /healthz (alive), /readyz (tools loaded, backends reachable,
 * not draining), /metrics (Prometheus; behind the same credentials, for listed principals), the protected
 * resource metadata only when OAuth is configured, and JSON 404s elsewhere.
 */
import assert from 'node:assert/strict';
import {request as httpRequest} from 'node:http';
import {test} from 'node:test';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {QuotaAdmission} from '../../../src/policy/quota.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {connectHttp, fakeRuntime, KEYS, startService, useFixtures} from './support.ts';

const fixtures = useFixtures();

const KEYED = {apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}], grants: [{principal: 'key:alice', packages: '*'}]};

function getWithHost(port: number, path: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({host: '127.0.0.1', port, path, headers: {Host: host}}, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

test('/healthz needs no credentials and answers probes whatever their Host; /readyz reports the runtime', async () => {
  const env = await fakeRuntime(fixtures);
  const service = await startService(env.runtime, KEYED);
  try {
    assert.equal(await getWithHost(service.port, '/healthz', '10.1.2.3:8080'), 200, 'orchestrator probes use the pod address as Host');
    assert.equal(await getWithHost(service.port, '/mcp', '10.1.2.3:8080'), 403, 'other routes still check Host');
    // /metrics needs a listed reader's bearer key here, so it skips the Host check (scrapers use the pod address): still refused without one.
    assert.equal(await getWithHost(service.port, '/metrics', '10.1.2.3:8080'), 401, '/metrics by the pod address without credentials is refused');
    const ready = await fetch(`${service.origin}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), {ready: true, tools: 4, unavailableTools: 0, skippedTools: 0, backends: {isolate: 'ok'}, draining: false});
    const missing = await fetch(`${service.origin}/nope`);
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), {error: 'not_found'});
    const prm = await fetch(`${service.origin}/.well-known/oauth-protected-resource/mcp`);
    assert.equal(prm.status, 404, 'no protected resource metadata without OAuth');
    await prm.text();
  } finally {
    await service.shutdown({drainMs: 0});
  }
});

test('/readyz is 503 when a loaded tool lacks its backend, or no tool is served', async () => {
  const env = await fakeRuntime(fixtures);
  const degraded = {...env.runtime, unavailable: [{tool: 'x__y', reason: 'no Docker engine'}]};
  const service = await startService(degraded, KEYED);
  try {
    const response = await fetch(`${service.origin}/readyz`);
    assert.equal(response.status, 503);
    const report = await response.json() as {ready: boolean; unavailableTools: number; backends: Record<string, string>};
    assert.equal(report.ready, false);
    assert.equal(report.unavailableTools, 1);
    assert.equal(report.backends.container, 'unavailable');
  } finally {
    await service.shutdown({drainMs: 0});
  }
  const empty = await startService({...env.runtime, tools: new Map()}, KEYED);
  try {
    assert.equal((await fetch(`${empty.origin}/readyz`)).status, 503);
  } finally {
    await empty.shutdown({drainMs: 0});
  }
});

test('/readyz is 503 while the extra check (the container engine ping of serve --http) fails, and 200 once it passes', async () => {
  const env = await fakeRuntime(fixtures);
  let engineAnswers = false;
  const service = await startService(env.runtime, KEYED, {readinessCheck: async () => engineAnswers});
  try {
    const down = await fetch(`${service.origin}/readyz`);
    assert.equal(down.status, 503);
    assert.equal((await down.json() as {ready: boolean}).ready, false);
    engineAnswers = true;
    const up = await fetch(`${service.origin}/readyz`);
    assert.equal(up.status, 200);
    await up.text();
  } finally {
    await service.shutdown({drainMs: 0});
  }
});

test('metrics: /metrics needs the same credentials as /mcp and a listed principal; calls are counted by tool and outcome', async () => {
  const metrics = new ServiceMetrics({defaultMetrics: false});
  const quota = new QuotaAdmission({defaults: {ratePerSec: 1, burst: 1, maxInFlight: 4}, onLimited: (_p, limit) => metrics.rateLimited(limit)});
  const env = await fakeRuntime(fixtures, {admission: quota, onCallFinished: metrics.onCallFinished});
  const service = await startService(env.runtime, {...KEYED, metrics: {principals: ['key:alice']}}, {metrics});
  try {
    const anonymous = await fetch(`${service.origin}/metrics`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Bearer realm="toolcell"/);
    await anonymous.text();
    const {client, close} = await connectHttp(service.url, {token: KEYS.alice, era: 'modern'});
    await client.callTool({name: 'fixture__double', arguments: {x: 1}});
    const limited = await client.callTool({name: 'fixture__double', arguments: {x: 1}});
    assert.equal((limited._meta?.['toolcell/error'] as {code: string}).code, 'RATE_LIMITED');
    await close();
    const scraped = await fetch(`${service.origin}/metrics`, {headers: {Authorization: `Bearer ${KEYS.alice}`}});
    assert.equal(scraped.status, 200);
    const text = await scraped.text();
    assert.match(text, /toolcell_tool_calls_total\{tool="fixture__double",outcome="ok"\} 1/);
    assert.match(text, /toolcell_tool_calls_total\{tool="fixture__double",outcome="rate-limited"\} 1/);
    assert.match(text, /toolcell_rate_limited_total\{limit="rate"\} 1/);
    assert.match(text, /toolcell_tool_call_duration_seconds_bucket\{le="[^"]+",backend="isolate"\}/);
    assert.match(text, /toolcell_auth_failures_total\{reason="missing"\} 1/);
    assert.doesNotMatch(text, /alice|key:/, 'no principal in any label');
  } finally {
    await service.shutdown({drainMs: 0});
  }
});
