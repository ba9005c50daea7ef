// A container call's deadline measures the tool's own execution (issue 11, tests under load):
// an engine slow to create the container must not turn a trivial call into TIMEOUT, and a tool
// that really overruns is still stopped at timeoutMs.
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import Docker from 'dockerode';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {containerJob, dockerAvailable, managedContainers, noSignal} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/shell']});

/** Milliseconds each container create is held back, standing in for an overloaded engine. */
const SLOW_CREATE_MS = 2_500;
/** Limits of the test jobs but the deadline. */
const LIMITS = {memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 32};

/** A real engine client whose createContainer answers SLOW_CREATE_MS late. */
function slowEngine(): Docker {
  const docker = new Docker();
  const create = docker.createContainer.bind(docker);
  docker.createContainer = (async (options: Docker.ContainerCreateOptions) => {
    await new Promise((r) => setTimeout(r, SLOW_CREATE_MS));
    return create(options);
  }) as typeof docker.createContainer;
  return docker;
}

describe('container deadline from the tool\'s start', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  before(() => {
    backend = new ContainerBackend({docker: slowEngine()});
  });
  after(async () => {
    await backend.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), []);
  });

  test('a trivial call whose container takes longer to create than its whole timeoutMs still runs', async () => {
    const job = containerJob(['/usr/bin/echo', 'ran'], {image: 'toolcell/shell', limits: {...LIMITS, timeoutMs: 2_000}});
    const r = await backend.run(job, {signal: noSignal()});
    assert.equal(r.timedOut, false, `the engine's slowness was counted against the tool: ${JSON.stringify(r)}`);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'ran\n');
    assert.ok(r.durationMs >= SLOW_CREATE_MS, `durationMs ${r.durationMs} still covers the whole call`);
  });

  test('a tool that overruns is still stopped at its own deadline', async () => {
    const job = containerJob(['/usr/bin/sleep', 'infinity'], {image: 'toolcell/shell', limits: {...LIMITS, timeoutMs: 1_000}});
    const r = await backend.run(job, {signal: noSignal()});
    assert.equal(r.timedOut, true);
    assert.equal(r.failed, true);
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`, `toolcell.owner=${backend.owner}`), []);
  });
});
