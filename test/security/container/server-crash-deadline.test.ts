// Hazard: the server is SIGKILLed while a container call is in flight. Nothing in the server can
// stop the container any more; the deadline keeper (a detached host process the tool cannot
// reach) removes it at its deadline, so no container outlives its deadline whatever happens to
// the server.
// invariant: container:time:deadline-survives-server
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {hostname} from 'node:os';
import {test} from 'node:test';
import {START_TIMEOUT_MS} from '../../../src/backends/container/container-backend.ts';
import {dockerAvailable} from '../../support/docker.ts';
import {connectStdio} from '../../support/mcp-stdio.ts';

const ready = await dockerAvailable({images: ['toolcell/python']});
/** python__run's profile (profiles/python-offline.json) deadline, in ms. */
const TIMEOUT_MS = 10_000;
/** Generous slack on a slow, busy CI host: keeper grace (2 s), one removal, scheduling. */
const MARGIN_MS = 20_000;

/** Ids of containers the server with PID `pid` on this host created (owner label host/pid/…), running or not. */
function containersOf(pid: number): string[] {
  const out = execFileSync('docker', ['ps', '-a', '--filter', 'label=toolcell.managed=true', '--format', '{{.ID}} {{.Label "toolcell.owner"}}'], {encoding: 'utf8', timeout: 15_000}).trim();
  return out === '' ? [] : out.split('\n').filter((l) => l.split(' ')[1]?.startsWith(`${hostname()}/${pid}/`)).map((l) => l.split(' ')[0]!);
}

test('a container call in flight when the server is SIGKILLed is gone by its deadline', {skip: !ready && 'no Docker engine or sandbox images', timeout: 150_000}, async () => {
  const server = await connectStdio(['--audit-log', 'off', '--container-pool', '0']);
  const pid = server.pid()!;
  let ids: string[] = [];
  try {
    const t0 = Date.now();
    const call = server.client.callTool({name: 'python__run', arguments: {code: 'import time\nwhile True: time.sleep(1)'}}).catch(() => undefined);
    for (let i = 0; i < 300 && ids.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ids = containersOf(pid);
    }
    assert.equal(ids.length, 1, 'the call started its container');
    assert.equal(execFileSync('docker', ['inspect', '-f', '{{.State.Running}}', ids[0]!], {encoding: 'utf8'}).trim(), 'true');
    process.kill(pid, 'SIGKILL');
    void call;
    // The container is seen running before its tool is handed its input; a SIGKILL in between
    // leaves the keeper holding the start budget's deadline (START_TIMEOUT_MS + TIMEOUT_MS from
    // creation), after it the tool's own (TIMEOUT_MS from its input). Both are deadlines the
    // container must not outlive; the later one bounds the wait.
    const limit = t0 + START_TIMEOUT_MS + TIMEOUT_MS + MARGIN_MS;
    while (Date.now() < limit && containersOf(pid).length > 0) await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(containersOf(pid), [], `the container outlived its deadline (start budget ${START_TIMEOUT_MS} ms + timeout ${TIMEOUT_MS} ms) by ${MARGIN_MS} ms with its server dead`);
  } finally {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    await server.close();
    for (const id of ids) {
      try { execFileSync('docker', ['rm', '-f', id], {stdio: 'ignore', timeout: 15_000}); } catch { /* gone */ }
    }
  }
});
