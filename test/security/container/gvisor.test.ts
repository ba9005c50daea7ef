// Hazards under gVisor (runsc): the same hostile programs as under runc are contained, the call
// really runs under runsc, and a normal call still works afterwards.
// invariant: container:runtime:no-fallback
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend, START_TIMEOUT_MS, STOP_REMOVE_TIMEOUT_MS} from '../../../src/backends/container/container-backend.ts';
import {UID_BASE, UID_COUNT} from '../../../src/backends/container/uid-leases.ts';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python'], runsc: true});

const RUNSC = {runtime: 'runsc' as const};
const limits = (l: Partial<{timeoutMs: number; memoryMb: number; pids: number}> = {}) => ({
  limits: {timeoutMs: 10_000, memoryMb: 128, outputBytes: 65_536, cpus: 0.5, pids: 32, ...l},
});

describe('gVisor (runsc)', {skip: !ok && 'no runsc runtime'}, () => {
  let backend: ContainerBackend;
  before(() => {
    backend = new ContainerBackend();
  });
  after(async () => {
    await backend.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), []);
  });

  test('a runsc call really runs under gVisor', async () => {
    const r = await backend.run(python('import subprocess; print(subprocess.run(["dmesg"], capture_output=True, text=True).stdout)', [], RUNSC), {signal: noSignal()});
    assert.match(r.stdout, /gVisor/);
    await assertHealthy(backend, RUNSC);
  });

  test('hostile program under runsc: network, root writes, privileges and host files are all refused', async () => {
    const r = await backend.run(python(`
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
out = {}
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("172.17.0.1", 9)); out["net"] = "connected"
except OSError as e:
    out["net"] = e.errno
out["writes"] = {}
for p in ["/x", "/var/tmp/x", "/tmp/x", "/dev/shm/x"]:
    try:
        open(p, "w").write("x"); out["writes"][p] = "written"
    except OSError as e:
        out["writes"][p] = errno.errorcode[e.errno]
st = {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status")}
out["caps"] = st["CapEff"]; out["nnp"] = libc.prctl(39, 0, 0, 0, 0); out["uid"] = os.getuid()  # PR_GET_NO_NEW_PRIVS
out["mount"] = 0 if libc.mount(b"none", b"/mnt", b"tmpfs", 0, None) == 0 else ctypes.get_errno()
out["ifaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
print(json.dumps(out))
`, [], {...RUNSC, ...limits(), tmpfs: {}}), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.notEqual(out.net, 'connected');
    const writes = out.writes as Record<string, string>;
    assert.equal(writes['/var/tmp/x'], 'EROFS', 'the root filesystem is read-only (/var/tmp is world-writable in the image)');
    for (const [path, outcome] of Object.entries(writes)) assert.match(outcome, /^(EROFS|EACCES|ENOENT)$/, `${path}: ${outcome}`);
    assert.equal(out.caps, '0000000000000000');
    assert.equal(out.nnp, 1);
    assert.ok(Number(out.uid) >= UID_BASE && Number(out.uid) < UID_BASE + UID_COUNT, `runs as a leased uid, not ${String(out.uid)}`);
    assert.equal(out.mount, 1);
    assert.deepEqual(out.ifaces, ['lo']);
    await assertHealthy(backend, RUNSC);
  });

  test('memory bomb under runsc is OOM-killed', async () => {
    const r = await backend.run(python('a = []\nwhile True: a.append(bytearray(1 << 20))', [], {...RUNSC, ...limits({memoryMb: 96})}), {signal: noSignal()});
    assert.equal(r.failed, true);
    assert.equal(r.outOfMemory, true);
    await assertHealthy(backend, RUNSC);
  });

  test('concurrent memory bombs under runsc are all reported as outOfMemory (even when inspect misses OOMKilled)', async () => {
    const bomb = () => python('a = []\nwhile True: a.append(bytearray(1 << 20))', [], {...RUNSC, ...limits({memoryMb: 96})});
    const results = await Promise.all(Array.from({length: 8}, () => backend.run(bomb(), {signal: noSignal()})));
    assert.deepEqual(results.map((r) => r.outOfMemory), Array(8).fill(true), JSON.stringify(results.map((r) => [r.exitCode, r.outOfMemory])));
    await assertHealthy(backend, RUNSC);
  });

  test('fork bomb under runsc is contained and the call ends', async () => {
    const job = python(`
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(60); os._exit(0)
    except OSError:
        time.sleep(0.01)
`, [], {...RUNSC, ...limits({timeoutMs: 4_000, memoryMb: 256, pids: 16})});
    const t0 = performance.now();
    const r = await backend.run(job, {signal: noSignal()});
    assert.equal(r.failed, true);
    // The call ends: its deadline is 4 s from when the started container has its input; starting
    // a runsc sandbox has its own budget and the stop waits for removal at most its own bound.
    const elapsed = performance.now() - t0;
    assert.ok(elapsed < START_TIMEOUT_MS + 4_000 + STOP_REMOVE_TIMEOUT_MS, `the call took ${Math.round(elapsed)} ms`);
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
    await assertHealthy(backend, RUNSC);
  });

  test('sleep forever under runsc times out and its container is gone', async () => {
    const job = python('import time; time.sleep(1000)', [], {...RUNSC, ...limits({timeoutMs: 1_500})});
    const r = await backend.run(job, {signal: noSignal()});
    assert.equal(r.timedOut, true);
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
    await assertHealthy(backend, RUNSC);
  });

  test('100 MB of output under runsc is truncated', async () => {
    const r = await backend.run(python('import sys\nfor _ in range(100): sys.stdout.buffer.write(b"x" * (1 << 20))', [], {...RUNSC, ...limits()}), {signal: noSignal()});
    assert.equal(r.truncated, true);
    assert.ok(r.stdout.length <= 65_536);
    await assertHealthy(backend, RUNSC);
  });
});
