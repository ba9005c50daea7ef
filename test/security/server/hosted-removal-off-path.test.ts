// Hazard: taking a hosted server's container removal off the call's path (the result returns as soon as
// the server answered) could let a server whose profile grants a writable mount keep acting on the host
// after its result returned, let removals pile up without bound on a shared engine, or leave containers
// behind at shutdown. Removal is made slow on purpose here (every engine remove waits REMOVE_DELAY_MS),
// so the deferral, the bound and the drain at close are observed, not raced.
// invariant: server:removal:off-call-path
import assert from 'node:assert/strict';
import {chmod, mkdir, stat} from 'node:fs/promises';
import {after, before, describe, test} from 'node:test';
import Docker from 'dockerode';
import type {ExecutionResult, ServerJob} from '../../../src/backends/backend.ts';
import {ServerBackend} from '../../../src/backends/server/server-backend.ts';
import {docker, dockerAvailable, managedContainers} from '../../support/docker.ts';
import {fixtureSandbox, useFixtureServerImage} from '../../support/fixture-server.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const RO_PROFILE = `test-rmoff-ro-${process.pid}`;
const RW_PROFILE = `test-rmoff-rw-${process.pid}`;
/** Every container removal of this test process waits this long first, in ms. */
const REMOVE_DELAY_MS = 2_500;
const MAX_PENDING = 2;

// Slow removals, counted: the most removals in flight at once, in this process.
const proto = (Docker as unknown as {Container: {prototype: {remove: (...a: unknown[]) => Promise<unknown>}}}).Container.prototype;
const originalRemove = proto.remove;
let inFlight = 0;
let maxInFlight = 0;
proto.remove = async function (this: unknown, ...args: unknown[]) {
  inFlight++;
  maxInFlight = Math.max(maxInFlight, inFlight);
  try {
    await new Promise((r) => setTimeout(r, REMOVE_DELAY_MS));
    return await originalRemove.apply(this, args);
  } finally {
    inFlight--;
  }
};

const textOf = (r: ExecutionResult) => {
  assert.equal(r.failed, false, JSON.stringify(r));
  const result = JSON.parse(r.stdout) as {content: Array<{text?: string}>};
  return result.content.map((c) => c.text ?? '').join('');
};
const sizeOf = (path: string) => stat(path).then((s) => s.size, () => 0);

describe('hosted servers: removal after the result, bounded, drained at close', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let backend: ServerBackend | undefined;
  let seq = 0;
  const job = (tool: string, args: Record<string, unknown>, overrides: Parameters<typeof fixtureSandbox>[3] = {}, extra: Partial<ServerJob> = {}): ServerJob => {
    const sandbox = fixtureSandbox(image.imageId(), 'good', [], {profile: RO_PROFILE, ...overrides});
    return {kind: 'server', id: `rmoff-${process.pid}-${++seq}`, sandbox, tool, args, verifyListing: () => ({ok: true}), limits: sandbox.limits,
      packageName: 'fixture', ...extra};
  };
  const run = (j: ServerJob) => backend!.run(j, {signal: AbortSignal.timeout(60_000)});

  before(async () => {
    dir = await tempDir();
    await mkdir(`${dir.path}/out`, {recursive: true});
    await chmod(`${dir.path}/out`, 0o777); // the server runs as a uid leased for it, not root
    backend = new ServerBackend({handshakeTimeoutMs: 20_000, maxPendingRemovals: MAX_PENDING});
  });
  after(async () => {
    await backend?.close();
    proto.remove = originalRemove;
    await dir?.dispose();
  });

  test('a read-only server\'s result returns before its removal; at most maxPendingRemovals are in flight (the next call waits); close() leaves nothing', async () => {
    const b = backend!;
    assert.equal(textOf(await run(job('echo', {message: 'one'}))), 'one');
    // The removal (slowed to 2.5 s) is still under way: the result did not wait for it.
    assert.equal(b.poolStats().removing, 1);
    assert.equal(textOf(await run(job('echo', {message: 'two'}))), 'two');
    for (let i = 0; i < 3; i++) {
      assert.equal(textOf(await run(job('echo', {message: `more${i}`}))), `more${i}`);
      assert.ok(b.poolStats().removing <= MAX_PENDING, JSON.stringify(b.poolStats()));
    }
    assert.ok(maxInFlight <= MAX_PENDING, `removals in flight at once: ${maxInFlight}`);
    assert.ok(maxInFlight >= 1);
    // A sixth call still works.
    assert.equal(textOf(await run(job('echo', {message: 'six'}))), 'six');
  });

  test('a server whose profile grants a read-write mount is stopped before its result returns: nothing it does after answering reaches the host', async () => {
    const mounts = [{source: `${dir.path}/out`, target: '/workspace', readOnly: false}];
    const r = await run(job('linger', {path: '/workspace/after'}, {profile: RW_PROFILE, mounts}));
    assert.equal(textOf(r), 'lingering');
    // Right after the result: the container is not running (its removal may still be pending).
    for (const id of await managedContainers(`toolcell.profile=${RW_PROFILE}`)) {
      const info = await docker.getContainer(id).inspect().catch(() => undefined);
      assert.notEqual(info?.State.Running, true, 'the read-write server still runs after its result returned');
    }
    const size = await sizeOf(`${dir.path}/out/after`);
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(await sizeOf(`${dir.path}/out/after`), size, 'the server wrote to the host after its result returned');

    // Control: the same server kept alive for a principal (lifetime "principal") does keep writing, so the check above means something.
    const kept = await run(job('linger', {path: '/workspace/kept'}, {profile: RW_PROFILE, mounts}, {affinity: {key: 'control', idleMs: 30_000}}));
    assert.equal(textOf(kept), 'lingering');
    const k0 = await sizeOf(`${dir.path}/out/kept`);
    await new Promise((r) => setTimeout(r, 1_000));
    assert.ok((await sizeOf(`${dir.path}/out/kept`)) > k0, 'the control server did not write');
  });

  test('close() awaits every pending removal and the kept sandbox: no container of this test is left', async () => {
    await backend!.close();
    backend = undefined;
    assert.deepEqual(await managedContainers(`toolcell.profile=${RO_PROFILE}`), []);
    assert.deepEqual(await managedContainers(`toolcell.profile=${RW_PROFILE}`), []);
  });
});
