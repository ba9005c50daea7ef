// The use-time checks of a bind source: canonical path, no symlink anywhere on it, same object, same report from the engine.
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {mkdir, rename, stat, symlink, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {
  bindMounts, checkBindSource, checkBindSources, isCanonicalPath, makedev, parseMountInfo, pathPrefixes, refuseUngrantedMounts, verifyMountedInodes, verifyReportedMounts,
} from '../../../../src/backends/container/mount-check.ts';
import {ToolcellError} from '../../../../src/errors.ts';
import {tempDir} from '../../../support/temp.ts';

const changed = (target: string) => (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'mount-changed' && e.data.target === target;

describe('pure path checks', () => {
  for (const [path, ok] of [
    ['/srv/ws', true], ['/', true], ['srv/ws', false], ['/srv/../etc', false], ['/srv/./ws', false], ['/srv//ws', false], ['/srv/ws/', false], ['/srv\0/ws', false],
  ] as const) {
    test(`isCanonicalPath(${JSON.stringify(path)}) is ${ok}`, () => assert.equal(isCanonicalPath(path), ok));
  }
  test('pathPrefixes lists every component to check, shortest first', () => {
    assert.deepEqual(pathPrefixes('/a/b/c'), ['/a', '/a/b', '/a/b/c']);
    assert.deepEqual(pathPrefixes('/'), []);
  });
  test('bindMounts keeps only binds (tmpfs and volumes are not host paths)', () => {
    assert.deepEqual(bindMounts([{Type: 'bind', Source: '/a', Target: '/w', ReadOnly: true}, {Type: 'tmpfs', Target: '/t'}]), [{Source: '/a', Target: '/w', ReadOnly: true}]);
    assert.deepEqual(bindMounts(undefined), []);
  });
});

describe('refuseUngrantedMounts: an image VOLUME never becomes a writable path', () => {
  test('binds and tmpfs pass; a volume (or any other type) is refused naming its target, not its host path', () => {
    refuseUngrantedMounts({Mounts: [{Type: 'bind', Source: '/srv/x', Destination: '/workspace', RW: true}, {Type: 'tmpfs', Destination: '/tmp'}]});
    refuseUngrantedMounts({});
    for (const type of ['volume', 'npipe', 'image', undefined]) {
      assert.throws(() => refuseUngrantedMounts({Mounts: [{Type: type, Source: '/var/lib/docker/volumes/abc/_data', Destination: '/data', RW: true}]}, 'p'),
        (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'image-volume' && e.data.target === '/data'
          && /declares a volume at "\/data"/.test(e.message) && !e.message.includes('/var/lib/docker'));
    }
  });
});

describe('verifyReportedMounts: the engine must report exactly the checked binds', () => {
  const want = [{Source: '/srv/ws', Target: '/workspace', ReadOnly: true}];
  const info = (source = '/srv/ws', rw = false, extra: object[] = []) => ({
    Mounts: [{Type: 'bind', Source: source, Destination: '/workspace', RW: rw}, ...extra],
    HostConfig: {Mounts: [{Type: 'bind', Source: source, Target: '/workspace', ReadOnly: !rw}], Binds: null},
  });
  test('the same source, target and mode pass', () => verifyReportedMounts(info(), want));
  test('a different source is refused', () => assert.throws(() => verifyReportedMounts(info('/etc'), want), changed('/workspace')));
  test('a read-write mount where read-only was asked is refused', () => assert.throws(() => verifyReportedMounts(info('/srv/ws', true), want), changed('/workspace')));
  test('an extra bind mount is refused', () => {
    assert.throws(() => verifyReportedMounts(info('/srv/ws', false, [{Type: 'bind', Source: '/', Destination: '/host', RW: true}]), want), changed('/workspace'));
  });
  test('Binds strings are refused', () => {
    assert.throws(() => verifyReportedMounts({...info(), HostConfig: {...info().HostConfig, Binds: ['/:/host']}}, want), changed('/workspace'));
  });
});

describe('checkBindSource on real files', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    root = await tempDir();
    await mkdir(join(root.path, 'ws/data'), {recursive: true});
    await writeFile(join(root.path, 'ws/file.txt'), 'x');
    await symlink(join(root.path, 'ws'), join(root.path, 'link'));
    await symlink('/proc', join(root.path, 'ws/proc'));
    execFileSync('mkfifo', [join(root.path, 'ws/fifo')]);
  });
  after(() => root.dispose());

  test('a directory and a regular file pass, with their device and inode', async () => {
    const dir = await checkBindSource(join(root.path, 'ws/data'), '/data');
    const st = await stat(join(root.path, 'ws/data'), {bigint: true});
    assert.equal(dir.ino, st.ino);
    assert.equal(dir.dev, st.dev);
    await checkBindSource(join(root.path, 'ws/file.txt'), '/f');
  });
  test('a symlink as the last component is refused', () => assert.rejects(checkBindSource(join(root.path, 'ws/proc'), '/p'), changed('/p')));
  test('a symlink as an intermediate component is refused', () => assert.rejects(checkBindSource(join(root.path, 'link/data'), '/data'), changed('/data')));
  test('a FIFO is refused without hanging', () => assert.rejects(checkBindSource(join(root.path, 'ws/fifo'), '/q'), changed('/q')));
  test('a missing source is refused', () => assert.rejects(checkBindSource(join(root.path, 'ws/none'), '/n'), changed('/n')));
  test('a non-canonical path is refused', () => assert.rejects(checkBindSource(`${root.path}/ws/../ws/data`, '/d'), changed('/d')));
  test('the refusal names the target, never the host path (that is in the cause, for the log)', async () => {
    const err = await checkBindSource(join(root.path, 'ws/proc'), '/p', 'prof').catch((e: unknown) => e as ToolcellError);
    assert.ok(err instanceof ToolcellError);
    assert.ok(!err.message.includes(root.path));
    assert.ok(!JSON.stringify(err.data).includes(root.path));
    assert.match(String((err.cause as Error).message), /is a symlink/);
  });
  test('a source replaced by another directory between two checks is refused', async () => {
    const path = join(root.path, 'ws/swap');
    await mkdir(path);
    const first = await checkBindSources([{Source: path, Target: '/s'}]);
    await rename(path, `${path}.old`);
    await mkdir(path);
    await assert.rejects(checkBindSources([{Source: path, Target: '/s'}], undefined, first), changed('/s'));
  });
});

