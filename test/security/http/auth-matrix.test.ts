/**
 * Attacks on authentication over real HTTP (127.0.0.1, ephemeral port): each request below
 * would run `fixture__double` if it were accepted. Each must get the right status and
 * `WWW-Authenticate` challenge, and no tool may run (the backend's run counter and the audit
 * stream stay empty). Then the positive controls prove the same request runs the tool with a
 * valid credential, i.e. the server still answers normal calls after the attacks.
 */
// invariant: http:auth:required
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {UnsecuredJWT} from 'jose';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {fakeRuntime, jwtKit, KEYS, messagesOf, modernCall, post, startService, writeFixtures} from '../../e2e/http/support.ts';

const RESOURCE = 'https://tools.toolcell.test/mcp';
const PRM_URL = 'https://tools.toolcell.test/.well-known/oauth-protected-resource/mcp';

/** A dedicated /metrics reader with no grants (a reader granted only some packages is refused at config load). */
const SCRAPER = 'scraper-key-0123456789abcdef0123456789abcd';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let kit: Awaited<ReturnType<typeof jwtKit>>;
let env: Awaited<ReturnType<typeof fakeRuntime>>;
let service: HttpService;
let metrics: ServiceMetrics;

const now = () => Math.floor(Date.now() / 1000);
const claims = (extra: Record<string, unknown> = {}) => ({iss: kit.issuer, sub: 'alice', aud: RESOURCE, scope: 'tools', iat: now(), exp: now() + 600, ...extra});

before(async () => {
  fixtures = await writeFixtures();
  kit = await jwtKit();
  env = await fakeRuntime(fixtures);
  metrics = new ServiceMetrics({defaultMetrics: false});
  service = await startService(env.runtime, {
    resourceUrl: RESOURCE,
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'scraper', sha256: hashApiKey(SCRAPER)}],
    oauth: {issuer: kit.issuer, jwksUri: kit.jwksUri, algorithms: ['ES256'], requiredScopes: ['tools']},
    grants: [{principal: 'key:alice', packages: ['fixture']}, {principal: 'sub:alice', packages: ['fixture']}],
    metrics: {principals: ['key:scraper']},
  }, {metrics});
});

after(async () => {
  await service.shutdown({drainMs: 0});
  await kit.close();
  await fixtures.dispose();
});

/** Sends the tools/call that would run `fixture__double`, with the given extra headers and URL suffix. */
async function attempt(headers: Record<string, string>, suffix = ''): Promise<Response> {
  const call = modernCall('fixture__double', {x: 21});
  return post(`${service.url}${suffix}`, call.body, {...call.headers, ...headers});
}

function assertNothingRan(label: string): void {
  assert.equal(env.backend.runs, 0, `${label}: a sandbox ran`);
  assert.equal(env.audit.events.length, 0, `${label}: an audited call happened`);
}

const bearer = (token: string) => ({Authorization: `Bearer ${token}`});

interface Case {
  name: string;
  headers: () => Promise<Record<string, string>>;
  suffix?: () => Promise<string>;
  status: number;
  /** Expected `error=` in the challenge; null: none (no credentials sent). */
  error: string | null;
  /** What the error description must say (proves the refusal was for this reason). */
  description?: RegExp;
}

const CASES: Case[] = [
  {name: 'no token', headers: async () => ({}), status: 401, error: null},
  {name: 'unsupported scheme (Basic)', headers: async () => ({Authorization: `Basic ${Buffer.from(`x:${KEYS.alice}`).toString('base64')}`}), status: 401, error: null},
  {name: 'malformed header: Bearer with no token', headers: async () => ({Authorization: 'Bearer'}), status: 400, error: 'invalid_request'},
  {name: 'malformed header: spaces in the token', headers: async () => ({Authorization: 'Bearer not a token'}), status: 400, error: 'invalid_request'},
  {name: 'malformed token: not a JWT, not a key', headers: async () => bearer('not-a-jwt'), status: 401, error: 'invalid_token'},
  {name: 'malformed token: three garbage segments', headers: async () => bearer('abc.def.ghi'), status: 401, error: 'invalid_token'},
  {name: 'bad signature (another key, same kid)', headers: async () => bearer(await kit.sign(claims(), {key: 'stranger'})), status: 401, error: 'invalid_token'},
  {name: 'alg: none', headers: async () => bearer(new UnsecuredJWT(claims()).encode()), status: 401, error: 'invalid_token'},
  {name: 'alg: none with the signature of a valid token', headers: async () => {
    const valid = (await kit.sign(claims())).split('.');
    const none = new UnsecuredJWT(claims()).encode().split('.');
    return bearer(`${none[0]}.${valid[1]}.${valid[2]}`);
  }, status: 401, error: 'invalid_token'},
  {name: 'algorithm confusion: HS256 keyed with the public JWK', headers: async () => {
    const {SignJWT} = await import('jose');
    const secret = new TextEncoder().encode(JSON.stringify(kit.jwks.keys[0]));
    return bearer(await new SignJWT(claims()).setProtectedHeader({alg: 'HS256', kid: 'k1'}).sign(secret));
  }, status: 401, error: 'invalid_token'},
  {name: 'expired', headers: async () => bearer(await kit.sign(claims({iat: now() - 7200, exp: now() - 3600}))), status: 401, error: 'invalid_token', description: /expired/},
  {name: 'not yet valid (nbf in the future)', headers: async () => bearer(await kit.sign(claims({nbf: now() + 3600}))), status: 401, error: 'invalid_token', description: /not valid yet/},
  {name: 'no exp claim', headers: async () => {
    const {exp: _exp, ...rest} = claims();
    return bearer(await kit.sign(rest));
  }, status: 401, error: 'invalid_token'},
  {name: 'no sub claim', headers: async () => {
    const {sub: _sub, ...rest} = claims();
    return bearer(await kit.sign(rest));
  }, status: 401, error: 'invalid_token'},
  {name: 'wrong issuer', headers: async () => bearer(await kit.sign(claims({iss: 'https://evil.example'}))), status: 401, error: 'invalid_token'},
  {name: 'wrong audience', headers: async () => bearer(await kit.sign(claims({aud: 'https://other-server.example/mcp'}))), status: 401, error: 'invalid_token', description: /not issued for this resource/},
  {name: 'no audience', headers: async () => {
    const {aud: _aud, ...rest} = claims();
    return bearer(await kit.sign(rest));
  }, status: 401, error: 'invalid_token', description: /not issued for this resource/},
  {name: 'missing required scope', headers: async () => bearer(await kit.sign(claims({scope: 'other'}))), status: 403, error: 'insufficient_scope', description: /lacks the required scope: tools/},
  {name: 'token in the query string only', headers: async () => ({}), suffix: async () => `?access_token=${await kit.sign(claims())}`, status: 400, error: 'invalid_request'},
  {name: 'API key in the query string, valid key in the header too', headers: async () => bearer(KEYS.alice), suffix: async () => `?api_key=${KEYS.alice}`, status: 400, error: 'invalid_request'},
  {name: 'revoked (removed) API key', headers: async () => bearer(KEYS.revoked), status: 401, error: 'invalid_token'},
  {name: 'API key with one character changed', headers: async () => bearer(`${KEYS.alice.slice(0, -1)}x`), status: 401, error: 'invalid_token'},
];

