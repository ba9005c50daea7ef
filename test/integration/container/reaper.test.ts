// The reaper on a real engine: labelled leftovers are removed by scope, unlabelled containers
// never; a runsc start that hangs (seen on this kind of machine) is ended and leaves no process.
import assert from 'node:assert/strict';
import {randomUUID} from 'node:crypto';
import {describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {Provenance} from '../../../src/backends/container/provenance.ts';
import {reapContainers} from '../../../src/backends/container/reaper.ts';
import {findOrphanShims, killStuckRuntime, reapOrphanShims} from '../../../src/backends/container/shims.ts';
import {assertHealthy, docker, dockerAvailable, managedContainers} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/shell', 'toolcell/python']});
const runsc = ok && await dockerAvailable({images: ['toolcell/shell', 'toolcell/python'], runsc: true});

/** A running container with `labels`; with the installation's proof of origin for its owner label unless `proven` is false. */
async function leftover(labels: Record<string, string>, proven = true): Promise<string> {
  const claim = proven ? Provenance.of().claim(labels['toolcell.owner'] ?? '') : undefined;
  const c = await docker.createContainer({Image: 'toolcell/shell', Cmd: ['/usr/bin/sleep', '60'], Labels: {...labels, ...claim?.labels}, HostConfig: {NetworkMode: 'none'},
    ...(claim ? {name: claim.name} : {})});
  await c.start();
  return c.id;
}

describe('reaper', {skip: !ok && 'no Docker engine'}, () => {
  test('containers of one owner are reaped, other owners\' and unlabelled containers are not', async () => {
    const mine = `test/${randomUUID()}`;
    const theirs = `test/${randomUUID()}`;
    const a = await leftover({'toolcell.managed': 'true', 'toolcell.owner': mine, 'toolcell.job': 'j1'});
    const b = await leftover({'toolcell.managed': 'true', 'toolcell.owner': theirs, 'toolcell.job': 'j2'});
    const plain = await leftover({'some.other': 'label'});
    try {
      const r = await reapContainers(docker, {owner: mine});
      assert.deepEqual(r, {removed: [a], failed: []});
      assert.deepEqual(await managedContainers(`toolcell.owner=${mine}`), []);
      assert.deepEqual(await managedContainers(`toolcell.owner=${theirs}`), [b]);
      const byJob = await reapContainers(docker, {job: 'j2'});
      assert.deepEqual(byJob.removed, [b]);
      assert.ok((await docker.getContainer(plain).inspect()).State.Running, 'an unlabelled container is never touched');
    } finally {
      await docker.getContainer(plain).remove({force: true});
      await docker.getContainer(b).remove({force: true}).catch(() => undefined);
    }
  });

  test('a backend\'s close() reaps what carries its owner label, even containers it lost track of', async () => {
    const backend = new ContainerBackend();
    await leftover({'toolcell.managed': 'true', 'toolcell.owner': backend.owner});
    await backend.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), []);
  });
});

describe('hung runsc start', {skip: !runsc && 'no runsc runtime'}, () => {
  test('a runsc start that hangs is ended by killing its runtime processes; no container or shim remains', async (t) => {
    // These settings made runsc 2022-12 hang in `start` on this kind of machine (a pids limit far
    // below what the sentry needs, with the hardened flags). toHostConfig never produces them.
    const owner = `test/${randomUUID()}`;
    const claim = Provenance.of().claim(owner);
    const c = await docker.createContainer({
      name: claim.name, Image: 'toolcell/shell', Entrypoint: ['/usr/bin/echo'], Cmd: ['hi'], User: '65534:65534',
      Labels: {'toolcell.managed': 'true', 'toolcell.owner': owner, ...claim.labels},
      HostConfig: {
        Runtime: 'runsc', NetworkMode: 'none', ReadonlyRootfs: true, CapDrop: ['ALL'], SecurityOpt: ['no-new-privileges'],
        Tmpfs: {'/tmp': 'rw,noexec,nosuid,nodev,size=8m'}, Init: true, LogConfig: {Type: 'none', Config: {}},
        PidsLimit: 32, Memory: 64 * 2 ** 20, MemorySwap: 64 * 2 ** 20,
      },
    });
    let hung = false;
    try {
      await c.start({abortSignal: AbortSignal.timeout(5_000)});
    } catch (err) {
      hung = (err as Error).name === 'AbortError' || /abort/i.test(String((err as Error).message));
      if (!hung) t.diagnostic(`runsc refused instead of hanging: ${(err as Error).message.slice(0, 200)}`);
    }
    if (hung) {
      const killed = await killStuckRuntime(c.id);
      assert.ok(killed.length > 0, 'runtime processes of the hung start were found');
    }
    const removal = await reapContainers(docker, {owner});
    assert.deepEqual(removal.failed, []);
    // The shim of such a start can outlive the container (design/MACHINE.md): end it as the backend does.
    await new Promise((r) => setTimeout(r, 500));
    await reapOrphanShims(docker, {ids: [c.id]});
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await managedContainers(`toolcell.owner=${owner}`), []);
    assert.deepEqual((await findOrphanShims(docker, {ids: [c.id]})).map((o) => o.id), [], 'no shim outlives the container');
    const backend = new ContainerBackend();
    await assertHealthy(backend, {runtime: 'runsc', limits: {timeoutMs: 10_000, memoryMb: 64, outputBytes: 1024, cpus: 0.5, pids: 32}});
    await backend.close();
  });
});
