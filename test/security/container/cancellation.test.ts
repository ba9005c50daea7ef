// Hazard: a cancelled call keeps running (and keeps its resources). Aborting the signal kills
// and removes the container within 2 s, and the result says isCanceled.
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {assertHealthy, dockerAvailable, managedContainers, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

describe('cancellation', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  before(() => {
    backend = new ContainerBackend();
  });
  after(() => backend.close());

  test('cancelling mid-run kills and removes the container within 2 s', async () => {
    const job = python('import time\nprint("started", flush=True)\ntime.sleep(60)', [], {limits: {timeoutMs: 30_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 16}});
    const ac = new AbortController();
    const running = backend.run(job, {signal: ac.signal});
    // Wait until the container exists and runs.
    for (let i = 0; i < 100 && (await managedContainers(`toolcell.job=${job.id}`)).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await managedContainers(`toolcell.job=${job.id}`)).length, 1, 'the container was running');
    const abortedAt = performance.now();
    ac.abort();
    const r = await running;
    const took = performance.now() - abortedAt;
    assert.equal(r.isCanceled, true);
    assert.equal(r.failed, true);
    assert.equal(r.timedOut, false);
    assert.ok(took < 2_000, `resolved ${Math.round(took)} ms after the abort`);
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), [], 'container removed');
    await assertHealthy(backend);
  });

  test('cancelling during container creation leaves no container behind', async () => {
    const job = python('print(1)');
    const ac = new AbortController();
    const running = backend.run(job, {signal: ac.signal});
    setTimeout(() => ac.abort(), 5);
    const r = await running;
    assert.equal(r.isCanceled || !r.failed, true);
    // A container created while the request was being aborted is reaped in the background.
    for (let i = 0; i < 40 && (await managedContainers(`toolcell.job=${job.id}`)).length > 0; i++) await new Promise((res) => setTimeout(res, 50));
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
    await assertHealthy(backend);
  });
});