for (const c of CASES) {
  test(`auth refused: ${c.name} → ${c.status}${c.error ? ` ${c.error}` : ''}, and no tool ran`, async () => {
    const headers = await c.headers();
    const response = await attempt(headers, c.suffix ? await c.suffix() : '');
    const body = await response.text();
    assert.equal(response.status, c.status, body);
    const challenge = response.headers.get('www-authenticate');
    assert.ok(challenge !== null, 'a WWW-Authenticate challenge is sent');
    assert.match(challenge, /^Bearer realm="toolcell"/);
    assert.ok(challenge.includes(`resource_metadata="${PRM_URL}"`), challenge);
    assert.ok(challenge.includes('scope="tools"'), challenge);
    if (c.error === null) assert.doesNotMatch(challenge, /error=/);
    else assert.ok(challenge.includes(`error="${c.error}"`), challenge);
    assert.equal(JSON.parse(body).error, c.error ?? 'invalid_token');
    if (c.description) assert.match(JSON.parse(body).error_description, c.description);
    const token = headers.Authorization?.split(' ')[1];
    if (token && token.length > 8) assert.ok(!body.includes(token) && !challenge.includes(token), 'the credential is never echoed');
    assertNothingRan(c.name);
  });
}

test('the protected resource metadata (RFC 9728) is served at the path-aware and the root well-known URIs', async () => {
  for (const path of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']) {
    const response = await fetch(`${service.origin}${path}`);
    assert.equal(response.status, 200, path);
    const prm = await response.json() as Record<string, unknown>;
    assert.equal(prm.resource, RESOURCE);
    assert.deepEqual(prm.authorization_servers, [kit.issuer]);
    assert.deepEqual(prm.bearer_methods_supported, ['header']);
    assert.deepEqual(prm.scopes_supported, ['tools']);
  }
  assertNothingRan('metadata');
});

test('auth failures are counted in /metrics by reason', async () => {
  const text = await (await fetch(`${service.origin}/metrics`, {headers: bearer(SCRAPER)})).text();
  for (const reason of ['missing', 'malformed', 'invalid', 'expired', 'insufficient_scope', 'query_token']) {
    assert.match(text, new RegExp(`toolcell_auth_failures_total\\{reason="${reason}"\\} [1-9]`), reason);
  }
});

test('positive controls: the same request with a valid JWT or API key runs the tool, and no credential reaches the sandbox', async () => {
  const jwt = await kit.sign(claims());
  for (const token of [jwt, KEYS.alice]) {
    const response = await attempt(bearer(token));
    assert.equal(response.status, 200);
    const [message] = await messagesOf(response);
    const result = message!.result as {content: Array<{text: string}>};
    assert.equal(result.content[0]!.text, '42');
  }
  assert.equal(env.backend.runs, 2);
  const principals = env.audit.events.map((e) => e.principal);
  assert.deepEqual(principals, ['sub:alice', 'key:alice']);
  for (const job of env.backend.jobs) {
    assert.ok(!job.includes(jwt) && !job.includes(KEYS.alice), 'no token in any job handed to a sandbox');
    assert.ok(!job.includes(jwt.split('.')[1]!), 'not even the token payload');
  }
});

test('the audience is compared in canonical form: upper-case scheme/host, a trailing slash or an array still match', async () => {
  const before = env.backend.runs;
  for (const aud of ['HTTPS://TOOLS.toolcell.test/mcp/', ['https://other.example', RESOURCE]]) {
    const response = await attempt(bearer(await kit.sign(claims({aud}))));
    assert.equal(response.status, 200, JSON.stringify(aud));
    await response.text();
  }
  assert.equal(env.backend.runs, before + 2);
  const response = await attempt(bearer(await kit.sign(claims({aud: 'https://tools.toolcell.test/MCP'}))));
  assert.equal(response.status, 401, 'the path is case-sensitive');
  assert.equal(env.backend.runs, before + 2);
});
