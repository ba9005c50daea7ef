/**
 * `/metrics` names every tool that was called, granted to the reader or not. An attacker who
 * can reach the service (anonymous, or with a key granted other tools) scrapes it to learn
 * another principal's tools: refused by default (401 without credentials, 403 for a principal
 * the config does not list), served only to listed principals or when the operator makes it
 * public. The service keeps answering /mcp after each attempt.
 */
// invariant: http:metrics:closed-by-default
import assert from 'node:assert/strict';
import {writeFile} from 'node:fs/promises';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {connectHttp, fakeRuntime, initializeBody, KEYS, post, spawnCli, startService, writeFixtures} from '../../e2e/http/support.ts';

const PROMETHEUS = 'prometheus-key-0123456789abcdef0123456789ab';
const KEY_CONFIG = {
  apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}, {name: 'prom', sha256: hashApiKey(PROMETHEUS)}],
  grants: [{principal: 'key:alice', packages: ['fixture']}, {principal: 'key:bob', packages: ['other']}],
};
const bearer = (token: string) => ({Authorization: `Bearer ${token}`});

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let env: Awaited<ReturnType<typeof fakeRuntime>>;
let service: HttpService;

before(async () => {
  fixtures = await writeFixtures();
  const metrics = new ServiceMetrics({defaultMetrics: false});
  env = await fakeRuntime(fixtures, {onCallFinished: metrics.onCallFinished});
  service = await startService(env.runtime, {...KEY_CONFIG, metrics: {principals: ['key:prom']}}, {metrics});
  // Bob's call puts his tool's name into the metrics.
  const bob = await connectHttp(service.url, {token: KEYS.bob, era: 'modern'});
  try {
    assert.deepEqual((await bob.client.callTool({name: 'other__shout', arguments: {text: 'x'}})).content, [{type: 'text', text: 'X'}]);
  } finally {
    await bob.close();
  }
});

after(async () => {
  await service?.shutdown({drainMs: 0});
  await fixtures?.dispose();
});

/** Alice (granted `fixture` only) can still call her tool. */
async function mcpStillAnswers(url: string): Promise<void> {
  const alice = await connectHttp(url, {token: KEYS.alice, era: 'modern'});
  try {
    assert.deepEqual((await alice.client.callTool({name: 'fixture__double', arguments: {x: 4}})).content, [{type: 'text', text: '8'}]);
  } finally {
    await alice.close();
  }
}

test('anonymous scrapes get 401 with a Bearer challenge and learn no tool name', async () => {
  for (const headers of [{}, {Authorization: 'Bearer not-a-key'}, {Authorization: `Basic ${Buffer.from(`x:${PROMETHEUS}`).toString('base64')}`}]) {
    const response = await fetch(`${service.origin}/metrics`, {headers});
    assert.equal(response.status, 401, JSON.stringify(headers));
    assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer /);
    const text = await response.text();
    assert.doesNotMatch(text, /other__shout|toolcell_tool_calls_total/);
  }
  const viaQuery = await fetch(`${service.origin}/metrics?access_token=${PROMETHEUS}`);
  assert.equal(viaQuery.status, 401, 'a credential in the URL is not a credential');
  assert.doesNotMatch(await viaQuery.text(), /other__shout/);
  await mcpStillAnswers(service.url);
});

test('a principal the config does not list gets 403 and learns no tool name, although it authenticated', async () => {
  const response = await fetch(`${service.origin}/metrics`, {headers: bearer(KEYS.alice)});
  assert.equal(response.status, 403);
  const text = await response.text();
  assert.equal((JSON.parse(text) as {error: string}).error, 'forbidden');
  assert.doesNotMatch(text, /other__shout|toolcell_/);
  await mcpStillAnswers(service.url);
});

test('a listed principal reads the metrics', async () => {
  const response = await fetch(`${service.origin}/metrics`, {headers: bearer(PROMETHEUS)});
  assert.equal(response.status, 200);
  assert.match(await response.text(), /toolcell_tool_calls_total\{tool="other__shout",outcome="ok"\} 1/);
});

test('"metrics": {"public": true} serves anyone, as the operator chose', async () => {
  const open = await startService(env.runtime, {...KEY_CONFIG, metrics: {public: true}});
  try {
    const response = await fetch(`${open.origin}/metrics`);
    assert.equal(response.status, 200);
    assert.match(await response.text(), /toolcell_http_responses_total/);
    await mcpStillAnswers(open.url);
  } finally {
    await open.shutdown({drainMs: 0});
  }
});

test('toolcell serve --http with a config that does not mention metrics keeps /metrics closed', async () => {
  const configFile = `${fixtures.dir}/service.json`;
  await writeFile(configFile, JSON.stringify({...KEY_CONFIG, grants: [{principal: 'key:alice', packages: '*'}]}));
  const server = await spawnCli(['--http', '127.0.0.1:0', '--config', configFile, '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers', '--audit-log', 'off']);
  const deadline = setTimeout(() => server.child.kill('SIGKILL'), 60_000);
  try {
    const origin = new URL(server.url).origin;
    const anonymous = await fetch(`${origin}/metrics`);
    assert.equal(anonymous.status, 401);
    await anonymous.text();
    const keyed = await fetch(`${origin}/metrics`, {headers: bearer(KEYS.alice)});
    assert.equal(keyed.status, 403);
    assert.doesNotMatch(await keyed.text(), /toolcell_/);
    const init = await post(server.url, initializeBody(), bearer(KEYS.alice));
    assert.equal(init.status, 200, 'the server still answers /mcp');
    await init.text();
  } finally {
    clearTimeout(deadline);
    server.child.kill('SIGTERM');
    const exited = await Promise.race([server.exited, new Promise((resolve) => setTimeout(resolve, 15_000, 'timeout'))]);
    if (exited === 'timeout') server.child.kill('SIGKILL');
  }
});

test('a principal granted only some packages cannot be listed as a /metrics reader (it would see the tools its grants hide): the config is refused at load', async () => {
  await assert.rejects(startService(env.runtime, {...KEY_CONFIG, metrics: {principals: ['key:bob']}}), /"key:bob" may call only some packages.*\/metrics names every tool/s);
  // The running service is unaffected, and bob still may not read it.
  const bobReads = await fetch(`${service.origin}/metrics`, {headers: bearer(KEYS.bob)});
  assert.equal(bobReads.status, 403);
  assert.doesNotMatch(await bobReads.text(), /fixture__/);
  await mcpStillAnswers(service.url);
});
