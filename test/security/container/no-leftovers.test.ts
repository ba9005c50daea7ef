// Hazard: containers (or their runtime processes) pile up. After 200 calls, a quarter of them
// hostile (timeouts, OOM, output floods, fork bombs, cancellations, crashes, runsc), no
// container with our label and no orphaned runtime shim remains. A hostile call may end in any
// way that stops it (a memory bomb by OOM or by its deadline); what it must not do is leave anything.
// invariant: container:lifecycle:nothing-left-behind
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {findOrphanShims} from '../../../src/backends/container/shims.ts';
import type {ContainerJob} from '../../../src/backends/backend.ts';
import {assertHealthy, containerJob, docker, dockerAvailable, managedContainers, python, useContainerBackend, watchCreated} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell'], runsc: true});

const small = {timeoutMs: 1_500, memoryMb: 48, outputBytes: 4_096, cpus: 0.25, pids: 16};
/** The normal calls between the hostile ones: a trivial program, with room for a busy host. */
const normal = {...small, timeoutMs: 5_000};

type Case = {name: string; job: () => ContainerJob; cancelAfterMs?: number; check: (r: Awaited<ReturnType<ContainerBackend['run']>>) => boolean};

const CASES: Case[] = [
  {name: 'sleep forever', job: () => containerJob(['/usr/bin/sleep', 'infinity'], {image: 'toolcell/shell', limits: {...small, timeoutMs: 800}}), check: (r) => r.timedOut},
  {name: 'memory bomb', job: () => python('a = []\nwhile True: a.append(bytearray(1 << 20))', [], {limits: small}), check: (r) => r.failed && (r.outOfMemory || r.timedOut)},
  {name: 'output flood', job: () => python('import sys\nwhile True: sys.stdout.write("x" * 65536)', [], {limits: small}), check: (r) => r.failed && (r.truncated || r.timedOut)},
  {name: 'fork bomb', job: () => python('import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)', [], {limits: {...small, timeoutMs: 1_000}}), check: (r) => r.failed},
  {name: 'cancelled', job: () => python('import time; time.sleep(30)', [], {limits: small}), cancelAfterMs: 300, check: (r) => r.isCanceled},
  // At 0.25 CPU on a busy host, python may not even reach its abort within the deadline: stopped either way.
  {name: 'crash', job: () => python('import os; os.abort()', [], {limits: small}), check: (r) => r.failed && (r.exitCode === 134 || r.timedOut)},
  {name: 'missing command', job: () => containerJob(['/nope'], {limits: small}), check: (r) => r.exitCode === 127},
  {name: 'runsc sleep forever', job: () => python('import time; time.sleep(30)', [], {runtime: 'runsc', limits: {...small, timeoutMs: 1_000, memoryMb: 64}}), check: (r) => r.timedOut},
];

describe('no leftovers', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  test('after 200 calls including hostile ones, no labelled container and no orphaned shim remains', async () => {
    const watch = await watchCreated(`toolcell.owner=${backend.owner}`);
    // The engine's event stream keeps this process alive: it is closed whatever the assertions say.
    try {
      const plan: Array<Case | undefined> = [];
      for (let i = 0; i < 200; i++) plan.push(i % 4 === 0 ? CASES[(i / 4) % CASES.length] : undefined);
      const failures: string[] = [];
      let next = 0;
      const worker = async () => {
        while (next < plan.length) {
          const c = plan[next++];
          const job = c ? c.job() : python('import sys; print(sum(range(int(sys.argv[1]))))', ['1000'], {limits: normal});
          const ac = new AbortController();
          const timer = c?.cancelAfterMs ? setTimeout(() => ac.abort(), c.cancelAfterMs) : undefined;
          try {
            const r = await backend.run(job, {signal: ac.signal});
            if (c ? !c.check(r) : r.stdout !== '499500\n') failures.push(`${c?.name ?? 'normal'}: ${JSON.stringify({...r, stdout: r.stdout.slice(0, 80)})}`);
          } catch (err) {
            failures.push(`${c?.name ?? 'normal'} rejected: ${(err as Error).message}`);
          } finally {
            clearTimeout(timer);
          }
        }
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
      assert.deepEqual(failures, []);
      assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), [], 'docker ps -a --filter label=toolcell.managed (ours)');
      // Every container this backend created (from the engine's event log), and no shim left for any.
      const created = watch.ids();
      assert.ok(created.length >= 200, `${created.length} containers created`);
      // A shim exits a moment after its container is removed: wait for that (10 s deadline), no fixed sleep.
      let orphans = await findOrphanShims(docker, {ids: created});
      for (const until = Date.now() + 10_000; orphans.length > 0 && Date.now() < until;) {
        await new Promise((r) => setTimeout(r, 200));
        orphans = await findOrphanShims(docker, {ids: created});
      }
      assert.deepEqual(orphans.map((o) => o.id), [], 'no containerd shim outlives its container (10 s after the last call)');
      await assertHealthy(backend);
    } finally {
      watch.stop();
    }
  });
});
