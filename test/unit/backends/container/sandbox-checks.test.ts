// prepareSandbox's own steps, with a stub engine: the leased user replaces the placeholder, a failed create gives the lease back,
// a source swapped while the engine starts the container is caught after start (no staging) or changes nothing (staging, as root).
// invariant: container:mounts:staged-as-root
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {mkdir, readFile, rename, stat, symlink, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {PassThrough} from 'node:stream';
import {after, afterEach, before, describe, test} from 'node:test';
import type Docker from 'dockerode';
import {STAGING_DIR} from '../../../../src/backends/container/mount-staging.ts';
import {prepareSandbox} from '../../../../src/backends/container/sandbox.ts';
import {UidLeases} from '../../../../src/backends/container/uid-leases.ts';
import {ToolcellError} from '../../../../src/errors.ts';
import {tempDir} from '../../../support/temp.ts';

const ID = 'c'.repeat(64);

/**
 * A stub engine: at `start()` it runs `onStart`, then bind-mounts each created Source onto its
 * Target as runc would (host paths stand for container paths: this process's root is the host's
 * /); inspect reports the binds it was created with and this process as the container's init.
 */
function stubDocker(options: {onStart?: () => Promise<void>; failCreate?: boolean} = {}) {
  const created: Docker.ContainerCreateOptions[] = [];
  const binds = () => ((created.at(-1)?.HostConfig as {Mounts?: Array<{Source: string; Target: string}>} | undefined)?.Mounts ?? []);
  const container = {
    id: ID,
    inspect: async () => ({
      Mounts: binds().map((b) => ({Type: 'bind', Source: b.Source, Destination: b.Target, RW: false})),
      HostConfig: {Mounts: binds().map((b) => ({Type: 'bind', Source: b.Source, Target: b.Target, ReadOnly: true})), Binds: null},
      State: {Running: true, Pid: process.pid},
    }),
    attach: async () => new PassThrough(),
    start: async () => {
      await options.onStart?.();
      for (const b of binds()) {
        execFileSync('mount', ['--bind', b.Source, b.Target]);
        engineMounts.push(b.Target);
      }
    },
    wait: async () => ({StatusCode: 0}),
  };
  const docker = {
    createContainer: async (o: Docker.ContainerCreateOptions) => {
      created.push(o);
      if (options.failCreate) throw Object.assign(new Error('engine refused'), {statusCode: 500});
      return container;
    },
    getContainer: () => ({inspect: async () => Promise.reject(Object.assign(new Error('no such container'), {statusCode: 404}))}),
  };
  return {docker: docker as unknown as Docker, created};
}
/** Mounts the stub engine made, detached after each test. */
const engineMounts: string[] = [];

const optionsFor = (binds: Array<{source: string; target: string}>): Docker.ContainerCreateOptions => ({
  Image: 'toolcell/python', User: '65534:65534', Labels: {'toolcell.profile': 'p'},
  HostConfig: {Mounts: binds.map((b) => ({Type: 'bind' as const, Source: b.source, Target: b.target, ReadOnly: true}))},
});

const isRoot = process.geteuid?.() === 0;
describe('prepareSandbox (stub engine)', {skip: !isRoot && 'the stub engine bind-mounts (root only)'}, () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  let leases: UidLeases;
  before(async () => {
    root = await tempDir();
    leases = new UidLeases({dir: join(root.path, 'leases'), base: 7000, count: 4});
  });
  afterEach(() => {
    for (const m of engineMounts.splice(0).reverse()) execFileSync('umount', ['-l', m]);
    leases.releaseContainer(ID); // the caller removes the container and so releases its lease
  });
  after(() => root.dispose());
  const context = (staging = false) => ({image: 'toolcell/python', runtime: 'runc', signal: new AbortController().signal, onCreated: () => undefined, leases, staging});
  /** A source directory holding a marker file, and an empty target directory. */
  async function pair(name: string): Promise<{source: string; target: string}> {
    const source = join(root.path, name);
    const target = join(root.path, `${name}-target`);
    await mkdir(source);
    await mkdir(target);
    await writeFile(join(source, 'marker'), 'checked');
    return {source, target};
  }
  /** The host's staging mounts now (mountinfo lines under the staging directory). */
  const stagingMounts = async () => (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(` ${STAGING_DIR}/`));

  test('the container runs as a leased uid:gid, not the placeholder user, and the lease is bound to it', async () => {
    const {docker, created} = stubDocker();
    const sandbox = await prepareSandbox(docker, optionsFor([]), context());
    sandbox.release();
    assert.match(String(created[0]!.User), /^700[0-3]:700[0-3]$/);
    const [uid, gid] = String(created[0]!.User).split(':');
    assert.equal(uid, gid);
    assert.deepEqual(leases.held(), [Number(uid)]);
    leases.releaseContainer(ID);
    assert.deepEqual(leases.held(), []);
  });

  test('a create the engine refuses gives the lease back at once', async () => {
    const {docker} = stubDocker({failCreate: true});
    await assert.rejects(prepareSandbox(docker, optionsFor([]), context()), ToolcellError);
    assert.deepEqual(leases.held(), []);
  });

  test('without staging: a source swapped while the engine starts the container (runc) is caught after start, naming the target', async () => {
    const {source, target} = await pair('ws');
    const {docker} = stubDocker({
      onStart: async () => {
        await rename(source, `${source}.old`);
        await mkdir(source);
      },
    });
    await assert.rejects(prepareSandbox(docker, optionsFor([{source, target}]), context()),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'mount-changed' && e.data.target === target && /stopped right after it started/.test(e.message));
  });

  test('without staging: an unchanged source passes every step', async () => {
    const {source, target} = await pair('steady');
    const {docker} = stubDocker();
    const sandbox = await prepareSandbox(docker, optionsFor([{source, target}]), context());
    sandbox.release();
    assert.equal(await readFile(join(target, 'marker'), 'utf8'), 'checked');
  });

  test('with staging: the engine is given a root-only staging path, a swap during start changes nothing, and the staging mount is gone after start', async () => {
    const {source, target} = await pair('staged');
    const {docker, created} = stubDocker({
      onStart: async () => {
        // The race of the red team, at its worst point: the engine resolves its source right after this.
        await rename(source, `${source}.old`);
        await symlink('/etc', source);
      },
    });
    const sandbox = await prepareSandbox(docker, optionsFor([{source, target}]), context(true));
    sandbox.release();
    const given = (created[0]!.HostConfig as {Mounts: Array<{Source: string}>}).Mounts[0]!.Source;
    assert.ok(given.startsWith(`${STAGING_DIR}/`), given);
    assert.equal(await readFile(join(target, 'marker'), 'utf8'), 'checked', 'the checked directory is what was mounted');
    assert.deepEqual(await stagingMounts().then((l) => l.filter((x) => x.includes(given))), []);
    await assert.rejects(stat(given), {code: 'ENOENT'});
  });

  test('with staging: a source already swapped for a symlink is refused before anything is staged or created', async () => {
    const {source, target} = await pair('swapped');
    await rename(source, `${source}.old`);
    await symlink('/etc', source);
    const {docker, created} = stubDocker();
    await assert.rejects(prepareSandbox(docker, optionsFor([{source, target}]), context(true)), (e: unknown) => e instanceof ToolcellError && e.data.reason === 'mount-changed');
    assert.equal(created.length, 0);
  });
});
