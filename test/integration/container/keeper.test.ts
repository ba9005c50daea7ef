// The deadline keeper process on a real engine: it removes a watched container at its deadline
// after its input ended, leaves released and unnamed containers alone, and then exits.
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import {test} from 'node:test';
import {docker, dockerAvailable} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/shell']});
const KEEPER = fileURLToPath(new URL('../../../src/backends/container/keeper.ts', import.meta.url));
const exists = (id: string) => docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(10_000)}).then(() => true, () => false);

test('the keeper removes a watched container at its deadline once its server is gone, then exits', {skip: !ok && 'no Docker engine', timeout: 60_000}, async () => {
  const make = async () => {
    const c = await docker.createContainer({Image: 'toolcell/shell', Cmd: ['/usr/bin/sleep', '120'], HostConfig: {NetworkMode: 'none'}});
    await c.start();
    return c.id;
  };
  const [watched, released, other] = await Promise.all([make(), make(), make()]);
  const keeper = spawn(process.execPath, [KEEPER], {stdio: ['pipe', 'ignore', 'ignore']});
  const exited = new Promise<number | null>((resolve) => keeper.once('exit', (code) => resolve(code)));
  try {
    const deadline = Date.now() + 1_500;
    keeper.stdin.write(`watch ${watched} ${deadline}\nwatch ${released} ${deadline}\nrelease ${released}\nwatch not-an-id ${deadline}\n`);
    keeper.stdin.end(); // the server is gone
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 30_000))]);
    assert.equal(code, 0, 'the keeper exits once its work is done');
    assert.ok(Date.now() >= deadline, 'not before the deadline');
    assert.equal(await exists(watched), false, 'the watched container is gone');
    assert.equal(await exists(released), true, 'a released container is left to its backend');
    assert.equal(await exists(other), true, 'a container never named is never touched');
  } finally {
    keeper.kill('SIGKILL');
    await Promise.all([watched, released, other].map((id) => docker.getContainer(id).remove({force: true}).catch(() => undefined)));
  }
});
