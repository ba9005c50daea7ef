import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ConfigError} from '../../../src/errors.ts';
import {canonicalResource, createAuthenticator, scopesOf} from '../../../src/frontend/http/authenticate.ts';
import {parseListenAddress} from '../../../src/frontend/http/serve-http-command.ts';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {hashApiKey, parseServiceConfig} from '../../../src/policy/service-config.ts';

test('parseListenAddress takes HOST:PORT, [IPv6]:PORT, or a port alone, which binds 127.0.0.1', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:8080'), {host: '127.0.0.1', port: 8080});
  assert.deepEqual(parseListenAddress('[::1]:0'), {host: '::1', port: 0});
  assert.deepEqual(parseListenAddress('localhost:3000'), {host: 'localhost', port: 3000});
  assert.deepEqual(parseListenAddress('0.0.0.0:8080'), {host: '0.0.0.0', port: 8080});
  assert.deepEqual(parseListenAddress('8080'), {host: '127.0.0.1', port: 8080});
  assert.deepEqual(parseListenAddress(':8080'), {host: '127.0.0.1', port: 8080});
  for (const bad of ['127.0.0.1', '127.0.0.1:99999', 'a b:1', '::1:80', '[::1]', 'host:', '']) {
    assert.throws(() => parseListenAddress(bad), ConfigError, bad);
  }
});

test('canonicalResource ignores scheme/host case, fragments and one trailing slash, but not the path case', () => {
  assert.equal(canonicalResource('HTTPS://Tools.Example.com/mcp'), 'https://tools.example.com/mcp');
  assert.equal(canonicalResource('https://tools.example.com/mcp/'), 'https://tools.example.com/mcp');
  assert.equal(canonicalResource('https://tools.example.com/mcp#x'), 'https://tools.example.com/mcp');
  assert.notEqual(canonicalResource('https://tools.example.com/MCP'), canonicalResource('https://tools.example.com/mcp'));
  assert.equal(canonicalResource('urn:toolcell'), 'urn:toolcell');
});

test('scopesOf reads "scope" (space-separated) or "scp" (array or string)', () => {
  assert.deepEqual(scopesOf({scope: 'a  b'}), ['a', 'b']);
  assert.deepEqual(scopesOf({scp: ['a', 7, 'b']}), ['a', 'b']);
  assert.deepEqual(scopesOf({scp: 'c'}), ['c']);
  assert.deepEqual(scopesOf({}), []);
});

test('API keys: a configured key authenticates as key:NAME with its grant; any other credential is 401', async () => {
  const config = parseServiceConfig('t', JSON.stringify({
    apiKeys: [{name: 'ci', sha256: hashApiKey('secret-key-0123456789')}, {name: 'ops', sha256: hashApiKey('ops-key-0123456789')}],
    grants: [{principal: 'key:ci', packages: ['text']}],
  }));
  const auth = await createAuthenticator(config, {resourceUrl: 'http://127.0.0.1:1/mcp'});
  assert.equal(auth.required, true);
  assert.equal(auth.resourceMetadataUrl, undefined, 'no PRM without OAuth');
  const ok = await auth.authenticate('Bearer secret-key-0123456789');
  assert.ok(ok.ok);
  assert.equal(ok.principal.id, 'key:ci');
  assert.deepEqual(ok.principal.packages, ['text']);
  const ops = await auth.authenticate('bearer ops-key-0123456789');
  assert.ok(ops.ok, 'the scheme is case-insensitive');
  assert.deepEqual(ops.principal.packages, [], 'a key without grants sees nothing');
  const cases: Array<[string | undefined, number, string | undefined]> = [
    [undefined, 401, undefined],
    ['', 401, undefined],
    ['Basic c2VjcmV0', 401, undefined],
    ['Bearer', 400, 'invalid_request'],
    ['Bearer two words', 400, 'invalid_request'],
    ['Bearer secret-key-012345678', 401, 'invalid_token'],
    [`Bearer ${'a'.repeat(9000)}`, 400, 'invalid_request'],
  ];
  for (const [header, status, error] of cases) {
    const out = await auth.authenticate(header);
    assert.ok(!out.ok, String(header));
    assert.equal(out.status, status, String(header));
    const challenge = out.headers['WWW-Authenticate'];
    assert.ok(challenge?.startsWith('Bearer realm="toolcell"'), challenge);
    if (error === undefined) assert.doesNotMatch(challenge!, /error=/, 'no error code when no credentials were sent (RFC 6750 §3.1)');
    else assert.match(challenge!, new RegExp(`error="${error}"`));
    assert.doesNotMatch(JSON.stringify(out), /secret-key|a{100}/, 'the presented credential is never echoed');
  }
});

test('without apiKeys or oauth, every request is the local principal', async () => {
  const auth = await createAuthenticator(parseServiceConfig('t', '{}'), {resourceUrl: 'http://127.0.0.1:1/mcp'});
  assert.equal(auth.required, false);
  const out = await auth.authenticate(undefined);
  assert.ok(out.ok);
  assert.equal(out.principal.id, 'local');
});

test('a missing JWKS file is a ConfigError at start-up', async () => {
  const config = parseServiceConfig('t', JSON.stringify({resourceUrl: 'https://t.example/mcp', oauth: {issuer: 'https://a.example', jwksFile: '/nonexistent/jwks.json'}}));
  await assert.rejects(createAuthenticator(config, {resourceUrl: 'https://t.example/mcp'}), ConfigError);
});

test('metrics expose calls, durations, queue depth, auth failures and rate-limit hits without principals', async () => {
  const metrics = new ServiceMetrics({defaultMetrics: false});
  const tool = {name: 'text__count', profile: {backend: 'isolate'}} as never;
  metrics.onCallFinished({tool, outcome: 'ok', durationMs: 12});
  metrics.onCallFinished({tool, outcome: 'rate-limited', durationMs: 0.2});
  metrics.authFailure('expired');
  metrics.rateLimited('rate');
  metrics.httpResponse('mcp', 200);
  metrics.watchQueues(() => ({isolate: {running: 3, queued: 7}, container: {running: 0, queued: 0}}));
  metrics.watchPools(() => ({'isolate-32': 4}));
  metrics.watchSessions(() => 2);
  const {contentType, body} = await metrics.render();
  assert.match(contentType, /text\/plain/);
  assert.match(body, /toolcell_tool_calls_total\{tool="text__count",outcome="ok"\} 1/);
  assert.match(body, /toolcell_tool_call_duration_seconds_count\{backend="isolate"\} 2/);
  assert.match(body, /toolcell_dispatch_queue_depth\{backend="isolate",state="queued"\} 7/);
  assert.match(body, /toolcell_sandbox_pool_size\{pool="isolate-32"\} 4/);
  assert.match(body, /toolcell_auth_failures_total\{reason="expired"\} 1/);
  assert.match(body, /toolcell_rate_limited_total\{limit="rate"\} 1/);
  assert.match(body, /toolcell_http_sessions 2/);
  assert.match(body, /toolcell_http_responses_total\{route="mcp",status="200"\} 1/);
});
