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

  test('the package env reaches the tool unchanged: no launcher variable is exported into it', async () => {
    const r = await backend.run(job('import os, json\nprint(json.dumps({k: os.environ.get(k) for k in "tnac"}))\nprint(sorted(k for k in os.environ if k.startswith("TOOLCELL")))'), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const [values, reserved] = r.stdout.trim().split('\n');
    assert.deepEqual(JSON.parse(values!), env);
    assert.equal(reserved, '[]');
  });
});
