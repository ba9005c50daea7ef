// uid leases: exclusive across instances sharing a directory, released on demand (never while a removal is in progress), stale ones
// reclaimed only when safe, and a lease directory no other local user can squat.
// invariant: container:uid:one-per-sandbox
import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import {chmod, mkdir, readdir, readFile, symlink, utimes, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {defaultLeaseDir, parseLease, processStartTime, UidLeases} from '../../../../src/backends/container/uid-leases.ts';
import {ToolcellError} from '../../../../src/errors.ts';
import {tempDir} from '../../../support/temp.ts';

const unavailable = (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'uid-leases';
/** The pid of a process that has exited. */
const deadPid = () => spawnSync(process.execPath, ['-e', '0']).pid!;
const CONTAINER = 'a'.repeat(64);

describe('parseLease', () => {
  for (const [text, expected] of [
    ['12 345\n', {pid: 12, start: '345', container: undefined}],
    [`12 345 ${CONTAINER}\n`, {pid: 12, start: '345', container: CONTAINER}],
    ['', undefined], ['12\n', undefined], ['x 1\n', undefined], ['12 345 not-an-id\n', undefined],
  ] as const) {
    test(JSON.stringify(text), () => assert.deepEqual(parseLease(text), expected));
  }
  test('processStartTime of this process is stable, and undefined for a dead pid', () => {
    assert.equal(processStartTime(process.pid), processStartTime(process.pid));
    assert.match(processStartTime(process.pid)!, /^\d+$/);
    assert.equal(processStartTime(deadPid()), undefined);
  });
});

describe('UidLeases', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  let n = 0;
  const fresh = async (count = 8) => {
    const dir = join(root.path, `d${++n}`);
    return {dir, leases: new UidLeases({dir, base: 5000, count})};
  };
  before(async () => {
    root = await tempDir();
  });
  after(() => root.dispose());

  test('leases are distinct, gid = uid, within the range, and one file each', async () => {
    const {dir, leases} = await fresh();
    const got = await Promise.all(Array.from({length: 8}, () => leases.acquire()));
    const uids = got.map((l) => l.uid);
    assert.equal(new Set(uids).size, 8);
    for (const l of got) {
      assert.equal(l.gid, l.uid);
      assert.ok(l.uid >= 5000 && l.uid < 5008);
    }
    assert.deepEqual((await readdir(dir)).map(Number).sort(), [...uids].sort());
    await assert.rejects(leases.acquire(), unavailable, 'the range is exhausted');
    for (const l of got) l.release();
    assert.deepEqual(await readdir(dir), []);
    assert.deepEqual(leases.held(), []);
  });

  test('two instances sharing a directory (two processes) never hand out the same uid', async () => {
    const {dir} = await fresh(4);
    const a = new UidLeases({dir, base: 5000, count: 4});
    const b = new UidLeases({dir, base: 5000, count: 4});
    const got = [await a.acquire(), await b.acquire(), await a.acquire(), await b.acquire()];
    assert.equal(new Set(got.map((l) => l.uid)).size, 4);
    await assert.rejects(b.acquire(), unavailable);
    got[0]!.release();
    assert.equal((await b.acquire()).uid, got[0]!.uid, 'a released uid can be leased again');
  });

  test('bind records the container; releaseContainer releases exactly that lease', async () => {
    const {dir, leases} = await fresh();
    const l = await leases.acquire();
    l.bind(CONTAINER);
    assert.deepEqual(parseLease(await readFile(join(dir, String(l.uid)), 'latin1')), {pid: process.pid, start: processStartTime(process.pid), container: CONTAINER});
    leases.releaseContainer('b'.repeat(64));
    assert.deepEqual(leases.held(), [l.uid]);
    leases.releaseContainer(CONTAINER);
    assert.deepEqual(leases.held(), []);
    l.release(); // idempotent
  });

  test('a lease of a dead process is reclaimed; one whose container may still exist is not', async () => {
    const {dir} = await fresh(2);
    const dead = deadPid();
    await mkdir(dir, {recursive: true, mode: 0o700});
    await writeFile(join(dir, '5000'), `${dead} 1\n`);
    await writeFile(join(dir, '5001'), `${dead} 1 ${CONTAINER}\n`);
    const leases = new UidLeases({dir, base: 5000, count: 2});
    const first = await leases.acquire(async () => false);
    assert.equal(first.uid, 5000, 'no container recorded: reclaimed');
    await assert.rejects(leases.acquire(async () => false), unavailable, 'its container may still run as 5001');
    const second = await leases.acquire(async (id) => id === CONTAINER);
    assert.equal(second.uid, 5001, 'reclaimed once its container is gone');
  });

  test('an empty lease is left alone for a minute (its creator is writing it), then reclaimed', async () => {
    const {dir} = await fresh(1);
    await mkdir(dir, {recursive: true, mode: 0o700});
    await writeFile(join(dir, '5000'), '');
    await assert.rejects(new UidLeases({dir, base: 5000, count: 1}).acquire(), unavailable);
    const old = new Date(Date.now() - 120_000);
    await utimes(join(dir, '5000'), old, old);
    assert.equal((await new UidLeases({dir, base: 5000, count: 1}).acquire()).uid, 5000);
  });

  test('a lease of a live process (this one, another instance) is never reclaimed', async () => {
    const {dir} = await fresh(1);
    const holder = new UidLeases({dir, base: 5000, count: 1});
    await holder.acquire();
    await assert.rejects(new UidLeases({dir, base: 5000, count: 1}).acquire(async () => true), unavailable);
  });

  test('a lease directory others can write, or that is a symlink, is refused', async () => {
    const open = join(root.path, 'open');
    await mkdir(open, {mode: 0o777});
    await chmod(open, 0o777);
    await assert.rejects(new UidLeases({dir: open, base: 5000, count: 1}).acquire(), unavailable);
    const link = join(root.path, 'link');
    await mkdir(join(root.path, 'target'), {mode: 0o700});
    await symlink(join(root.path, 'target'), link);
    await assert.rejects(new UidLeases({dir: link, base: 5000, count: 1}).acquire(), unavailable);
  });

  test('a 409 "removal in progress" keeps the lease until the container is confirmed gone (404); a 404 releases at once', async () => {
    const {leases} = await fresh();
    const lease = await leases.acquire();
    lease.bind(CONTAINER);
    let answers = 0;
    const inProgress = Object.assign(new Error(`(HTTP code 409) conflict - removal of container ${CONTAINER} is already in progress`), {statusCode: 409});
    leases.releaseAfterRemoveError(CONTAINER, inProgress, async () => ++answers >= 3, 10);
    assert.deepEqual(leases.held(), [lease.uid], 'held while the container still exists');
    for (let i = 0; i < 100 && leases.held().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(leases.held(), []);
    assert.equal(answers, 3);
    const other = await leases.acquire();
    other.bind(CONTAINER);
    leases.releaseAfterRemoveError(CONTAINER, Object.assign(new Error('no such container'), {statusCode: 404}), async () => false);
    assert.deepEqual(leases.held(), []);
    const kept = await leases.acquire();
    kept.bind(CONTAINER);
    leases.releaseAfterRemoveError(CONTAINER, Object.assign(new Error('engine timeout'), {statusCode: 500}), async () => true);
    assert.deepEqual(leases.held(), [kept.uid], 'other errors keep the lease');
    kept.release();
  });
});

// Squatting: another local user creates the lease directory (or a directory on its path) first.
const isRoot = process.geteuid?.() === 0;
describe('the lease directory cannot be squatted by another local user', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    root = await tempDir();
    await chmod(root.path, 0o1777); // a shared, sticky directory like /tmp
  });
  after(() => root.dispose());

  test('without root or XDG_RUNTIME_DIR the default is under the user\'s own state directory, never the shared temp dir', () => {
    assert.equal(defaultLeaseDir({}, 1000, '/home/u'), '/home/u/.local/state/toolcell/uid-leases');
    assert.equal(defaultLeaseDir({XDG_STATE_HOME: '/home/u/st'}, 1000, '/home/u'), '/home/u/st/toolcell/uid-leases');
    assert.equal(defaultLeaseDir({XDG_RUNTIME_DIR: '/run/user/1000'}, 1000, '/home/u'), '/run/user/1000/toolcell-uid-leases');
    assert.equal(defaultLeaseDir({}, 0, '/root'), '/run/toolcell/uid-leases');
    assert.equal(defaultLeaseDir({TOOLCELL_UID_LEASE_DIR: '/x'}, 1000, '/home/u'), '/x');
  });

  test('a lease directory another user created first is refused, naming the remedy', {skip: !isRoot && 'creating a directory as another user needs root'}, async (t) => {
    const dir = join(root.path, 'squatted');
    // The squatter: a real process running as another uid creates the directory, open to all.
    const made = spawnSync('mkdir', ['-m', '0700', dir], {uid: 54321, gid: 54321});
    assert.equal(made.status, 0, String(made.stderr));
    const leases = new UidLeases({dir, base: 5000, count: 4});
    await assert.rejects(leases.acquire(), (e: unknown) => unavailable(e) && /owned by uid 54321/.test(String((e as Error).cause)) && /TOOLCELL_UID_LEASE_DIR/.test(String((e as Error).cause)));
    t.diagnostic(String((await leases.acquire().catch((e: unknown) => e) as Error).cause));
  });

  test('our own directory under a directory another user owns is refused (they could swap it)', {skip: !isRoot && 'needs root'}, async () => {
    const theirs = join(root.path, 'theirs');
    assert.equal(spawnSync('mkdir', ['-m', '0777', theirs], {uid: 54321, gid: 54321}).status, 0);
    const leases = new UidLeases({dir: join(theirs, 'mine'), base: 5000, count: 4});
    await assert.rejects(leases.acquire(), (e: unknown) => unavailable(e) && /theirs is owned by uid 54321/.test(String((e as Error).cause)));
  });

  test('a fresh directory of our own under the sticky shared directory is accepted', async () => {
    const leases = new UidLeases({dir: join(root.path, 'own/leases'), base: 5000, count: 4});
    (await leases.acquire()).release();
  });
});
