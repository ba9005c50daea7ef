import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ConfigError} from '../../../src/errors.ts';
import {compileJsonSchema} from '../../../src/policy/json-schema.ts';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import {PackageManifest} from '../../../src/policy/manifest-schema.ts';
import {describeZodIssues, jsonPointer, quoteValue} from '../../../src/policy/schema-errors.ts';
import {parseServiceConfig} from '../../../src/policy/service-config.ts';

/** Load errors quote the offending value at its JSON pointer instead of listing every alternative (issue 14, point 11). */

const limits = {timeoutMs: 1000, memoryMb: 16, outputBytes: 100};
const profileError = (value: object) => {
  try {
    parseProfile('/p/x.json', JSON.stringify({name: 'x', ...value}));
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return e.message;
  }
  assert.fail('expected a ConfigError');
};

for (const [title, value, expected] of [
  ['an unknown backend: the value and the allowed ones, no "Invalid discriminator"', {backend: 'vm', limits},
    '/p/x.json: invalid profile: /backend is "vm": expected one of "isolate", "container"'],
  ['a wrong type: the value, not "received string"', {backend: 'isolate', limits: {...limits, timeoutMs: 'fast'}},
    '/p/x.json: invalid profile: /limits/timeoutMs is "fast": expected number'],
  ['a typo: the unknown key by its pointer, with its value', {backend: 'isolate', limits: {...limits, timeoutMS: 5}},
    '/p/x.json: invalid profile: /limits/timeoutMS is 5: unknown key'],
  ['a missing field', {backend: 'isolate', limits: {memoryMb: 16, outputBytes: 100}},
    '/p/x.json: invalid profile: /limits/timeoutMs is missing: expected number'],
  ['a grant that does not exist', {backend: 'container', network: 'host', commands: ['cat'], limits: {...limits, cpus: 1, pids: 16}},
    '/p/x.json: invalid profile: /network is "host": matches none of the allowed forms (expected "none" or {"egress": {"allow": [...], ...}})'],
] as const) {
  test(`profile: ${title}`, () => assert.equal(profileError(value), expected));
}

test('manifest: each problem one phrase with its pointer and value; long values are cut', () => {
  const raw = {name: 'Bad', version: '1.0.0', tools: [{name: 't', description: 'd', profile: 'isolate-strict',
    inputSchema: {type: 'string', description: 'x'.repeat(200)}, isolate: {entry: 1}}]};
  const result = PackageManifest.safeParse(raw);
  assert.ok(!result.success);
  const lines = describeZodIssues(result.error.issues, raw);
  assert.deepEqual(lines.slice(0, 1), ['/name is "Bad": must be kebab-case: a lower-case letter, then a-z, 0-9 or -']);
  assert.ok(lines.includes('/tools/0/isolate/entry is 1: expected string'), lines.join('\n'));
  const schemaLine = lines.find((l) => l.startsWith('/tools/0/inputSchema is '))!;
  assert.ok(schemaLine.length < 200 && schemaLine.includes('…'), schemaLine);
  for (const line of lines) assert.doesNotMatch(line, /Invalid input|received|\n/);
});

test('service configuration: the pointer into the array and the value', () => {
  assert.throws(() => parseServiceConfig('config.json', JSON.stringify({apiKeys: [{name: 'a', sha256: 'nothex'}]})),
    (e: unknown) => e instanceof ConfigError && /^config\.json: invalid service configuration: \/apiKeys\/0\/sha256 is "nothex": /.test(e.message));
});

test('an invalid inputSchema is one phrase per place (the allowed values of an enum), not ajv\'s list of every anyOf branch', () => {
  assert.throws(() => compileJsonSchema({type: 'object', properties: {a: {type: 'strin'}}}), (e: unknown) => {
    assert.equal((e as Error).message, 'schema is invalid: /properties/a/type is "strin": must be equal to one of the allowed values ("array", "boolean", "integer", "null", "number", "object", "string")');
    return true;
  });
  assert.throws(() => compileJsonSchema({type: 'object', required: 'a'}), /^Error: schema is invalid: \/required is "a": must be array$/);
});

test('JSON pointers escape ~ and / (RFC 6901); the root has a name', () => {
  assert.equal(jsonPointer(['a/b', 'c~d', 0]), '/a~1b/c~0d/0');
  assert.equal(jsonPointer([]), '(root)');
  assert.equal(quoteValue('x'.repeat(100)).length, 80);
});
