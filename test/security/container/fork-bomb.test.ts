// Hazard: a fork bomb exhausts the host's process table. The pids limit contains it, the host
// can still start processes, the call ends at its deadline, and nothing of it survives.
// invariant: container:pids:contained
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {readdirSync, readFileSync} from 'node:fs';
import {randomUUID} from 'node:crypto';
import {describe, test} from 'node:test';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

const BOMB = `
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    except OSError:
        time.sleep(0.005)
`;

/** Host processes whose command line carries `marker` (the bomb and its children). */
function processesWith(marker: string): number {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(marker)) n++;
    } catch { /* gone */ }
  }
  return n;
}

describe('fork bomb', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  test('a fork bomb stops at the pids limit, the host keeps working, and the call ends', async () => {
    const marker = `bomb-${randomUUID()}`;
    const job = python(BOMB, [marker], {limits: {timeoutMs: 3_000, memoryMb: 128, outputBytes: 65_536, cpus: 0.5, pids: 32}});
    let peak = 0;
    let hostSpawns = 0;
    const running = backend.run(job, {signal: noSignal()});
    let done = false;
    void running.finally(() => {
      done = true;
    });
    while (!done) {
      peak = Math.max(peak, processesWith(marker));
      execFileSync('/bin/true'); // the host can still start processes
      hostSpawns++;
      await new Promise((r) => setTimeout(r, 100));
    }
    const r = await running;
    assert.equal(r.failed, true);
    assert.equal(r.timedOut, true);
    assert.equal(r.pidsLimited, true, 'the pids cgroup refused forks');
    assert.ok(peak <= 32, `at most 32 processes of the bomb existed on the host (saw ${peak})`);
    assert.ok(hostSpawns > 0);
    assert.equal(processesWith(marker), 0, 'no process of the bomb survives the call');
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
    await assertHealthy(backend);
  });
});
