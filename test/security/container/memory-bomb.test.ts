// Hazard: unbounded allocation takes the host's memory. The container's memory limit (swap
// equal) ends it with the kernel OOM killer, reported as outOfMemory.
// invariant: container:memory:contained
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

describe('memory bomb', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  test('allocating without bound is OOM-killed at the memory limit and reported as outOfMemory', async () => {
    const job = python('a = []\nwhile True: a.append(bytearray(1 << 20))', [], {limits: {timeoutMs: 10_000, memoryMb: 64, outputBytes: 65_536, cpus: 1, pids: 32}});
    const r = await backend.run(job, {signal: noSignal()});
    assert.equal(r.failed, true);
    assert.equal(r.outOfMemory, true);
    assert.equal(r.timedOut, false);
    assert.equal(r.exitCode, undefined, 'killed, not exited');
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
    await assertHealthy(backend);
  });

  test('filling memory through a tmpfs is bounded by the tmpfs size and the memory limit', async () => {
    const job = python(`
import errno
n = 0
try:
    with open("/tmp/fill", "wb") as f:
        while True:
            f.write(b"x" * (1 << 20)); f.flush(); n += 1
except OSError as e:
    print(n, errno.errorcode[e.errno])
`, [], {tmpfs: {'/tmp': '256m'}, limits: {timeoutMs: 10_000, memoryMb: 64, outputBytes: 65_536, cpus: 1, pids: 32}});
    const r = await backend.run(job, {signal: noSignal()});
    // Either the OOM killer ends it (tmpfs pages count against the memory cgroup) or the write fails.
    assert.ok(r.outOfMemory || /^\d+ E(NOSPC|NOMEM)/.test(r.stdout), JSON.stringify(r));
    await assertHealthy(backend);
  });
});
