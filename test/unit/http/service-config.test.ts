import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ConfigError} from '../../../src/errors.ts';
import {
  authConfigured,
  DEFAULT_MAX_BODY_BYTES,
  defaultServiceConfig,
  grantedPackages,
  hashApiKey,
  isLoopbackHostname,
  loadServiceConfig,
  mayReadMetrics,
  parseServiceConfig,
} from '../../../src/policy/service-config.ts';
import {localPrincipal, type Principal} from '../../../src/policy/principal.ts';
import {tempDir} from '../../support/temp.ts';

const HASH = hashApiKey('k'.repeat(40));
const parse = (config: unknown) => parseServiceConfig('config.json', JSON.stringify(config));
const refused = (config: unknown, pattern: RegExp) =>
  assert.throws(() => parse(config), (err: unknown) => err instanceof ConfigError && pattern.test(err.message) && err.message.startsWith('config.json'));

test('hashApiKey is the lower-case hex SHA-256 of the key', () => {
  assert.equal(hashApiKey('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('an empty config means no authentication, default quotas and a 1 MiB body cap', () => {
  const config = defaultServiceConfig();
  assert.equal(authConfigured(config), false);
  assert.deepEqual(config.apiKeys, []);
  assert.equal(config.maxBodyBytes, DEFAULT_MAX_BODY_BYTES);
  assert.equal(config.quotas.maxInFlight, 16);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.quotas), 'parsed config is frozen');
});

test('a full example parses, with defaults filled in', () => {
  const config = parse({
    resourceUrl: 'https://tools.example.com/mcp',
    apiKeys: [{name: 'ci-bot', sha256: HASH}],
    oauth: {issuer: 'https://auth.example.com', jwksUri: 'https://auth.example.com/jwks.json', requiredScopes: ['tools']},
    grants: [{principal: 'key:ci-bot', packages: ['text']}, {principal: 'sub:alice', packages: '*'}, {principal: 'scope:math', packages: ['math']}],
    quotas: {ratePerSec: 5, principals: {'key:ci-bot': {ratePerSec: 50}}},
    allowedOrigins: ['app.example.com'],
    allowedHosts: ['tools.example.com'],
  });
  assert.equal(authConfigured(config), true);
  assert.deepEqual(config.oauth?.algorithms, ['ES256', 'RS256']);
  assert.equal(config.oauth?.clockToleranceSeconds, 5);
  assert.equal(config.quotas.burst, 40);
  assert.deepEqual(config.quotas.principals['key:ci-bot'], {ratePerSec: 50});
});

test('unknown keys and typos are refused, naming the field', () => {
  refused({apikeys: []}, /apikeys/);
  refused({quotas: {ratePerSecond: 3}}, /ratePerSecond/);
});

test('fair-share weights are positive numbers for known principals, default 1 (empty map)', () => {
  assert.deepEqual(parseServiceConfig('t', '{}').fairShare, {weights: {}});
  const config = parseServiceConfig('t', JSON.stringify({apiKeys: [{name: 'a', sha256: HASH}], fairShare: {weights: {'key:a': 2.5}}}));
  assert.equal(config.fairShare.weights['key:a'], 2.5);
  refused({apiKeys: [{name: 'a', sha256: HASH}], fairShare: {weights: {'key:a': 0}}}, /weights/);
  refused({apiKeys: [{name: 'a', sha256: HASH}], fairShare: {weights: {'key:a': 1e9}}}, /weights/);
  refused({fairShare: {weights: {'key:ghost': 1}}}, /not in apiKeys/);
  refused({fairShare: {weight: {}}}, /weight/);
});

test('API keys are stored only as SHA-256 hashes; names and hashes are unique', () => {
  refused({apiKeys: [{name: 'a', key: 'plaintext'}]}, /key|sha256/);
  refused({apiKeys: [{name: 'a', sha256: 'abc'}]}, /SHA-256/);
  refused({apiKeys: [{name: 'a', sha256: HASH.toUpperCase()}]}, /SHA-256/);
  refused({apiKeys: [{name: 'a', sha256: HASH}, {name: 'a', sha256: hashApiKey('other-key-xxxxxxxxxxxxxxxx')}]}, /duplicate key name/);
  refused({apiKeys: [{name: 'a', sha256: HASH}, {name: 'b', sha256: HASH}]}, /duplicate key hash/);
});

test('the JWT algorithm allowlist can never hold "none" or an HMAC algorithm', () => {
  const oauth = (algorithms: string[]) => ({resourceUrl: 'https://t.example/mcp', oauth: {issuer: 'https://a.example', jwksUri: 'https://a.example/j', algorithms}});
  refused(oauth(['none']), /algorithms/);
  refused(oauth(['HS256']), /algorithms/);
  refused(oauth([]), /algorithms/);
  assert.deepEqual(parse(oauth(['EdDSA'])).oauth?.algorithms, ['EdDSA']);
});

test('oauth needs a resourceUrl (the audience), exactly one key source, and https outside loopback', () => {
  refused({oauth: {issuer: 'https://a.example', jwksUri: 'https://a.example/j'}}, /resourceUrl/);
  refused({resourceUrl: 'https://t.example/mcp', oauth: {issuer: 'https://a.example'}}, /jwksUri.*jwksFile/);
  refused({resourceUrl: 'https://t.example/mcp', oauth: {issuer: 'https://a.example', jwksUri: 'https://a/j', jwksFile: 'j.json'}}, /exactly one/);
  refused({resourceUrl: 'https://t.example/mcp', oauth: {issuer: 'http://auth.example', jwksUri: 'https://a.example/j'}}, /https/);
  refused({resourceUrl: 'https://t.example/mcp', oauth: {issuer: 'https://a.example', jwksUri: 'http://10.0.0.1/j'}}, /https/);
  assert.ok(parse({resourceUrl: 'http://127.0.0.1:9/mcp', oauth: {issuer: 'https://a.example', jwksUri: 'http://127.0.0.1:8/j'}}).oauth);
});

