import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {test} from 'node:test';
import {ConfigError} from '../../../src/errors.ts';
import {loadProfiles, parseProfile} from '../../../src/policy/load-profiles.ts';
import {profileJsonSchema} from '../../../src/policy/profile-schema.ts';
import {BUNDLED_PROFILES} from '../../../src/paths.ts';
import {tempDir} from '../../support/temp.ts';

const isolate = {name: 'tiny', backend: 'isolate', limits: {timeoutMs: 1000, memoryMb: 16, outputBytes: 1024}};
const container = {
  name: 'box', backend: 'container',
  limits: {timeoutMs: 1000, memoryMb: 64, cpus: 0.5, pids: 16, outputBytes: 1024},
  commands: ['python3'],
};

const parse = (name: string, value: unknown) => parseProfile(`/p/${name}.json`, JSON.stringify(value));

test('a valid isolate profile parses and is frozen', () => {
  const p = parse('tiny', isolate);
  assert.equal(p.backend, 'isolate');
  assert.ok(Object.isFrozen(p) && Object.isFrozen(p.limits));
});

test('absent grants are denied: a container profile defaults to no network, read-only root, runc', () => {
  const p = parse('box', container);
  assert.equal(p.backend, 'container');
  if (p.backend !== 'container') return;
  assert.equal(p.network, 'none');
  assert.equal(p.filesystem.readOnlyRoot, true);
  assert.deepEqual(p.filesystem.mounts, []);
  assert.equal(p.runtime, 'runc');
});

for (const [title, value, field] of [
  ['an unknown key (a typo) is an error naming it', {...isolate, limits: {...isolate.limits, timeoutMS: 5}}, 'timeoutMS'],
  ['a field of the other backend is an error', {...isolate, commands: ['sh']}, 'commands'],
  ['a wrong type is an error naming the field', {...isolate, limits: {...isolate.limits, memoryMb: '16'}}, 'memoryMb'],
  ['a limit above its maximum is an error', {...isolate, limits: {...isolate.limits, timeoutMs: 10_000_000}}, 'timeoutMs'],
  ['an egress grant that does not exist is an error', {...container, network: 'host'}, 'network'],
  ['an empty command allowlist is an error', {...container, commands: []}, 'commands'],
  ['a command with shell syntax is not a command name', {...container, commands: ['sh -c']}, 'commands'],
  ['an unknown backend is an error', {...isolate, backend: 'vm'}, 'backend'],
] as const) {
  test(`profile: ${title}`, () => {
    assert.throws(() => parse(String((value as unknown as {name: string}).name), value), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /\/p\/\w+\.json/);
      assert.match(e.message, new RegExp(field));
      return true;
    });
  });
}

test('profile: a bad name is refused, and the name must equal the file name', () => {
  assert.throws(() => parse('Bad_Name', {...isolate, name: 'Bad_Name'}), /kebab-case/);
  assert.throws(() => parse('other', isolate), /must equal the file name "other"/);
});

test('profile: invalid JSON names the file', () => {
  assert.throws(() => parseProfile('/p/x.json', '{'), /\/p\/x\.json: is not valid JSON/);
});

test('loadProfiles refuses the same name defined in two directories', async () => {
  const a = await tempDir();
  const b = await tempDir();
  try {
    await a.write('tiny.json', isolate);
    await b.write('tiny.json', isolate);
    await assert.rejects(loadProfiles([a.path, b.path]), /already defined/);
    const one = await loadProfiles([a.path]);
    assert.deepEqual([...one.keys()], ['tiny']);
  } finally {
    await a.dispose();
    await b.dispose();
  }
});

test('every bundled profile is valid, and profile.schema.json is generated from the zod schema', async () => {
  const profiles = await loadProfiles([BUNDLED_PROFILES]);
  assert.ok(profiles.has('isolate-strict'));
  const strict = profiles.get('isolate-strict')!;
  assert.deepEqual({...strict.limits}, {timeoutMs: 2000, memoryMb: 32, outputBytes: 65536});
  const shipped = JSON.parse(await readFile(join(BUNDLED_PROFILES, 'profile.schema.json'), 'utf8'));
  assert.deepEqual(shipped, profileJsonSchema(), 'profiles/profile.schema.json is stale: run npm run schema');
});
