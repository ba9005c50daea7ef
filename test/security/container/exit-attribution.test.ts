// Attack: a tool makes its end look like something it is not. It SIGKILLs itself (or its warm
// launcher) to pass as "out of memory", or fakes a fork-failure message; a fork bomb that gives
// up must still be reported as hitting the pids limit. Attribution uses only the engine's and
// the kernel's evidence (exit-reason.ts), cold and warm, and the server keeps answering.
// invariant: container:exit:attributed-by-evidence
import assert from 'node:assert/strict';
import {existsSync} from 'node:fs';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import type {ContainerJob} from '../../../src/backends/backend.ts';
import {failureOf} from '../../../src/frontend/to-tool-result.ts';
import {compileJsonSchema} from '../../../src/policy/json-schema.ts';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import type {ToolDefinition} from '../../../src/policy/tool-definition.ts';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});
/** The pids cgroup is readable here (toolcell on the engine's host, as root): the evidence is there. */
const cgroupReadable = existsSync('/sys/fs/cgroup/pids/docker') || existsSync('/sys/fs/cgroup/system.slice');

const limits = {timeoutMs: 15_000, memoryMb: 96, outputBytes: 65_536, cpus: 1, pids: 32};
const profile = parseProfile('/p/box.json', JSON.stringify({name: 'box', backend: 'container', limits, commands: ['python3']}));
const tool: ToolDefinition = {
  name: 'pkg__t', packageName: 'pkg', packageVersion: '1.0.0', toolName: 't', description: 'd', inputSchema: {type: 'object'}, profile,
  validateInput: compileJsonSchema({type: 'object'}), container: {image: 'toolcell/python', command: ['python3'], output: 'text'}, packageDir: '/x',
};

const SELF_KILL = 'import os, signal\nprint("bye", flush=True)\nos.kill(os.getpid(), signal.SIGKILL)';
const KILL_LAUNCHER = 'import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(5)';
// It lingers 2 s too, so its pids counter is read (0 refused forks) and decides; a container gone
// before any sample falls back to the stderr message, the documented (fakeable) fallback.
const FAKE_FORK_FAILURE = 'import sys, time\nprint("fork: Resource temporarily unavailable", file=sys.stderr)\ntime.sleep(2)\nsys.exit(1)';
const GIVING_UP_BOMB = `
import os, sys, time
try:
    while True:
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
except OSError as e:
    print("gave up:", e, file=sys.stderr); time.sleep(2); sys.exit(1)
`;
// It lingers 2 s after the refused fork: a cold container's pids counter is sampled every 200 ms
// while it runs (a refusal in its last 200 ms can be missed, as the README says), and on a busy
// host a sample can come late.
const BOMB = 'a = []\nwhile True: a.append(bytearray(1 << 20))';

for (const mode of ['cold', 'warm'] as const) {
  describe(`exit attribution (${mode})`, {skip: !ok && 'no Docker engine'}, () => {
    let backend: ContainerBackend;
    // Warm calls: a distinct env makes a pool key of their own.
    const job = (code: string): ContainerJob => python(code, [], {limits, ...(mode === 'warm' ? {env: {MODE: 'warm'}} : {})});
    const ready = async () => {
      for (let i = 0; mode === 'warm' && i < 300 && backend.poolStats().ready < 1; i++) await new Promise((r) => setTimeout(r, 50));
    };
    before(() => {
      backend = new ContainerBackend(mode === 'warm' ? {pool: {size: 1, maxTotal: 1}} : {});
      if (mode === 'warm') backend.prewarm(job(''));
    });
    after(async () => {
      await backend.close();
      assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), []);
    });

    test('a tool that SIGKILLs itself is TOOL_FAILED "killed by signal 9", not MEMORY_LIMIT', async () => {
      await ready();
      const r = await backend.run(job(SELF_KILL), {signal: noSignal()});
      assert.equal(r.failed, true);
      assert.equal(r.outOfMemory, false, JSON.stringify(r));
      assert.equal(r.signal, 9);
      const failure = failureOf(tool, r);
      assert.equal(failure?.code, 'TOOL_FAILED');
      assert.match(failure!.message, /killed by signal 9/);
    });

    if (mode === 'warm') {
      test('a tool that SIGKILLs its launcher is not MEMORY_LIMIT either', async () => {
        await ready();
        const r = await backend.run(job(KILL_LAUNCHER), {signal: noSignal()});
        assert.equal(r.failed, true);
        assert.equal(r.outOfMemory, false, JSON.stringify(r));
        assert.equal(failureOf(tool, r)?.code, 'TOOL_FAILED');
      });
    }

    test('a memory bomb is still MEMORY_LIMIT (the witnesses are there), never success', async () => {
      await ready();
      const r = await backend.run(job(BOMB), {signal: noSignal()});
      assert.equal(r.failed, true);
      assert.equal(r.outOfMemory, true, JSON.stringify({...r, stdout: '', stderr: r.stderr.slice(-200)}));
      assert.equal(failureOf(tool, r)?.code, 'MEMORY_LIMIT');
    });

    test('a fork bomb that gives up is PIDS_LIMIT; a faked fork-failure message is not', {skip: !cgroupReadable && 'pids cgroup not readable here'}, async () => {
      await ready();
      const bomb = await backend.run(job(GIVING_UP_BOMB), {signal: noSignal()});
      assert.equal(bomb.pidsLimited, true, JSON.stringify({...bomb, stdout: ''}));
      assert.equal(failureOf(tool, bomb)?.code, 'PIDS_LIMIT');
      await ready();
      const faked = await backend.run(job(FAKE_FORK_FAILURE), {signal: noSignal()});
      assert.equal(faked.pidsLimited, false, 'the pids cgroup, not the tool\'s stderr, decides');
      assert.equal(failureOf(tool, faked)?.code, 'TOOL_FAILED');
      await assertHealthy(backend);
    });
  });
}
