// Attack: someone else on a shared engine runs containers that look like toolcell's (the same
// labels, a dead-pid or missing owner, even a proof label copied from one of ours), or a
// runtime shim of their own that the engine does not list; toolcell's start-up and close-time
// reaping must leave all of them alone, while still reaping its own real orphans.
// invariant: container:reaper:only-ours
import assert from 'node:assert/strict';
import {spawn, spawnSync, type ChildProcess} from 'node:child_process';
import {randomBytes, randomUUID} from 'node:crypto';
import {mkdtempSync, rmSync} from 'node:fs';
import {hostname, tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {PROOF_LABEL, Provenance} from '../../../src/backends/container/provenance.ts';
import {reapOrphanShims} from '../../../src/backends/container/shims.ts';
import {assertHealthy, docker, dockerAvailable} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/shell']});
const exists = async (id: string) => docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(10_000)}).then(() => true, () => false);

describe('the reaper removes only what this installation created', {skip: !ok && 'no Docker engine'}, () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'toolcell-state-'));
  const created: string[] = [];
  const children: ChildProcess[] = [];
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(created.map((id) => docker.getContainer(id).remove({force: true}).catch(() => undefined)));
    rmSync(stateDir, {recursive: true, force: true});
  });

  async function container(labels: Record<string, string>, name?: string): Promise<string> {
    const c = await docker.createContainer({Image: 'toolcell/shell', Cmd: ['/usr/bin/sleep', '120'], Labels: labels, HostConfig: {NetworkMode: 'none'}, ...(name ? {name} : {})});
    created.push(c.id);
    return c.id;
  }

  test('look-alikes (same labels, dead or missing owner, no or copied proof) survive start-up and close reaping; our orphan does not', async () => {
    const ours = Provenance.of(stateDir);
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const deadOwner = `${hostname()}/${dead}/${randomUUID()}`;
    const labels = (owner: string) => ({'toolcell.managed': 'true', 'toolcell.owner': owner, 'toolcell.job': 'j', 'toolcell.profile': 'p'});

    const claim = ours.claim(deadOwner);
    const orphan = await container({...labels(deadOwner), ...claim.labels}, claim.name);
    const noProof = await container(labels(deadOwner));
    const noOwner = await container({'toolcell.managed': 'true'});
    const badPid = await container(labels(`${hostname()}/not-a-pid/x`));
    const forged = await container({...labels(deadOwner), [PROOF_LABEL]: randomBytes(32).toString('hex')}, `toolcell-${randomUUID()}`);
    // Our orphan's exact proof, copied onto a container with another name: the proof binds the name.
    const copied = await container({...labels(deadOwner), ...claim.labels}, `toolcell-${randomUUID()}`);
    // Someone else's installation (another key), same labels and naming scheme.
    const other = Provenance.of(mkdtempSync(join(stateDir, 'other-')));
    const otherClaim = other.claim(deadOwner);
    const theirs = await container({...labels(deadOwner), ...otherClaim.labels}, otherClaim.name);

    const backend = new ContainerBackend({stateDir});
    try {
      await backend.start();
      assert.equal(await exists(orphan), false, 'our own orphan is reaped at start-up');
      for (const [what, id] of Object.entries({noProof, noOwner, badPid, forged, copied, theirs})) {
        assert.equal(await exists(id), true, `a look-alike (${what}) survives start-up reaping`);
      }
      await assertHealthy(backend);
    } finally {
      await backend.close();
    }
    // close() reaps by this backend's owner; a look-alike carrying that owner label survives it too.
    const b2 = new ContainerBackend({stateDir});
    const fake = await container(labels(b2.owner));
    await b2.close();
    assert.equal(await exists(fake), true, 'a look-alike with our owner label but no proof survives close()');
    for (const id of [noProof, noOwner, badPid, forged, copied, theirs]) assert.equal(await exists(id), true);
  });

  test('start-up shim reaping ends only shims of containers we recorded creating', async () => {
    const ours = Provenance.of(stateDir);
    const mine = randomBytes(32).toString('hex');
    const foreign = randomBytes(32).toString('hex');
    ours.record(mine);
    // Processes that look exactly like containerd shims of containers the engine does not list.
    const fakeShim = (id: string) => {
      const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', '-namespace', 'moby', '-id', id], {argv0: 'containerd-shim-runc-v2', stdio: 'ignore'});
      children.push(child);
      return child;
    };
    const myShim = fakeShim(mine);
    const theirShim = fakeShim(foreign);
    await new Promise((r) => setTimeout(r, 300));
    const myExit = new Promise<string | null>((resolve) => myShim.once('exit', (_code, signal) => resolve(signal)));
    const reaped = await reapOrphanShims(docker, {provenance: ours, minAgeMs: 0});
    assert.deepEqual(reaped, [mine]);
    assert.equal(await Promise.race([myExit, new Promise((r) => setTimeout(() => r('still running'), 5_000))]), 'SIGTERM');
    assert.equal(theirShim.exitCode, null, 'the foreign shim is still running');
    assert.equal(theirShim.signalCode, null);
  });
});
