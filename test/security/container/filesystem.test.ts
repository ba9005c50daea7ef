// Hazards: writing to the image (read-only root), to any place the profile did not grant
// (/dev/shm, /dev/mqueue, /var/tmp, $HOME), creating POSIX message queues, and filling the granted tmpfs.
// invariant: container:filesystem:only-grants-writable
// invariant: container:filesystem:no-mqueue
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {assertHealthy, dockerAvailable, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});
const gvisor = ok && await dockerAvailable({images: ['toolcell/python'], runsc: true});

/** Creates a file in /dev/mqueue (which makes a queue there) and a queue with mq_open(3), and says what happened. */
const TRY_MQUEUE = `
import ctypes, errno, json, os
out = {}
try:
    fd = os.open("/dev/mqueue/q1", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd); out["file"] = "created"
except OSError as e:
    out["file"] = errno.errorcode[e.errno]
out["listing"] = sorted(os.listdir("/dev/mqueue")) if os.path.isdir("/dev/mqueue") else None
rt = ctypes.CDLL("librt.so.1", use_errno=True)
fd = rt.mq_open(b"/q2", os.O_CREAT | os.O_RDWR, 0o600, None)
out["mq_open"] = "created" if fd >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print(json.dumps(out))
`;

const TRY_WRITES = `
import errno, json, os
out = {}
for path in ["/x", "/etc/passwd", "/usr/bin/python3", "/root/x", "/var/tmp/x", "/dev/shm/x", "/dev/mqueue/x", "/home/x", "/tmp/ok"]:
    try:
        with open(path, "ab") as f:
            f.write(b"pwned")
        out[path] = "written"
    except OSError as e:
        out[path] = errno.errorcode[e.errno]
print(json.dumps(out))
`;

describe('filesystem', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  test('writing to / and every place the profile did not grant fails; only the tmpfs is writable', async () => {
    const r = await backend.run(python(TRY_WRITES), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, string>;
    for (const [path, outcome] of Object.entries(out)) {
      if (path === '/tmp/ok') assert.equal(outcome, 'written');
      else assert.match(outcome, /^(EROFS|EACCES|ENOENT)$/, `${path}: ${outcome}`);
    }
    assert.equal(out['/x'], 'EROFS');
    await assertHealthy(backend);
  });

  for (const runtime of ['runc', 'runsc'] as const) {
    test(`/dev/mqueue is not writable and no message queue can be created there (${runtime})`, {skip: runtime === 'runsc' && !gvisor && 'no runsc'}, async () => {
      const r = await backend.run(python(TRY_MQUEUE, [], {runtime, limits: {timeoutMs: 20_000, memoryMb: 128, outputBytes: 65_536, cpus: 0.5, pids: 32}}), {signal: noSignal()});
      assert.equal(r.failed, false, r.stderr);
      const out = JSON.parse(r.stdout) as {file: string; listing: string[] | null; mq_open: string};
      assert.match(out.file, /^(EROFS|EACCES|ENOENT)$/, `open(O_CREAT) in /dev/mqueue: ${out.file}`);
      assert.ok(out.listing === null || out.listing.length === 0, `/dev/mqueue lists ${JSON.stringify(out.listing)}`);
      // runc: RLIMIT_MSGQUEUE 0 refuses the queue. gVisor does not enforce that rlimit: a queue
      // there lives in the sandbox's own IPC namespace and memory, and the mount stays read-only.
      if (runtime === 'runc') assert.match(out.mq_open, /^(EMFILE|EACCES|ENOSYS)$/, `mq_open: ${out.mq_open}`);
      await assertHealthy(backend, {runtime});
    });
  }

  test('a program written to the tmpfs cannot be executed (noexec)', async () => {
    const r = await backend.run(python(`
import os, shutil, subprocess
shutil.copy("/usr/bin/true", "/tmp/t"); os.chmod("/tmp/t", 0o755)
try:
    subprocess.run(["/tmp/t"]); print("executed")
except PermissionError as e:
    print("refused", e.errno)
`), {signal: noSignal()});
    assert.equal(r.stdout, 'refused 13\n');
    await assertHealthy(backend);
  });

  test('filling the tmpfs ends in ENOSPC at its size, contained to the call', async () => {
    const job = python(`
import errno
n = 0
try:
    with open("/tmp/fill", "wb") as f:
        while True:
            f.write(b"x" * 65536); f.flush(); n += 65536
except OSError as e:
    print(n, errno.errorcode[e.errno])
`, [], {tmpfs: {'/tmp': '8m'}, limits: {timeoutMs: 10_000, memoryMb: 128, outputBytes: 65_536, cpus: 0.5, pids: 32}});
    const r = await backend.run(job, {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const [written, code] = r.stdout.trim().split(' ');
    assert.equal(code, 'ENOSPC');
    assert.ok(Number(written) <= 8 * 2 ** 20, `wrote ${written} bytes into an 8m tmpfs`);
    // The next call gets a fresh, empty tmpfs.
    const next = await backend.run(python('import os; print(os.listdir("/tmp"))'), {signal: noSignal()});
    assert.equal(next.stdout, '[]\n');
    await assertHealthy(backend);
  });

  test('a file cannot grow past RLIMIT_FSIZE even in a large tmpfs', async () => {
    const r = await backend.run(python(`
import errno, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
n = 0
try:
    with open("/tmp/big", "wb") as f:
        while True:
            f.write(b"x" * (1 << 20)); f.flush(); n += 1
except OSError as e:
    print(n, errno.errorcode[e.errno])
`, [], {tmpfs: {'/tmp': '100m'}, limits: {timeoutMs: 10_000, memoryMb: 256, outputBytes: 65_536, cpus: 0.5, pids: 32}}), {signal: noSignal()});
    // fsize = max(64 MiB, largest tmpfs) = 100 MiB, so the tmpfs size or the rlimit stops it first.
    assert.match(r.stdout, /^(\d+) (EFBIG|ENOSPC)\n$/);
    assert.ok(Number(r.stdout.split(' ')[0]) <= 100);
    await assertHealthy(backend);
  });
});
