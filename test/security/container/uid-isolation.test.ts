// Hazard: one sandbox reaching another through the host's /proc. With any path into /proc (a
// redirected mount, or a future bug), a sandbox that shares the victim's host uid can read the
// victim's environment and, through /proc/<pid>/root, its files. Each container runs as a uid
// and gid of its own, so the kernel refuses (ptrace access mode check). The attacking job is
// given a read-only bind of the host's /proc directly (bypassing policy) and finds the victim's
// host pid with inspect.
// invariant: container:uid:one-per-sandbox
import assert from 'node:assert/strict';
import {readdirSync, readFileSync} from 'node:fs';
import {join} from 'node:path';
import {describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {parseLease, UID_BASE, UID_COUNT, uidLeases} from '../../../src/backends/container/uid-leases.ts';
import {assertHealthy, docker, dockerAvailable, managedContainers, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

const SECRET = `victim-secret-${process.pid}-${Date.now()}`;

/** Reads the victim's environ and a file in its tmpfs through the host's /proc, retrying while the victim writes it. */
const ATTACK = `
import errno, json, os, sys, time
pid = sys.argv[1]
out = {"pid_visible": os.path.isdir(f"/hostproc/{pid}")}
def attempt(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError as e:
        return errno.errorcode[e.errno]
deadline = time.time() + 4
while True:
    out["environ"] = attempt(f"/hostproc/{pid}/environ")
    out["file"] = attempt(f"/hostproc/{pid}/root/tmp/secret")
    try:
        out["root_list"] = sorted(os.listdir(f"/hostproc/{pid}/root/tmp"))
    except OSError as e:
        out["root_list"] = errno.errorcode[e.errno]
    if time.time() > deadline or ${JSON.stringify(SECRET)} in out["file"]:
        break
    time.sleep(0.2)
out["uid"] = os.getuid()
print(json.dumps(out))
`;

describe('one host uid per sandbox', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  test('a sandbox with a path into the host\'s /proc cannot read another running sandbox\'s environ or files (runc)', async () => {
    const victimJob = python(`
import os, time
open("/tmp/secret", "w").write(os.environ["VICTIM_SECRET"])
print(os.getuid(), flush=True)
time.sleep(12)
`, [], {env: {VICTIM_SECRET: SECRET}, limits: {timeoutMs: 30_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 32}});
    const victim = backend.run(victimJob, {signal: noSignal()});
    try {
      // The victim's host pid, as an attacker with a /proc path and a pid would find it.
      let pid = 0;
      for (let i = 0; i < 150 && pid === 0; i++) {
        // Job ids repeat across processes (test-<pid>-<n>): the owner label makes it this backend's container.
        const [id] = await managedContainers(`toolcell.job=${victimJob.id}`, `toolcell.owner=${backend.owner}`);
        if (id !== undefined) {
          const info = await docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(5_000)}).catch(() => undefined);
          if (info?.State.Running) pid = info.State.Pid;
        }
        if (pid === 0) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(pid > 0, 'the victim container started');

      const attack = python(ATTACK, [String(pid)], {
        mounts: [{source: '/proc', target: '/hostproc', readOnly: true}],
        limits: {timeoutMs: 20_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 32},
      });
      const r = await backend.run(attack, {signal: noSignal()});
      assert.equal(r.failed, false, r.stderr);
      const out = JSON.parse(r.stdout) as {pid_visible: boolean; environ: string; file: string; root_list: unknown; uid: number};
      assert.equal(out.pid_visible, true, 'the attack has its path: the victim\'s /proc entry is visible');
      assert.ok(!r.stdout.includes(SECRET), `the victim's secret leaked: ${r.stdout}`);
      assert.match(out.environ, /^(EACCES|EPERM)$/);
      assert.match(out.file, /^(EACCES|EPERM)$/);
      assert.match(String(out.root_list), /^(EACCES|EPERM)$/);
      assert.ok(out.uid >= UID_BASE && out.uid < UID_BASE + UID_COUNT);
    } finally {
      const v = await victim;
      assert.equal(v.failed, false, v.stderr);
    }
    await assertHealthy(backend);
  });

  test('concurrent sandboxes (cold and warm-pool) get distinct uids, and every lease is released when they are removed', async () => {
    const pooled = new ContainerBackend({pool: {size: 2, maxTotal: 4}});
    try {
      const job = () => python('import os, time; print(os.getuid(), os.getgid()); time.sleep(1)', [], {limits: {timeoutMs: 20_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 32}});
      pooled.prewarm(job());
      for (let i = 0; i < 100 && pooled.poolStats().ready < 2; i++) await new Promise((r) => setTimeout(r, 100));
      const results = await Promise.all([
        ...Array.from({length: 3}, () => backend.run(job(), {signal: noSignal()})),
        ...Array.from({length: 3}, () => pooled.run(job(), {signal: noSignal()})),
      ]);
      const ids = results.map((r) => {
        assert.equal(r.failed, false, r.stderr);
        const [uid, gid] = r.stdout.trim().split(' ').map(Number);
        assert.equal(gid, uid);
        return uid!;
      });
      assert.equal(new Set(ids).size, ids.length, `uids of concurrent sandboxes: ${ids.join(', ')}`);
    } finally {
      await pooled.close();
    }
    // Cold containers are removed before run returns; warm ones right after; close() waits for those.
    for (let i = 0; i < 50 && uidLeases.held().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(uidLeases.held(), [], 'no lease is held once the containers are removed');
    const ours = readdirSync(uidLeases.dir).filter((f) => parseLease(readFileSync(join(uidLeases.dir, f), 'latin1'))?.pid === process.pid);
    assert.deepEqual(ours, [], 'no lease file of this process is left');
  });
});
