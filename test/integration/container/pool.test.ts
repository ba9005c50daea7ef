// Warm pool (issue 4): containers started ahead of demand, each used by exactly one call and
// then removed; nothing a call did is visible to the next; bursts degrade to cold starts;
// close() leaves nothing behind.
// invariant: pool:no-state-crosses-calls
// invariant: pool:burst-never-reuses
// invariant: container:argv:no-shell
import assert from 'node:assert/strict';
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {UID_BASE, UID_COUNT} from '../../../src/backends/container/uid-leases.ts';
import type {ContainerJob} from '../../../src/backends/backend.ts';
import {HOSTILE_ARGS, assertHealthy, docker, dockerAvailable, managedContainers, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

/** Prints the id of the container the code runs in (from the source of Docker's /etc/hostname bind mount), then runs `code`. */
const WHOAMI = 'import re\ncid = re.search(r"/containers/([0-9a-f]{64})/hostname", open("/proc/self/mountinfo").read()).group(1)\nprint(cid)\n';

const limits = {timeoutMs: 5_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 32};
const job = (code: string, extra: string[] = [], o: Partial<ContainerJob> = {}) => python(WHOAMI + code, extra, {limits, ...o});

async function until(predicate: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await predicate())) {
    if (performance.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function poolMembers(owner: string): Promise<string[]> {
  const list = await docker.listContainers({all: true, filters: {label: ['toolcell.managed=true', `toolcell.owner=${owner}`, 'toolcell.job=pool']}});
  return list.map((c) => c.Id);
}

describe('container warm pool', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  let cold: ContainerBackend;
  before(async () => {
    backend = new ContainerBackend({pool: {size: 2, maxTotal: 4}});
    cold = new ContainerBackend();
    backend.prewarm(job(''));
    await until(() => backend.poolStats().ready === 2);
  });
  after(async () => {
    await backend.close();
    await cold.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), []);
  });

  test('a warm call runs in a member created ahead of demand, and the member is removed after the call', async () => {
    const members = await poolMembers(backend.owner);
    assert.equal(members.length, 2);
    const r = await backend.run(job('print("hello")'), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const [cid, out] = r.stdout.trim().split('\n');
    assert.ok(members.includes(cid!), 'the call used a pool member');
    assert.equal(out, 'hello');
    await until(async () => !(await managedContainers(`toolcell.owner=${backend.owner}`)).includes(cid!));
    await until(() => backend.poolStats().ready === 2); // refilled in the background
  });

  test('argv with shell metacharacters and stdin pass through the launcher exactly', async () => {
    const r = await backend.run(job('import json, sys\nprint(json.loads(sys.stdin.readline()) == sys.argv[1:])\nprint(repr(sys.stdin.read()))', HOSTILE_ARGS,
      {stdin: `${JSON.stringify(HOSTILE_ARGS)}\nrest \\ of\nstdin`}), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').slice(1), ['True', "'rest \\\\ of\\nstdin'"]);
  });

  test('a warm call sees exactly the environment, user, limits and mounts of a cold call', async () => {
    const probe = 'import json, os\nst = {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status")}\n'
      + 'print(json.dumps({"env": dict(os.environ), "uid": os.getuid(), "cwd": os.getcwd(), "caps": st["CapEff"], "nnp": st["NoNewPrivs"], '
      + '"mem": open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read().strip() if os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes") else open("/sys/fs/cgroup/memory.max").read().strip(), '
      + '"mounts": sorted(l.split()[4] for l in open("/proc/self/mountinfo")), "ppid": os.getppid(), '
      + '"gppid": int([l for l in open(f"/proc/{os.getppid()}/status") if l.startswith("PPid:")][0].split()[1])}))';
    await until(() => backend.poolStats().ready > 0);
    const warm = await backend.run(job(probe), {signal: noSignal()});
    const coldRun = await cold.run(job(probe), {signal: noSignal()});
    assert.equal(warm.failed, false, warm.stderr);
    assert.equal(coldRun.failed, false, coldRun.stderr);
    const w = JSON.parse(warm.stdout.trim().split('\n')[1]!);
    const c = JSON.parse(coldRun.stdout.trim().split('\n')[1]!);
    // Only the parent differs: a cold tool is init's child; a warm tool is the launcher's child,
    // and the launcher is init's child (it stays to report the tool's exit).
    assert.equal(c.ppid, 1);
    assert.equal(w.gppid, 1);
    assert.notEqual(w.ppid, 1);
    // Each container runs as its own leased uid (uid-leases.ts): same range, never the same uid.
    assert.ok(w.uid >= UID_BASE && w.uid < UID_BASE + UID_COUNT && c.uid >= UID_BASE && c.uid < UID_BASE + UID_COUNT);
    assert.notEqual(w.uid, c.uid);
    for (const v of [w, c]) {
      delete v.ppid;
      delete v.gppid;
      delete v.uid;
    }
    assert.deepEqual(w, c);
  });

  test('no state crosses calls: a file in tmpfs and a background process of call N are gone in call N+1', async () => {
    await until(() => backend.poolStats().ready === 2);
    const first = await backend.run(job('import os, subprocess\nopen("/tmp/state", "w").write("left")\n'
      + 'subprocess.Popen(["/usr/bin/sleep", "300"], start_new_session=True)\nprint(os.path.exists("/tmp/state"))'), {signal: noSignal()});
    assert.equal(first.failed, false, first.stderr);
    const second = await backend.run(job('import os\nprint(os.path.exists("/tmp/state"), sorted(os.listdir("/tmp")))\n'
      + 'cmds = [open(f"/proc/{p}/cmdline", "rb").read() for p in os.listdir("/proc") if p.isdigit()]\nprint(any(c.startswith(b"/usr/bin/" + b"sleep") for c in cmds))'), {signal: noSignal()});
    const [cid1] = first.stdout.split('\n');
    const [cid2, exists, sleeping] = second.stdout.trim().split('\n');
    assert.notEqual(cid1, cid2, 'a different container');
    assert.equal(exists, 'False []');
    assert.equal(sleeping, 'False');
  });

  test('a burst larger than the pool degrades to cold starts, never to reuse', async () => {
    await until(() => backend.poolStats().ready === 2);
    const results = await Promise.all(Array.from({length: 6}, (_, i) => backend.run(job(`print(${i})`), {signal: noSignal()})));
    const ids = results.map((r) => r.stdout.split('\n')[0]);
    assert.ok(results.every((r, i) => !r.failed && r.stdout.split('\n')[1] === String(i)));
    assert.equal(new Set(ids).size, 6, 'six calls, six containers');
  });

  test('hazards on a warm member: sleep forever times out and the member is removed; OOM is reported', async () => {
    await until(() => backend.poolStats().ready === 2);
    const r = await backend.run(job('import time; time.sleep(100)', [], {limits: {...limits, timeoutMs: 1_000}}), {signal: noSignal()});
    assert.equal(r.timedOut, true);
    const cid = r.stdout.split('\n')[0]!;
    assert.ok(!(await managedContainers(`toolcell.owner=${backend.owner}`)).includes(cid));
    await until(() => backend.poolStats().ready > 0);
    const oom = await backend.run(job('a = []\nwhile True: a.append(bytearray(1 << 20))'), {signal: noSignal()});
    assert.equal(oom.outOfMemory, true);
    await assertHealthy(backend, {limits});
  });

  test('exit report: the status comes back, the report is not in the output, a forged report does not end the call', async () => {
    await until(() => backend.poolStats().ready > 0);
    const three = await backend.run(job('import sys\nprint("out", end="")\nsys.stderr.write("err")\nsys.exit(3)'), {signal: noSignal()});
    assert.equal(three.exitCode, 3);
    assert.equal(three.failed, true);
    assert.equal(three.stdout.split('\n')[1], 'out');
    assert.equal(three.stderr, 'err');
    // A report with a token the tool made up, on both streams, then more output: the call goes on.
    await until(() => backend.poolStats().ready > 0);
    const fake = '\\x1etoolcell:' + 'ab'.repeat(16);
    const forged = await backend.run(job(`import sys, time\nsys.stdout.write("${fake}\\x1e"); sys.stdout.flush()\n`
      + `sys.stderr.write("${fake}:0\\x1e"); sys.stderr.flush()\ntime.sleep(0.3)\nprint("after")\nsys.exit(4)`), {signal: noSignal()});
    assert.equal(forged.exitCode, 4);
    assert.match(forged.stdout, /\x1etoolcell:(ab){16}\x1eafter\n$/);
  });

  test('a tool that ends its launcher still gets an answer, from the engine', async () => {
    await until(() => backend.poolStats().ready > 0);
    const r = await backend.run(job('import os, signal, time\nprint("before", flush=True)\nos.kill(os.getppid(), signal.SIGTERM)\ntime.sleep(2)'), {signal: noSignal()});
    assert.equal(r.timedOut, false);
    assert.equal(r.failed, true);
    assert.equal(r.stdout.split('\n')[1], 'before');
    await assertHealthy(backend, {limits});
  });

  test('close() right after a warm call was answered (its removal still in flight) leaves nothing behind', async () => {
    const b = new ContainerBackend({pool: {size: 1}});
    b.prewarm(job(''));
    await until(() => b.poolStats().ready === 1);
    const r = await b.run(job('print("done")'), {signal: noSignal()});
    assert.equal(r.stdout.split('\n')[1], 'done');
    await b.close(); // right after the answer: the removal in the background is awaited
    assert.deepEqual(await managedContainers(`toolcell.owner=${b.owner}`), []);
  });

  test('a member whose settings differ is not used', async () => {
    await until(() => backend.poolStats().ready === 2);
    const members = await poolMembers(backend.owner);
    const r = await backend.run(job('print(open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read().strip())', [], {limits: {...limits, memoryMb: 96}}), {signal: noSignal()});
    const [cid, mem] = r.stdout.trim().split('\n');
    assert.ok(!members.includes(cid!), 'a cold container, not a member with other settings');
    assert.equal(mem, String(96 * 2 ** 20));
  });
});

describe('container warm pool lifecycle', {skip: !ok && 'no Docker engine'}, () => {
  test('a member that aged out is discarded, not used', async () => {
    const b = new ContainerBackend({pool: {size: 1, maxAgeMs: 1_000}});
    try {
      b.prewarm(job(''));
      await until(() => b.poolStats().ready === 1);
      const old = await poolMembers(b.owner);
      await new Promise((r) => setTimeout(r, 1_200));
      const r = await b.run(job('print(1)'), {signal: noSignal()});
      assert.ok(!old.includes(r.stdout.split('\n')[0]!), 'the aged member was not used');
      await until(async () => !(await managedContainers(`toolcell.owner=${b.owner}`)).includes(old[0]!));
    } finally {
      await b.close();
    }
  });

  test('an empty pool with a member being created: the next call waits for that fresh member instead of starting a cold one', async () => {
    const b = new ContainerBackend({pool: {size: 1, maxTotal: 1}});
    try {
      b.prewarm(job(''));
      await until(() => b.poolStats().ready === 1);
      const [first, second] = await Promise.all([b.run(job('print(1)'), {signal: noSignal()}), b.run(job('print(2)'), {signal: noSignal()})]);
      assert.deepEqual([first.stdout.split('\n')[1], second.stdout.split('\n')[1]], ['1', '2']);
      assert.notEqual(first.stdout.split('\n')[0], second.stdout.split('\n')[0], 'two calls, two containers');
      assert.equal(b.poolStats().handed, 1, 'the second call got the member created when the first took the ready one');
    } finally {
      await b.close();
    }
    assert.deepEqual(await managedContainers(`toolcell.owner=${b.owner}`), []);
  });

  test('a call cancelled while it waits for a member ends at once; the member it waited for stays in the pool', async () => {
    const b = new ContainerBackend({pool: {size: 1, maxTotal: 1}});
    try {
      b.prewarm(job(''));
      await until(() => b.poolStats().ready === 1);
      const first = b.run(job('print(1)'), {signal: noSignal()});
      const abort = new AbortController();
      const waiting = b.run(job('print(2)'), {signal: abort.signal});
      await new Promise((r) => setTimeout(r, 5));
      const t0 = performance.now();
      abort.abort();
      const cancelled = await waiting;
      assert.equal(cancelled.isCanceled, true);
      assert.ok(performance.now() - t0 < 500, 'ended at once');
      assert.equal((await first).failed, false);
      await until(() => b.poolStats().ready === 1);
      assert.equal(b.poolStats().handed, 0);
    } finally {
      await b.close();
    }
    assert.deepEqual(await managedContainers(`toolcell.owner=${b.owner}`), []);
  });

  test('close() with a full pool leaves no labelled container', async () => {
    const b = new ContainerBackend({pool: {size: 3, maxTotal: 3}});
    b.prewarm(job(''));
    await until(() => b.poolStats().ready === 3);
    assert.equal((await managedContainers(`toolcell.owner=${b.owner}`)).length, 3);
    await b.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${b.owner}`), []);
  });

  test('close() while members are still being created leaves no labelled container', async () => {
    const b = new ContainerBackend({pool: {size: 3, maxTotal: 3}});
    b.prewarm(job(''));
    await new Promise((r) => setTimeout(r, 20));
    await b.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${b.owner}`), []);
  });

  test('an image whose launcher the tool user can read (so it would be dumpable) never hosts a warm call: the pool stops trying and calls run cold', async () => {
    const tag = `toolcell-test/readable-launcher:${process.pid}`;
    const dir = mkdtempSync(join(tmpdir(), 'toolcell-readable-launcher-'));
    writeFileSync(join(dir, 'Dockerfile'), 'FROM toolcell/python\nUSER root\nRUN chmod 0555 /opt/toolcell/sh\nUSER 65534:65534\n');
    const stream = await docker.buildImage({context: dir, src: ['Dockerfile']}, {t: tag, rm: true, forcerm: true});
    const events = await new Promise<Array<{error?: string}>>((resolve, reject) => docker.modem.followProgress(stream, (err, out) => (err ? reject(err) : resolve(out))));
    assert.equal(events.find((e) => e.error)?.error, undefined, 'test image built');
    rmSync(dir, {recursive: true, force: true});
    const b = new ContainerBackend({pool: {size: 2}});
    try {
      const readable = (code: string) => job(code, [], {image: tag});
      b.prewarm(readable(''));
      await until(async () => b.poolStats().creating === 0 && (await managedContainers(`toolcell.owner=${b.owner}`)).length === 0);
      assert.equal(b.poolStats().ready, 0);
      for (let i = 0; i < 3; i++) {
        const r = await b.run(readable('print("cold")'), {signal: noSignal()});
        assert.equal(r.failed, false, r.stderr);
        assert.equal(r.stdout.split('\n')[1], 'cold');
      }
      assert.equal(b.poolStats().ready, 0, 'no member is retried for a minute');
    } finally {
      await b.close();
      for (let i = 0; i < 5; i++) {
        const removed = await docker.getImage(tag).remove({force: true}).then(() => true, (err: {statusCode?: number}) => err.statusCode === 404);
        if (removed) break;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    assert.deepEqual(await managedContainers(`toolcell.owner=${b.owner}`), []);
  });
});
