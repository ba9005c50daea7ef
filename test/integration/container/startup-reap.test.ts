// Start-up reaping on a shared engine: a new backend removes the leftovers of dead toolcell
// processes and leaves the live sandboxes of other servers (or concurrent test files) alone.
import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import {hostname} from 'node:os';
import {test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {Provenance} from '../../../src/backends/container/provenance.ts';
import {docker, dockerAvailable} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/shell']});

/** A container as this installation creates them: our labels and a proof of origin (provenance.ts). */
async function labelled(owner: string): Promise<string> {
  const claim = Provenance.of().claim(owner);
  const c = await docker.createContainer({name: claim.name, Image: 'toolcell/shell', Cmd: ['/usr/bin/sleep', '60'],
    Labels: {'toolcell.managed': 'true', 'toolcell.owner': owner, ...claim.labels}, HostConfig: {NetworkMode: 'none'}});
  return c.id;
}
const exists = async (id: string) => docker.getContainer(id).inspect().then(() => true, () => false);

test('start() reaps a dead process\'s containers and keeps a live one\'s', {skip: !ok && 'no Docker engine'}, async () => {
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  const orphan = await labelled(`${hostname()}/${dead}/x`);
  const live = await labelled(`${hostname()}/${process.pid}/someone-else`);
  const backend = new ContainerBackend();
  try {
    await backend.start();
    assert.equal(await exists(orphan), false, 'the dead owner\'s container is removed');
    assert.equal(await exists(live), true, 'a live owner\'s container is left alone');
  } finally {
    await backend.close();
    await docker.getContainer(live).remove({force: true}).catch(() => undefined);
    await docker.getContainer(orphan).remove({force: true}).catch(() => undefined);
  }
});
