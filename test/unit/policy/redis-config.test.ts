// The service config's `redis` block: defaults, strictness, and URLs that are refused.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ConfigError} from '../../../src/errors.ts';
import {parseServiceConfig} from '../../../src/policy/service-config.ts';

test('redis is optional; when given, failMode defaults to closed, leaseMs to 15000 and keyPrefix to toolcell:', () => {
  assert.equal(parseServiceConfig('t', '{}').redis, undefined);
  assert.deepEqual(parseServiceConfig('t', '{"redis": {"url": "redis://127.0.0.1:6379"}}').redis,
    {url: 'redis://127.0.0.1:6379', failMode: 'closed', leaseMs: 15_000, keyPrefix: 'toolcell:'});
  assert.equal(parseServiceConfig('t', '{"redis": {"url": "rediss://:pw@r.example:6380/1", "failMode": "open"}}').redis?.failMode, 'open');
});

test('a malformed Redis URL is refused without quoting it (it may hold a password)', () => {
  for (const url of ['redis//:s3cret@h:6379', 'http://:s3cret@h:6379', 'redis://:s3cret@h:6379/?password=s3cret', 'redis://:s3cret@h :1']) {
    assert.throws(() => parseServiceConfig('t', JSON.stringify({redis: {url}})), (err: unknown) => err instanceof ConfigError && err.message.includes('/redis/url') && !err.message.includes('s3cret'), url);
  }
});

test('a non-redis URL, an unknown fail mode, a too-short lease or an unknown key is refused, naming the field', () => {
  for (const [redis, field] of [
    [{url: 'http://127.0.0.1:6379'}, '/redis/url'],
    [{url: 'redis://h:1', failMode: 'maybe'}, '/redis/failMode'],
    [{url: 'redis://h:1', leaseMs: 10}, '/redis/leaseMs'],
    [{url: 'redis://h:1', lease: 1000}, 'lease'],
  ] as const) {
    assert.throws(() => parseServiceConfig('t', JSON.stringify({redis})), (err: unknown) => err instanceof ConfigError && err.message.includes(field), field);
  }
});
