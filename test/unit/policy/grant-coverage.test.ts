import assert from 'node:assert/strict';
import {test} from 'node:test';
import {grantCoverage} from '../../../src/policy/grant-coverage.ts';
import {hashApiKey, parseServiceConfig} from '../../../src/policy/service-config.ts';

/** grantCoverage: which configured principals can call no served tool (issue 14, point 5). */
const key = (name: string) => ({name, sha256: hashApiKey(`${name}-${'k'.repeat(40)}`)});
const config = (c: object) => parseServiceConfig('test.json', JSON.stringify(c));
const oauth = {issuer: 'https://auth.example.com', jwksUri: 'https://auth.example.com/jwks.json'};

test('no authentication: the local caller gets everything, nothing to warn about', () => {
  assert.deepEqual(grantCoverage(config({}), ['text']), {warnings: [], nobody: false});
});

test('a key without grants is warned about; nobody can call anything when no key has one', () => {
  const c = grantCoverage(config({apiKeys: [key('a')]}), ['text']);
  assert.equal(c.nobody, true);
  assert.deepEqual(c.warnings, ['API key principal key:a has no grant: it can list and call no tool (add {"principal": "key:a", "packages": [...]} to "grants")']);
});

test('one key granted a served package: the other is warned about, somebody can call', () => {
  const c = grantCoverage(config({apiKeys: [key('a'), key('b')], grants: [{principal: 'key:a', packages: ['text']}]}), ['text', 'math']);
  assert.equal(c.nobody, false);
  assert.equal(c.warnings.length, 1);
  assert.match(c.warnings[0]!, /key:b has no grant/);
});

test('grants that name only packages not served count as none', () => {
  const c = grantCoverage(config({apiKeys: [key('a')], grants: [{principal: 'key:a', packages: ['python', 'shell']}]}), ['text']);
  assert.equal(c.nobody, true);
  assert.match(c.warnings[0]!, /key:a is granted only packages that are not served \(python, shell\)/);
});

test('a /metrics reader key without grants is a scraper, not a mistake: no warning, but it does not count as a caller', () => {
  const c = grantCoverage(config({apiKeys: [key('prom'), key('a')], grants: [{principal: 'key:a', packages: '*'}], metrics: {principals: ['key:prom']}}), ['text']);
  assert.deepEqual(c, {warnings: [], nobody: false});
  const alone = grantCoverage(config({apiKeys: [key('prom')], metrics: {principals: ['key:prom']}}), ['text']);
  assert.deepEqual(alone, {warnings: [], nobody: true});
});

test('OAuth: sub/scope grants are judged; OAuth without any token grant is one warning', () => {
  const none = grantCoverage(config({resourceUrl: 'https://tools.example.com/mcp', oauth}), ['text']);
  assert.equal(none.nobody, true);
  assert.match(none.warnings[0]!, /OAuth is configured, but no grant names a token subject/);
  const some = grantCoverage(config({resourceUrl: 'https://tools.example.com/mcp', oauth,
    grants: [{principal: 'sub:alice', packages: ['text']}, {principal: 'scope:math', packages: ['math']}]}), ['text']);
  assert.equal(some.nobody, false);
  assert.deepEqual(some.warnings, ['token scope scope:math is granted only packages that are not served (math): it can list and call no tool']);
});