describe('parseMountInfo and makedev', () => {
  test('fields 3-5 are read, octal escapes decoded, malformed lines skipped', () => {
    const t = '26 1 254:0 / / rw - ext4 /dev/vda rw\n76 26 254:0 /tmp/a\\040b /mnt/x\\134y rw - ext4 /dev/vda rw\nnonsense\n';
    assert.deepEqual(parseMountInfo(t), [
      {dev: makedev(254, 0), root: '/', mountPoint: '/'},
      {dev: makedev(254, 0), root: '/tmp/a b', mountPoint: '/mnt/x\\y'},
    ]);
  });
  test('makedev matches what stat reports for / (glibc encoding)', async () => {
    const table = parseMountInfo(execFileSync('cat', ['/proc/self/mountinfo'], {encoding: 'utf8'}));
    const root = table.findLast((e) => e.mountPoint === '/')!;
    assert.equal(root.dev, (await stat('/', {bigint: true})).dev);
  });
});

// A real bind mount in this process's mount namespace stands for the container's (root only).
const isRoot = process.geteuid?.() === 0;
describe('verifyMountedInodes (the mount table of /proc/<pid>)', {skip: !isRoot && 'bind mounts need root'}, () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  const mounted: string[] = [];
  const bind = (from: string, to: string) => {
    execFileSync('mount', ['--bind', from, to]);
    mounted.push(to);
  };
  before(async () => {
    root = await tempDir();
    for (const d of ['a', 'b', 'c', 'd', 'e', 'link-holder']) await mkdir(join(root.path, d));
    bind(join(root.path, 'a'), join(root.path, 'b'));
    bind(join(root.path, 'd'), join(root.path, 'e'));
    await symlink(join(root.path, 'b'), join(root.path, 'link-holder/l'));
  });
  after(async () => {
    for (const m of mounted.reverse()) execFileSync('umount', ['-l', m]);
    await root.dispose();
  });
  test('the checked object mounted at the target passes', async () => {
    const a = await checkBindSource(join(root.path, 'a'), join(root.path, 'b'));
    assert.equal(await verifyMountedInodes(process.pid, [a]), true);
  });
  test('a target where nothing is mounted is refused (a mount a symlink sent elsewhere)', async () => {
    const a = await checkBindSource(join(root.path, 'a'), join(root.path, 'c'));
    await assert.rejects(verifyMountedInodes(process.pid, [a]), changed(join(root.path, 'c')));
  });
  test('a target reached through a symlink is refused even though the object there is the checked one', async () => {
    const a = await checkBindSource(join(root.path, 'a'), join(root.path, 'link-holder/l'));
    await assert.rejects(verifyMountedInodes(process.pid, [a]), changed(join(root.path, 'link-holder/l')));
  });
  test('another directory mounted at the target is refused', async () => {
    const a = await checkBindSource(join(root.path, 'a'), join(root.path, 'e'));
    await assert.rejects(verifyMountedInodes(process.pid, [a]), changed(join(root.path, 'e')));
  });
  test('the same path holding another directory (swapped) is refused by inode', async () => {
    const a = await checkBindSource(join(root.path, 'a'), join(root.path, 'b'));
    await assert.rejects(verifyMountedInodes(process.pid, [{...a, ino: a.ino + 1n}]), changed(join(root.path, 'b')));
  });
  test('a process that is gone is not checked (false), not refused', async () => {
    const a = await checkBindSource(join(root.path, 'a'), '/x');
    assert.equal(await verifyMountedInodes(0, [a]), false);
  });
});
