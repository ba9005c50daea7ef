import assert from 'node:assert/strict';
import {mkdir, symlink} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import {resolveMounts} from '../../../src/policy/mounts.ts';
import type {ContainerProfile} from '../../../src/policy/profile-schema.ts';
import {tempDir} from '../../support/temp.ts';

let root: Awaited<ReturnType<typeof tempDir>>;
let outside: Awaited<ReturnType<typeof tempDir>>;

const profileWith = (source: string, readOnly?: boolean) => parseProfile('/p/m.json', JSON.stringify({
  name: 'm', backend: 'container', limits: {timeoutMs: 1000, memoryMb: 64, cpus: 1, pids: 16, outputBytes: 1024},
  commands: ['cat'], filesystem: {mounts: [{source, target: '/workspace', ...(readOnly === undefined ? {} : {readOnly})}]},
})) as ContainerProfile;

before(async () => {
  root = await tempDir();
  outside = await tempDir();
  await root.write('ws/data/file.txt', 'hello');
  await mkdir(join(outside.path, 'secret'));
  await symlink(join(outside.path, 'secret'), join(root.path, 'ws', 'escape'));
});
after(async () => {
  await root.dispose();
  await outside.dispose();
});

const policy = () => ({workspace: join(root.path, 'ws'), mountRoots: [join(root.path, 'ws')]});

test('${workspace} resolves to the canonical workspace, read-only by default', async () => {
  const [mount] = await resolveMounts(profileWith('${workspace}/data'), policy());
  assert.equal(mount!.source, join(root.path, 'ws', 'data'));
  assert.equal(mount!.readOnly, true);
  const [rw] = await resolveMounts(profileWith('${workspace}', false), policy());
  assert.equal(rw!.readOnly, false);
});

for (const [title, source, pattern] of [
  ['dot-dot traversal', '${workspace}/../..', /contains "\.\."/],
  ['encoded traversal', '${workspace}/%2e%2e/%2e%2e', /percent-encoding/],
  ['a symlink out of the root', '${workspace}/escape', /resolves outside the allowed mount roots/],
  ['an absolute path outside the roots', '/etc', /resolves outside the allowed mount roots/],
  ['a relative path', 'data', /must be an absolute path/],
  ['a path that does not exist', '${workspace}/nope', /does not exist/],
] as const) {
  test(`mount refused at load time: ${title}`, async () => {
    await assert.rejects(resolveMounts(profileWith(source), policy()), pattern);
  });
}
