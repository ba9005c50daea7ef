// Load-time mount policy across profiles: no source inside a writable grant, and one bad grant leaves out only its profile.
import assert from 'node:assert/strict';
import {mkdir, symlink} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import {resolveAllMounts} from '../../../src/policy/mounts.ts';
import {isStrictlyWithin} from '../../../src/policy/path-within.ts';
import type {ContainerProfile} from '../../../src/policy/profile-schema.ts';
import {tempDir} from '../../support/temp.ts';

const profile = (name: string, mounts: Array<{source: string; target: string; readOnly?: boolean}>) => parseProfile(`/p/${name}.json`, JSON.stringify({
  name, backend: 'container', limits: {timeoutMs: 1000, memoryMb: 64, cpus: 1, pids: 16, outputBytes: 1024},
  commands: ['cat'], filesystem: {mounts},
})) as ContainerProfile;

describe('isStrictlyWithin', () => {
  for (const [dir, path, expected] of [
    ['/ws/out', '/ws/out/data', true], ['/ws/out', '/ws/out', false], ['/ws/out', '/ws/outside', false], ['/ws/out', '/ws', false], ['/', '/etc', true],
  ] as const) {
    test(`${path} within ${dir}: ${expected}`, () => assert.equal(isStrictlyWithin(dir, path), expected));
  }
});

describe('resolveAllMounts', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  let policy: {workspace: string; mountRoots: string[]};
  before(async () => {
    root = await tempDir();
    await mkdir(join(root.path, 'ws/out/data'), {recursive: true});
    await mkdir(join(root.path, 'ws/ro'), {recursive: true});
    // As a tool with a writable /out would leave it: data replaced by a symlink to /proc.
    await mkdir(join(root.path, 'ws/out2'));
    await symlink('/proc', join(root.path, 'ws/out2/data'));
    policy = {workspace: join(root.path, 'ws'), mountRoots: [join(root.path, 'ws')]};
  });
  after(() => root.dispose());

  test('a grant inside its own profile\'s writable grant is refused, naming both', async () => {
    const r = await resolveAllMounts([profile('nested', [
      {source: '${workspace}/out', target: '/out', readOnly: false}, {source: '${workspace}/out/data', target: '/data'},
    ])], policy);
    assert.equal(r.mounts.has('nested'), false);
    assert.match(r.problems.get('nested')!, /profile nested: mount source "\$\{workspace\}\/out\/data" \(at \/data\) lies inside its own writable mount "\$\{workspace\}\/out" \(at \/out\)/);
  });

  test('a grant inside another profile\'s writable grant is refused; the writer itself is kept', async () => {
    const r = await resolveAllMounts([
      profile('writer', [{source: '${workspace}', target: '/w', readOnly: false}]),
      profile('reader', [{source: '${workspace}/ro', target: '/ro'}]),
    ], policy);
    assert.ok(r.mounts.has('writer'));
    assert.equal(r.mounts.has('reader'), false);
    assert.match(r.problems.get('reader')!, /inside profile writer's writable mount/);
  });

  test('the same directory mounted twice, or a read-only mount above a writable one, is allowed', async () => {
    const r = await resolveAllMounts([
      profile('a', [{source: '${workspace}/out', target: '/out', readOnly: false}]),
      profile('b', [{source: '${workspace}/out', target: '/out'}, {source: '${workspace}', target: '/ws'}]),
    ], policy);
    assert.deepEqual([...r.problems.keys()], []);
    assert.deepEqual([...r.mounts.keys()], ['a', 'b']);
  });

  test('a mount inside a read-only grant is allowed (no tool can write there to move it)', async () => {
    const r = await resolveAllMounts([profile('ro', [{source: '${workspace}/out', target: '/out'}, {source: '${workspace}/out/data', target: '/data'}])], policy);
    assert.deepEqual([...r.problems.keys()], []);
  });

  test('a planted symlink leaves out only the profile that mounts it, with a reason naming it; the others are resolved', async () => {
    const r = await resolveAllMounts([
      profile('victim', [{source: '${workspace}/out2/data', target: '/data'}]),
      profile('fine', [{source: '${workspace}/ro', target: '/ro'}]),
    ], policy);
    assert.match(r.problems.get('victim')!, /^profile victim: mount source "\$\{workspace\}\/out2\/data" resolves outside the allowed mount roots/);
    assert.deepEqual(r.mounts.get('fine'), [{source: join(root.path, 'ws/ro'), target: '/ro', readOnly: true}]);
  });

  test('a target inside its own writable grant\'s target is refused (a tool could plant x -> ../usr there)', async () => {
    const r = await resolveAllMounts([profile('hj', [{source: '${workspace}/out', target: '/out', readOnly: false}, {source: '${workspace}/ro', target: '/out/x/bin'}])], policy);
    assert.match(r.problems.get('hj')!, /the target of mount "\$\{workspace\}\/ro" \(at \/out\/x\/bin\) lies inside its own writable mount "\$\{workspace\}\/out" \(at \/out\)/);
  });

  test('a writable grant at the same target as another, or a target in a tmpfs, is refused', async () => {
    const same = await resolveAllMounts([profile('same', [{source: '${workspace}/out', target: '/d', readOnly: false}, {source: '${workspace}/ro', target: '/d'}])], policy);
    assert.match(same.problems.get('same')!, /have the same target/);
    const tmpfs = parseProfile('/p/t.json', JSON.stringify({
      name: 't', backend: 'container', limits: {timeoutMs: 1000, memoryMb: 64, cpus: 1, pids: 16, outputBytes: 1024},
      commands: ['cat'], filesystem: {tmpfs: {'/tmp': '8m'}, mounts: [{source: '${workspace}/ro', target: '/tmp/data'}]},
    })) as ContainerProfile;
    const t = await resolveAllMounts([tmpfs], policy);
    assert.match(t.problems.get('t')!, /lies inside its writable tmpfs at \/tmp/);
  });

  test('a target inside a read-only grant whose directory another profile can write is refused; a read-only one nobody writes is allowed', async () => {
    const r = await resolveAllMounts([
      profile('writer', [{source: '${workspace}/out', target: '/o', readOnly: false}]),
      profile('victim', [{source: '${workspace}/out', target: '/out'}, {source: '${workspace}/ro', target: '/out/x'}]),
      profile('fine', [{source: '${workspace}/ro', target: '/r'}, {source: '${workspace}/out', target: '/r/out'}]),
    ], policy);
    assert.match(r.problems.get('victim')!, /lies inside read-only mount "\$\{workspace\}\/out" \(at \/out\), whose directory there is writable through profile writer's mount/);
    assert.deepEqual([...r.mounts.keys()].sort(), ['fine', 'writer']);
  });
});
