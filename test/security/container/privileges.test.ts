// Hazards: raising privileges (setuid binaries, setuid(0), capabilities), mounting, new
// namespaces, and ptrace beyond the container.
// invariant: container:privileges:none
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {UID_BASE, UID_COUNT} from '../../../src/backends/container/uid-leases.ts';
import {assertHealthy, dockerAvailable, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

const STATUS = `
import json
st = {}
for line in open("/proc/self/status"):
    k, _, v = line.partition(":")
    st[k] = v.strip()
print(json.dumps(st))
`;

describe('privileges', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  test('the tool runs as its own unprivileged uid with no capability at all, NoNewPrivs 1 and seccomp filtering', async () => {
    const r = await backend.run(python(STATUS), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const st = JSON.parse(r.stdout) as Record<string, string>;
    for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(st[cap], '0000000000000000', cap);
    assert.equal(st.NoNewPrivs, '1');
    assert.equal(st.Seccomp, '2', 'Docker\'s default seccomp filter is in force');
    // A uid:gid leased for this sandbox alone (uid-leases.ts), never root; real = effective = saved = fs.
    const [uid, ...uids] = st.Uid!.split(/\s+/).map(Number);
    assert.ok(uid! >= UID_BASE && uid! < UID_BASE + UID_COUNT, `uid ${uid} is in toolcell's range`);
    assert.deepEqual(uids, [uid, uid, uid]);
    assert.deepEqual(st.Gid!.split(/\s+/).map(Number), [uid, uid, uid, uid]);
    await assertHealthy(backend);
  });

  test('setuid-root binaries and setuid(0) give no privilege (no-new-privileges)', async () => {
    const r = await backend.run(python(`
import json, os, subprocess
out = {}
try:
    os.setuid(0); out["setuid"] = "ok"
except OSError as e:
    out["setuid"] = e.errno
p = subprocess.run(["/usr/bin/su", "-c", "id -u", "root"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
out["su"] = [p.returncode, p.stdout]
# A setuid binary runs with the caller's ids under no-new-privileges: it reports the leased uid.
p = subprocess.run(["/usr/bin/mount", "--version"], capture_output=True, text=True)
out["mount_runs"] = p.returncode
print(json.dumps(out))
`), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as {setuid: unknown; su: [number, string]};
    assert.equal(out.setuid, 1, 'EPERM');
    assert.notEqual(out.su[0], 0);
    assert.notEqual(out.su[1].trim(), '0');
    await assertHealthy(backend);
  });

  test('mount, unshare and new user namespaces are refused', async () => {
    const r = await backend.run(python(`
import ctypes, json, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
out = {}
os.makedirs("/tmp/m", exist_ok=True)
def errno_of(rc):
    return 0 if rc == 0 else ctypes.get_errno()
out["mount_tmpfs"] = errno_of(libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None))
out["remount_root_rw"] = errno_of(libc.mount(None, b"/", None, 32 | 0x20, None))
out["unshare_user"] = errno_of(libc.unshare(0x10000000))
out["unshare_mount"] = errno_of(libc.unshare(0x00020000))
p = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp/m"], capture_output=True, text=True)
out["mount_cmd"] = p.returncode
p = subprocess.run(["/usr/bin/unshare", "-r", "id"], capture_output=True, text=True)
out["unshare_cmd"] = p.returncode
print(json.dumps(out))
`), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, number>;
    for (const k of ['mount_tmpfs', 'remount_root_rw', 'unshare_user', 'unshare_mount']) assert.equal(out[k], 1, `${k}: EPERM`);
    assert.notEqual(out.mount_cmd, 0);
    assert.notEqual(out.unshare_cmd, 0);
    await assertHealthy(backend);
  });

  test('ptrace cannot reach any process outside the container, and nothing inside holds a privilege to steal', async () => {
    // Docker's default seccomp allows same-uid ptrace inside the container (kernel >= 4.8); what
    // must hold is that no host process is reachable and PID 1 (init) is as unprivileged as the tool.
    const r = await backend.run(python(`
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = {"host_pid_visible": os.path.exists(f"/proc/{int(os.sys.argv[1])}")}
rc = libc.ptrace(16, int(os.sys.argv[1]), None, None)
out["attach_host_pid"] = 0 if rc == 0 else ctypes.get_errno()
st = {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/1/status")}
out["init"] = [st["Uid"].split()[0], st["CapEff"], st["NoNewPrivs"]]
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps(out))
`, [String(process.pid)]), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as {host_pid_visible: boolean; attach_host_pid: number; init: string[]; pids: number[]};
    assert.equal(out.attach_host_pid, 3, 'ESRCH: host processes do not exist in the container\'s PID namespace');
    assert.ok(Number(out.init[0]) >= UID_BASE && Number(out.init[0]) < UID_BASE + UID_COUNT, `init runs as the leased uid, not ${out.init[0]}`);
    assert.deepEqual(out.init.slice(1), ['0000000000000000', '1']);
    assert.ok(out.pids.every((p) => p < 100), `only the container's own processes are visible: ${out.pids.join(',')}`);
    await assertHealthy(backend);
  });
});