test('grants must name configured keys, and token grants need oauth', () => {
  refused({apiKeys: [{name: 'a', sha256: HASH}], grants: [{principal: 'key:b', packages: ['x']}]}, /not in apiKeys/);
  refused({grants: [{principal: 'sub:alice', packages: '*'}]}, /need "oauth"/);
  refused({apiKeys: [{name: 'a', sha256: HASH}], grants: [{principal: 'team:a', packages: ['x']}]}, /key:NAME/);
  refused({apiKeys: [{name: 'a', sha256: HASH}], grants: [{principal: 'key:a', packages: []}]}, /packages/);
});

test('/metrics is closed by default: only listed principals (or a token scope) may read it, unless the operator makes it public', () => {
  const principal = (id: string, scopes: string[] = []): Principal => ({id, kind: id.startsWith('key:') ? 'api-key' : 'oauth', scopes, packages: '*'});
  const base = {resourceUrl: 'https://t.example/mcp', apiKeys: [{name: 'prom', sha256: HASH}], oauth: {issuer: 'https://a.example', jwksUri: 'https://a.example/j'}};
  const closed = parse(base);
  assert.deepEqual(closed.metrics, {public: false, principals: []});
  assert.equal(mayReadMetrics(closed, principal('key:prom')), false, 'authenticated is not enough');
  assert.equal(mayReadMetrics(closed, localPrincipal), true, 'no authentication configured: the loopback local principal, granted every tool, may');
  const listed = parse({...base, metrics: {principals: ['key:prom', 'scope:metrics.read']}});
  assert.equal(mayReadMetrics(listed, principal('key:prom')), true);
  assert.equal(mayReadMetrics(listed, principal('sub:alice', ['metrics.read'])), true, 'by token scope');
  assert.equal(mayReadMetrics(listed, principal('sub:alice', ['tools'])), false);
  assert.equal(mayReadMetrics(listed, principal('sub:key:prom')), false, 'ids are compared whole');
  assert.equal(mayReadMetrics(parse({...base, metrics: {public: true}}), principal('sub:anyone')), true);
  refused({metrics: 'public'}, /metrics/);
  refused({metrics: {public: 'yes'}}, /\/metrics\/public is "yes": expected boolean/);
  refused({metrics: {readers: []}}, /readers/);
  refused({...base, metrics: {principals: ['key:ghost']}}, /\/metrics\/principals\/0 is "key:ghost": .*not in apiKeys/);
  refused({metrics: {principals: ['sub:alice']}}, /need "oauth"/);
  refused({...base, metrics: {principals: ['prometheus']}}, /key:NAME/);
  // A reader granted only some packages would see the names of the tools its grants hide.
  refused({...base, grants: [{principal: 'key:prom', packages: ['text']}], metrics: {principals: ['key:prom']}}, /\/metrics\/principals\/0 is "key:prom": .*only some packages/);
  refused({...base, grants: [{principal: 'scope:metrics.read', packages: ['text']}], metrics: {principals: ['scope:metrics.read']}}, /only some packages/);
  assert.ok(parse({...base, grants: [{principal: 'key:prom', packages: '*'}], metrics: {principals: ['key:prom']}}), 'a reader granted every package');
});

test('grantedPackages unions every matching grant and denies by default', () => {
  const config = parse({
    resourceUrl: 'https://t.example/mcp',
    apiKeys: [{name: 'a', sha256: HASH}],
    oauth: {issuer: 'https://a.example', jwksUri: 'https://a.example/j'},
    grants: [{principal: 'key:a', packages: ['text']}, {principal: 'scope:math', packages: ['math', 'text']}, {principal: 'sub:root', packages: '*'}],
  });
  assert.deepEqual(grantedPackages(config, ['key:a']), ['text']);
  assert.deepEqual(grantedPackages(config, ['sub:x', 'scope:math']), ['math', 'text']);
  assert.equal(grantedPackages(config, ['sub:root', 'scope:math']), '*');
  assert.deepEqual(grantedPackages(config, ['sub:nobody']), [], 'no grant, no packages');
});

test('loadServiceConfig resolves a relative jwksFile against the config file and reports unreadable files', async () => {
  const tmp = await tempDir();
  try {
    const file = await tmp.write('etc/config.json', {resourceUrl: 'https://t.example/mcp', oauth: {issuer: 'https://a.example', jwksFile: 'keys/jwks.json'}});
    const config = await loadServiceConfig(file);
    assert.equal(config.oauth?.jwksFile, `${tmp.path}/etc/keys/jwks.json`);
    await assert.rejects(loadServiceConfig(`${tmp.path}/missing.json`), (err: unknown) => err instanceof ConfigError && /cannot read/.test(err.message));
  } finally {
    await tmp.dispose();
  }
});

test('isLoopbackHostname accepts only loopback names and addresses', () => {
  for (const h of ['localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]']) assert.equal(isLoopbackHostname(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '128.0.0.1', 'localhost.example.com']) assert.equal(isLoopbackHostname(h), false, h);
});
