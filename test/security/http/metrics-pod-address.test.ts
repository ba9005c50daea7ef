/**
 * A Prometheus scraper reaches each replica by its pod address, a Host no config can list, so
 * `/metrics` does not check Host when it requires a bearer credential. The attacks: a DNS
 * rebinding page (foreign Host, no credentials, or a browser's ambient nothing) and a key that
 * is not a listed reader read `/metrics` by the pod address; and the same rebinding against
 * public metrics, against the unauthenticated loopback mode, and against `/mcp`. All refused;
 * the listed scraper is served; the service keeps answering.
 */
// invariant: http:metrics:scrapable-by-pod-address
import assert from 'node:assert/strict';
import {request as httpRequest} from 'node:http';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {fakeRuntime, initializeBody, KEYS, startService, writeFixtures, type Fixtures} from '../../e2e/http/support.ts';

const PROMETHEUS = 'prometheus-key-0123456789abcdef0123456789ab';
const POD = '10.244.3.17:8443';
const KEYED = {
  apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'prom', sha256: hashApiKey(PROMETHEUS)}],
  grants: [{principal: 'key:alice', packages: ['fixture']}],
  metrics: {principals: ['key:prom']},
};

let fixtures: Fixtures;
const services: HttpService[] = [];
before(async () => {
  fixtures = await writeFixtures();
});
after(async () => {
  for (const s of services) await s.shutdown({drainMs: 0});
  await fixtures?.dispose();
});

async function serve(config: Record<string, unknown>): Promise<HttpService> {
  const {runtime} = await fakeRuntime(fixtures);
  const service = await startService(runtime, config);
  services.push(service);
  return service;
}

/** A raw HTTP/1.1 request (fetch cannot set Host), with a 10 s deadline. */
function raw(service: HttpService, options: {method?: string; path: string; headers: Record<string, string>; body?: string}): Promise<{status: number; body: string}> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({host: '127.0.0.1', port: service.port, method: options.method ?? 'GET', path: options.path, headers: options.headers, timeout: 10_000}, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({status: res.statusCode ?? 0, body}));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(options.body);
  });
}

const scrape = (service: HttpService, host: string, token?: string) =>
  raw(service, {path: '/metrics', headers: {Host: host, ...(token === undefined ? {} : {Authorization: `Bearer ${token}`})}});

test('with authentication, /metrics by the pod address serves the listed scraper and refuses everyone else', {timeout: 30_000}, async () => {
  const service = await serve(KEYED);
  const ok = await scrape(service, POD, PROMETHEUS);
  assert.equal(ok.status, 200);
  assert.match(ok.body, /toolcell_dispatch_queue_depth/);
  // A rebinding page has no token to send: 401, nothing of the metrics.
  const anonymous = await scrape(service, 'evil.example:8443');
  assert.equal(anonymous.status, 401);
  assert.doesNotMatch(anonymous.body, /toolcell_/);
  // A principal that may call tools but is no listed reader: 403.
  const alice = await scrape(service, POD, KEYS.alice);
  assert.equal(alice.status, 403);
  assert.doesNotMatch(alice.body, /toolcell_/);
  // /mcp keeps its Host check (a rebinding page with a stolen nothing, or a proxy mistake).
  const mcp = await raw(service, {method: 'POST', path: '/mcp', body: JSON.stringify(initializeBody()),
    headers: {Host: 'evil.example', Authorization: `Bearer ${KEYS.alice}`, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream'}});
  assert.equal(mcp.status, 403);
  const control = await raw(service, {method: 'POST', path: '/mcp', body: JSON.stringify(initializeBody()),
    headers: {Host: `127.0.0.1:${service.port}`, Authorization: `Bearer ${KEYS.alice}`, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream'}});
  assert.equal(control.status, 200, 'the same request with an allowed Host is served (the 403 above is the Host check)');
  const healthy = await fetch(`${service.origin}/healthz`);
  assert.equal(healthy.status, 200, 'the service keeps answering');
  await healthy.text();
});

test('public metrics, and the unauthenticated loopback mode, keep the Host check (DNS rebinding refused)', {timeout: 30_000}, async () => {
  const publicMetrics = await serve({...KEYED, metrics: {public: true}});
  assert.equal((await scrape(publicMetrics, 'evil.example')).status, 403);
  assert.equal((await scrape(publicMetrics, `127.0.0.1:${publicMetrics.port}`)).status, 200);
  const loopback = await serve({});
  const rebound = await scrape(loopback, 'evil.example');
  assert.equal(rebound.status, 403);
  assert.doesNotMatch(rebound.body, /toolcell_/);
  assert.equal((await scrape(loopback, `127.0.0.1:${loopback.port}`)).status, 200);
});
