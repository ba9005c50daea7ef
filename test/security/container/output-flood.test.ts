// Hazard: a tool prints 100 MB to exhaust the server's memory. Output is capped per stream,
// the container is killed at the cap, and the server's memory stays bounded.
// invariant: container:output:capped
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

const FLOOD = (stream: 'stdout' | 'stderr') => `
import sys
chunk = b"x" * (1 << 20)
for _ in range(100):
    sys.${stream}.buffer.write(chunk)
sys.${stream}.buffer.flush()
print("finished", file=sys.stderr if "${stream}" == "stdout" else sys.stdout)
`;

describe('output flood', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  for (const stream of ['stdout', 'stderr'] as const) {
    test(`100 MB on ${stream} is truncated at outputBytes, the container is killed, memory stays bounded`, async () => {
      const cap = 64 * 1024;
      const job = python(FLOOD(stream), [], {limits: {timeoutMs: 20_000, memoryMb: 256, outputBytes: cap, cpus: 1, pids: 32}});
      global.gc?.();
      const before = process.memoryUsage().rss;
      const r = await backend.run(job, {signal: noSignal()});
      const grown = process.memoryUsage().rss - before;
      assert.equal(r.truncated, true);
      assert.equal(r.failed, true);
      assert.equal(r.timedOut, false);
      assert.ok(Buffer.byteLength(r[stream]) <= cap);
      assert.ok(Buffer.byteLength(r[stream]) > cap - 4, 'the cap is filled');
      assert.equal(r[stream === 'stdout' ? 'stderr' : 'stdout'], '', 'killed before it could finish');
      assert.ok(grown < 64 * 2 ** 20, `server RSS grew by ${grown} bytes for 100 MB of output`);
      assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
      await assertHealthy(backend);
    });
  }
});
