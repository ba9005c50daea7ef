// Hazard: a cancelled call keeps running (and keeps its resources). Aborting the signal kills
// and removes the container within 2 s, and the result says isCanceled.
// invariant: dispatch:cancel:kills-sandbox
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {assertHealthy, dockerAvailable, managedContainers, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

describe('cancellation', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

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
    // Removed within 2 s of the abort (the engine may still be finishing the removal when the call resolves).
    let left = await managedContainers(`toolcell.job=${job.id}`);
    while (left.length > 0 && performance.now() - abortedAt < 2_000) {
      await new Promise((r) => setTimeout(r, 50));
      left = await managedContainers(`toolcell.job=${job.id}`);
    }
    assert.deepEqual(left, [], 'container removed within 2 s of the abort');
    await assertHealthy(backend);
  });

  test('cancelling during container creation leaves no container behind', async () => {
    const job = python('print(1)');
    const ac = new AbortController();
    const running = backend.run(job, {signal: ac.signal});
    setTimeout(() => ac.abort(), 5);
    const r = await running;
    assert.equal(r.isCanceled || !r.failed, true);
    // The engine may finish creating the container after the call answered; it is removed as
    // soon as it exists. Watch for 1 s at least, then it must be gone (within 3 s).
    const t0 = performance.now();
    let left = await managedContainers(`toolcell.job=${job.id}`);
    while (performance.now() - t0 < 3_000 && (left.length > 0 || performance.now() - t0 < 1_000)) {
      await new Promise((res) => setTimeout(res, 50));
      left = await managedContainers(`toolcell.job=${job.id}`);
    }
    assert.deepEqual(left, []);
    await assertHealthy(backend);
  });

  test('close() with a call in flight cancels it and leaves no container', async () => {
    const b = new ContainerBackend();
    const job = python('import time\ntime.sleep(60)', [], {limits: {timeoutMs: 30_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 16}});
    const running = b.run(job, {signal: new AbortController().signal});
    for (let i = 0; i < 100 && (await managedContainers(`toolcell.job=${job.id}`)).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    await b.close();
    const r = await running;
    assert.equal(r.isCanceled, true);
    assert.ok(performance.now() - t0 < 5_000);
    assert.deepEqual(await managedContainers(`toolcell.owner=${b.owner}`), []);
    await assertHealthy(backend);
  });
});
