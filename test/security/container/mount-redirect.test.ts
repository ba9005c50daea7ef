// Hazard: redirecting a mount between profile load and container start. A tool with a writable
// mount above another grant's source replaces that source with a symlink (to /proc: every host
// process and, through /proc/<pid>/root, other sandboxes' files; or out of the mount root for
// writes); or someone on the host replaces the workspace with a symlink to /etc. Each later
// container create re-checks the sources and refuses; nothing is mounted, no container is left.
// These jobs are built directly (policy would refuse the nested grant at load: see
// test/unit/policy/mount-overlap.test.ts), so that the backend's own check is what is attacked.
// invariant: container:mounts:rechecked-at-create
import assert from 'node:assert/strict';
import {chmod, mkdir, readdir, rename, rm, symlink, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import type {ContainerJob, ExecutionResult} from '../../../src/backends/backend.ts';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {assertHealthy, dockerAvailable, managedContainers, noSignal, python} from '../../support/docker.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

/** Lists a directory in the container and reads `/data/1/cmdline` if there is one. */
const LIST = (dir: string) => `
import os, json
out = {"list": sorted(os.listdir(${JSON.stringify(dir)}))[:50]}
try:
    out["pid1"] = open(${JSON.stringify(dir + '/1/cmdline')}, "rb").read().decode(errors="replace")
except OSError as e:
    out["pid1"] = str(e.errno)
print(json.dumps(out))
`;

/** The call must be refused as a changed mount naming `target`, never the host path under `hostPath`. */
async function assertRefused(call: Promise<ExecutionResult>, target: string, hostPath: string): Promise<void> {
  let result: ExecutionResult | undefined;
  try {
    result = await call;
  } catch (err) {
    assert.ok(err instanceof ToolcellError, String(err));
    assert.equal(err.code, 'BACKEND_UNAVAILABLE');
    assert.equal(err.data.reason, 'mount-changed');
    assert.equal(err.data.target, target);
    assert.ok(err.message.includes(target), err.message);
    assert.ok(!err.message.includes(hostPath) && !JSON.stringify(err.data).includes(hostPath), `host path leaked: ${err.message}`);
    return;
  }
  assert.fail(`the call ran with a redirected mount: ${JSON.stringify(result)}`);
}

describe('mount sources are re-checked at every create', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  let pooled: ContainerBackend;
  let ws: Awaited<ReturnType<typeof tempDir>>;
  let outside: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    backend = new ContainerBackend();
    pooled = new ContainerBackend({pool: {size: 1, maxTotal: 2}});
    ws = await tempDir('toolcell-mount-');
    outside = await tempDir('toolcell-outside-');
    await chmod(outside.path, 0o777);
  });
  after(async () => {
    await Promise.all([backend.close(), pooled.close()]);
    await ws.dispose();
    await outside.dispose();
  });

  /** A world-writable directory under the workspace (the tool runs as an unprivileged uid). */
  async function dir(rel: string): Promise<string> {
    const path = join(ws.path, rel);
    await mkdir(path, {recursive: true});
    await chmod(path, 0o777);
    return path;
  }

  test('a tool that swaps a nested read-only source for a symlink to /proc does not see the host\'s processes in the next call', async () => {
    const out = await dir('proc-case/out');
    const data = await dir('proc-case/out/data');
    await writeFile(join(data, 'marker'), 'granted');
    const mounts = [{source: out, target: '/out', readOnly: false}, {source: data, target: '/data', readOnly: true}];
    const job = (code: string): ContainerJob => python(code, [], {mounts});

    const first = await backend.run(job(LIST('/data')), {signal: noSignal()});
    assert.equal(first.failed, false, first.stderr);
    assert.deepEqual(JSON.parse(first.stdout).list, ['marker']);

    // Call 1 plants the symlink through its writable mount.
    const plant = await backend.run(job('import os; os.rename("/out/data", "/out/data.old"); os.symlink("/proc", "/out/data"); print("planted")'), {signal: noSignal()});
    assert.equal(plant.stdout, 'planted\n', plant.stderr);

    // Call 2 would list every host pid at /data and read /data/<pid>/root/... of other sandboxes.
    const second = job(LIST('/data'));
    await assertRefused(backend.run(second, {signal: noSignal()}), '/data', ws.path);
    assert.deepEqual(await managedContainers(`toolcell.job=${second.id}`, `toolcell.owner=${backend.owner}`), [], 'no container is left behind');
    await assertHealthy(backend);
  });

  test('a tool that swaps a nested writable source for a symlink out of the root cannot write there in the next call', async () => {
    const out = await dir('write-case/out');
    const w = await dir('write-case/out/w');
    const mounts = [{source: out, target: '/out', readOnly: false}, {source: w, target: '/w', readOnly: false}];
    const plant = await backend.run(python(`import os; os.rename("/out/w", "/out/w.old"); os.symlink(${JSON.stringify(outside.path)}, "/out/w"); print("planted")`, [], {mounts}), {signal: noSignal()});
    assert.equal(plant.stdout, 'planted\n', plant.stderr);

    await assertRefused(backend.run(python('open("/w/pwned", "w").write("x"); print("written")', [], {mounts}), {signal: noSignal()}), '/w', ws.path);
    assert.deepEqual(await readdir(outside.path), [], 'nothing was written outside the mount root');
    await assertHealthy(backend);
  });

  test('a workspace replaced on the host by a symlink to /etc after load is not mounted (cold container)', async () => {
    const workspace = await dir('host-case/ws');
    await writeFile(join(workspace, 'notes.txt'), 'mine');
    const mounts = [{source: workspace, target: '/workspace', readOnly: true}];
    const before = await backend.run(python(LIST('/workspace'), [], {mounts}), {signal: noSignal()});
    assert.equal(before.failed, false, before.stderr);
    assert.deepEqual(JSON.parse(before.stdout).list, ['notes.txt'], before.stderr);

    await rename(workspace, `${workspace}.old`);
    await symlink('/etc', workspace);
    await assertRefused(backend.run(python(LIST('/workspace'), [], {mounts}), {signal: noSignal()}), '/workspace', ws.path);
    await assertHealthy(backend);
  });

  test('the same swap is refused for warm-pool members too: no member with the redirected mount is ever handed out', async () => {
    const workspace = await dir('pool-case/ws');
    const mounts = [{source: workspace, target: '/workspace', readOnly: true}];
    await rename(workspace, `${workspace}.old`);
    await symlink('/etc', workspace);
    pooled.prewarm(python('print(1)', [], {mounts}));
    // Let the pool try to create its member (it must fail its check), then call.
    for (let i = 0; i < 100 && pooled.poolStats().creating > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(pooled.poolStats().ready, 0, 'no member passed the check');
    await assertRefused(pooled.run(python(LIST('/workspace'), [], {mounts}), {signal: noSignal()}), '/workspace', ws.path);
    for (let i = 0; i < 100 && pooled.poolStats().creating > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await managedContainers(`toolcell.owner=${pooled.owner}`), [], 'no container of the pool is left');

    // A refused member does not mark the slot broken (calls would run cold for a minute, as a
    // host attacker wants): once the source is back, the pool is warm again within seconds.
    await rm(workspace);
    await rename(`${workspace}.old`, workspace);
    for (let i = 0; i < 150 && pooled.poolStats().ready === 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(pooled.poolStats().ready, 1, 'the pool refilled after the mount was restored');
    await assertHealthy(pooled);
  });
});
