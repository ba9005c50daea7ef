import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import {hostname} from 'node:os';
import {test} from 'node:test';
import {isOrphan} from '../../../../src/backends/container/reaper.ts';

/** A pid that certainly is not running: a child that already exited. */
const deadPid = () => spawnSync(process.execPath, ['-e', '0']).pid!;

test('a container whose owner process on this host is alive is not an orphan', () => {
  assert.equal(isOrphan(`${hostname()}/${process.pid}/u`), false);
});

test('a container whose owner process on this host is gone is an orphan', () => {
  assert.equal(isOrphan(`${hostname()}/${deadPid()}/u`), true);
});

test('containers of other hosts sharing the engine are never taken for orphans', () => {
  assert.equal(isOrphan(`some-other-host/${deadPid()}/u`), false);
});

test('a container without an owner label (or with a malformed one) is an orphan', () => {
  assert.equal(isOrphan(undefined), true);
  assert.equal(isOrphan(''), true);
  assert.equal(isOrphan(`${hostname()}/not-a-pid/u`), true);
});
