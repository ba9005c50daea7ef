// prepareSandbox's own steps, with a stub engine: the leased user replaces the placeholder, a failed create gives the lease back,
// and a source swapped while the engine starts the container (the race left after the last path check) is caught after start.
import assert from 'node:assert/strict';
import {mkdir, rename} from 'node:fs/promises';
import {join} from 'node:path';
import {PassThrough} from 'node:stream';
import {after, before, describe, test} from 'node:test';
import type Docker from 'dockerode';
import {prepareSandbox} from '../../../../src/backends/container/sandbox.ts';
import {UidLeases} from '../../../../src/backends/container/uid-leases.ts';
import {ToolcellError} from '../../../../src/errors.ts';
import {tempDir} from '../../../support/temp.ts';

const ID = 'c'.repeat(64);

/** A stub engine: `onStart` runs inside `start()`; inspect reports the given binds and this process as the container's init. */
function stubDocker(binds: Array<{source: string; target: string}>, options: {onStart?: () => Promise<void>; failCreate?: boolean} = {}) {
  const created: Docker.ContainerCreateOptions[] = [];
  const container = {
    id: ID,
    inspect: async () => ({
      Mounts: binds.map((b) => ({Type: 'bind', Source: b.source, Destination: b.target, RW: false})),
      HostConfig: {Mounts: binds.map((b) => ({Type: 'bind', Source: b.source, Target: b.target, ReadOnly: true})), Binds: null},
      // This process's root is the host's /, so /proc/<pid>/root/<target> is the target's host path.
      State: {Running: true, Pid: process.pid},
    }),
    attach: async () => new PassThrough(),
    start: async () => options.onStart?.(),
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

const optionsFor = (binds: Array<{source: string; target: string}>): Docker.ContainerCreateOptions => ({
  Image: 'toolcell/python', User: '65534:65534', Labels: {'toolcell.profile': 'p'},
  HostConfig: {Mounts: binds.map((b) => ({Type: 'bind' as const, Source: b.source, Target: b.target, ReadOnly: true}))},
});

describe('prepareSandbox (stub engine)', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  let leases: UidLeases;
  before(async () => {
    root = await tempDir();
    leases = new UidLeases({dir: join(root.path, 'leases'), base: 7000, count: 4});
  });
  after(() => root.dispose());
  const context = () => ({image: 'toolcell/python', runtime: 'runc', signal: new AbortController().signal, onCreated: () => undefined, leases});

  test('the container runs as a leased uid:gid, not the placeholder user, and the lease is bound to it', async () => {
    const {docker, created} = stubDocker([]);
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
    const {docker} = stubDocker([], {failCreate: true});
    await assert.rejects(prepareSandbox(docker, optionsFor([]), context()), ToolcellError);
    assert.deepEqual(leases.held(), []);
  });

  test('a source swapped while the engine starts the container (runc) is caught after start, naming the target', async () => {
    const dir = join(root.path, 'ws');
    await mkdir(dir);
    const binds = [{source: dir, target: dir}];
    const {docker} = stubDocker(binds, {
      onStart: async () => {
        await rename(dir, `${dir}.old`);
        await mkdir(dir);
      },
    });
    await assert.rejects(prepareSandbox(docker, optionsFor(binds), context()),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'mount-changed' && e.data.target === dir);
    leases.releaseContainer(ID); // the caller removes the container and so releases its lease
  });

  test('an unchanged source passes every step', async () => {
    const dir = join(root.path, 'steady');
    await mkdir(dir);
    const binds = [{source: dir, target: dir}];
    const {docker} = stubDocker(binds);
    const sandbox = await prepareSandbox(docker, optionsFor(binds), context());
    sandbox.release();
    leases.releaseContainer(ID);
  });
});
