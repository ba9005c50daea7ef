// Hazard: a tool never ends (sleep forever, busy loop). The deadline kills it, the result says
// timedOut, and the container is gone when the call returns.
// invariant: container:time:killed-at-deadline
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {assertHealthy, containerJob, dockerAvailable, managedContainers, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});

describe('sleep forever', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  for (const [what, job] of [
    ['sleep infinity', containerJob(['/usr/bin/sleep', 'infinity'], {image: 'toolcell/shell', limits: {timeoutMs: 1_500, memoryMb: 32, outputBytes: 1024, cpus: 0.5, pids: 8}})],
    ['a busy loop that ignores SIGTERM', python('import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass', [], {limits: {timeoutMs: 1_500, memoryMb: 64, outputBytes: 1024, cpus: 0.5, pids: 8}})],
  ] as const) {
    test(`${what} is killed at timeoutMs, reported timedOut, and its container is gone`, async () => {
      const t0 = performance.now();
      const r = await backend.run(job, {signal: noSignal()});
      const took = performance.now() - t0;
      assert.equal(r.timedOut, true);
      assert.equal(r.failed, true);
      assert.equal(r.exitCode, undefined);
      assert.ok(took < job.limits.timeoutMs + 2_000, `ended ${Math.round(took)} ms after start (limit ${job.limits.timeoutMs} ms)`);
      assert.ok(took >= job.limits.timeoutMs - 50);
      assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
      await assertHealthy(backend);
    });
  }
});
