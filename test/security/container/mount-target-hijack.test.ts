// Hazard: a mount point that a tool can move. A profile mounts ${ws}/out read-write at /out and
// ${ws}/scratch at /out/x/bin (a target inside the writable mount). A hostile call renames /out/x
// and plants the symlink x -> ../usr, and fills scratch with a fake python3; the engine follows
// that symlink inside the next container, so ${ws}/scratch lands on /usr/bin and the next call's
// allowlisted /usr/bin/python3 is the attacker's script, reading the victim's stdin.
// Policy refuses such a profile at load; the jobs below are also built directly (bypassing load)
// so that the backend's check after start, which reads the container's mount table, is attacked.
// invariant: container:mounts:targets-not-movable
// invariant: container:mounts:rechecked-at-create
import assert from 'node:assert/strict';
import {chmod, mkdir, readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import type {ContainerJob, ExecutionResult} from '../../../src/backends/backend.ts';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import {resolveAllMounts} from '../../../src/policy/mounts.ts';
import type {ContainerProfile} from '../../../src/policy/profile-schema.ts';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python} from '../../support/docker.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

const profile = (name: string, mounts: Array<{source: string; target: string; readOnly?: boolean}>) => parseProfile(`/p/${name}.json`, JSON.stringify({
  name, backend: 'container', limits: {timeoutMs: 1000, memoryMb: 64, cpus: 1, pids: 16, outputBytes: 1024},
  commands: ['python3'], filesystem: {mounts},
})) as ContainerProfile;

/** The hostile call: fake python3 (a copy of dash running a script) in scratch, then /out/x -> LINK. */
const PLANT = (link: string) => `
import os, shutil, time
time.sleep(1)  # after the backend's check after start (a rename during it fails this call's own check)
shutil.copy('/usr/bin/dash', '/out/x/bin/sh'); os.chmod('/out/x/bin/sh', 0o755)
open('/out/x/bin/python3', 'w').write('#!/usr/bin/sh\\necho ran >> /out/ran\\necho HIJACKED\\nwhile IFS= read -r l || [ -n "$l" ]; do echo "stolen: $l" >> /out/loot; done\\n')
os.chmod('/out/x/bin/python3', 0o755)
os.rename('/out/x', '/out/x.old')
os.symlink(${JSON.stringify(link)}, '/out/x')
print('planted')`;

const VICTIM = 'import sys; print("victim ok", len(sys.stdin.read()))';

describe('a mount point inside a writable mount cannot be moved to hijack a later call', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  let ws: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    backend = new ContainerBackend();
    ws = await tempDir('toolcell-hijack-');
  });
  after(async () => {
    await backend.close();
    await ws.dispose();
  });

  async function dirs(rel: string): Promise<{out: string; scratch: string}> {
    const out = join(ws.path, rel, 'out');
    const scratch = join(ws.path, rel, 'scratch');
    for (const d of [out, scratch]) {
      await mkdir(d, {recursive: true});
      await chmod(d, 0o777); // the tool runs as an unprivileged leased uid
    }
    return {out, scratch};
  }

  test('policy leaves out the profile (same profile, and a read-only outer mount writable through another profile)', async () => {
    const base = join(ws.path, 'load');
    await mkdir(join(base, 'out'), {recursive: true});
    await mkdir(join(base, 'scratch'), {recursive: true});
    const policy = {workspace: base, mountRoots: [base]};
    const r = await resolveAllMounts([
      profile('one', [{source: '${workspace}/out', target: '/out', readOnly: false}, {source: '${workspace}/scratch', target: '/out/x/bin', readOnly: false}]),
      profile('victim', [{source: '${workspace}/out', target: '/out'}, {source: '${workspace}/scratch', target: '/out/scratch'}]),
      profile('attacker', [{source: '${workspace}/out', target: '/o', readOnly: false}, {source: '${workspace}/scratch', target: '/s', readOnly: false}]),
    ], policy);
    assert.match(r.problems.get('one')!, /the target of mount "\$\{workspace\}\/scratch" \(at \/out\/x\/bin\) lies inside its own writable mount/);
    assert.match(r.problems.get('victim')!, /lies inside read-only mount "\$\{workspace\}\/out" \(at \/out\), whose directory there is writable through profile \w+'s mount/);
    assert.deepEqual([...r.mounts.keys()], ['attacker']);
  });

  for (const [title, link] of [['relative symlink', '../usr'], ['absolute symlink', '/usr']] as const) {
    test(`backend: a planted ${title} at the mount point is seen in the container's mount table and refused; a later call runs the real python3`, async () => {
      const {out, scratch} = await dirs(title.split(' ')[0]!);
      const mounts = [{source: out, target: '/out', readOnly: false}, {source: scratch, target: '/out/x/bin', readOnly: false}];
      const job = (code: string, stdin?: string): ContainerJob => python(code, [], {mounts, ...(stdin === undefined ? {} : {stdin})});

      // On a slow host the check after start may still be reading while the tool renames: the
      // hostile call is then refused itself (its container stopped); the symlink may or may not be there.
      const plant = await backend.run(job(PLANT(link)), {signal: noSignal()}).catch((err: unknown) => {
        assert.ok(err instanceof ToolcellError && err.data.reason === 'mount-changed', String(err));
        return undefined;
      });
      assert.ok(plant === undefined || plant.stdout === 'planted\n', plant?.stderr);

      const victim = job(VICTIM, 'client secret\n');
      let result: ExecutionResult | undefined;
      try {
        result = await backend.run(victim, {signal: noSignal()});
      } catch (err) {
        assert.ok(err instanceof ToolcellError, String(err));
        assert.equal(err.code, 'BACKEND_UNAVAILABLE');
        assert.equal(err.data.reason, 'mount-changed');
        assert.equal(err.data.target, '/out/x/bin');
        assert.ok(!err.message.includes(ws.path), `host path leaked: ${err.message}`);
      }
      assert.ok(result === undefined || !result.stdout.includes('HIJACKED'), `the victim ran the attacker's python3: ${JSON.stringify(result)}`);
      assert.ok(result === undefined || result.stdout === 'victim ok 14\n', JSON.stringify(result));
      // A cold container with mounts holds its tool until the check after start passed: not even started.
      assert.equal(await readFile(join(out, 'ran'), 'utf8').catch(() => ''), '', 'the attacker\'s program ran');
      const loot = await readFile(join(out, 'loot'), 'utf8').catch(() => '');
      assert.ok(!loot.includes('secret'), `stdin was stolen: ${loot}`);
      assert.deepEqual(await managedContainers(`toolcell.job=${victim.id}`, `toolcell.owner=${backend.owner}`), [], 'no container is left behind');

      // A later call of a profile without the nested grant runs the real program.
      const later = await backend.run(python(VICTIM, [], {mounts: [mounts[0]!], stdin: 'x'}), {signal: noSignal()});
      assert.equal(later.stdout, 'victim ok 1\n', later.stderr);
      // The hold wrapper leaves the tool's argv, stdin and environment as without mounts.
      const ENV = 'import os, sys; print(sorted(os.environ), sys.argv)';
      const held = await backend.run(python(ENV, ['a b'], {mounts: [mounts[0]!]}), {signal: noSignal()});
      const plain = await backend.run(python(ENV, ['a b']), {signal: noSignal()});
      assert.equal(held.stdout, plain.stdout, held.stderr);
      await assertHealthy(backend);
    });
  }
});
