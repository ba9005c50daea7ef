// Finding orphaned containerd shims (design/MACHINE.md: a failed runsc start leaves its shim and
// sandbox processes running although the engine lists no container), on a fake /proc.
import assert from 'node:assert/strict';
import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, test} from 'node:test';
import {findOrphanShims, killStuckRuntime} from '../../../../src/backends/container/shims.ts';

const root = mkdtempSync(join(tmpdir(), 'toolcell-fakeproc-'));
after(() => rmSync(root, {recursive: true, force: true}));

const GONE = 'a'.repeat(64);
const LIVE = 'b'.repeat(64);
const YOUNG = 'c'.repeat(64);

function proc(pid: number, argv: string[], startTicks = 100): void {
  mkdirSync(join(root, String(pid)));
  writeFileSync(join(root, String(pid), 'cmdline'), `${argv.join('\0')}\0`);
  // /proc/PID/stat: field 22 (index 19 after the comm) is the start time in clock ticks.
  writeFileSync(join(root, String(pid), 'stat'), `${pid} (x) S ${Array.from({length: 18}, () => '0').join(' ')} ${startTicks} 0 0`);
}
writeFileSync(join(root, 'uptime'), '1000.00 500.00');
const shim = (id: string) => ['/usr/bin/containerd-shim-runc-v2', '-namespace', 'moby', '-id', id, '-address', '/run/containerd.sock'];
proc(10, shim(GONE));
proc(11, ['runsc-gofer', '--root=/var/run/docker/runtime-runc/moby', `--log=/x/${GONE}/log.json`, 'gofer']);
proc(12, ['runsc-sandbox', '--root=/var/run/docker/runtime-runc/moby', `--log=/x/${GONE}/log.json`, 'boot']);
proc(13, ['/bin/sh', '/var/lib/docker/runtimes/runsc', '--root', '/var/run/docker/runtime-runc/moby', 'start', GONE]);
proc(14, ['/usr/bin/tail', '-f', `/var/lib/docker/containers/${GONE}/log`]); // not a runtime process: never touched
proc(20, shim(LIVE));
proc(21, ['runsc-sandbox', `--log=/x/${LIVE}/log.json`]);
proc(30, shim(YOUNG), 100_000 - 10); // started 0.1 s ago
proc(40, ['/usr/bin/containerd-shim-runc-v2', '-namespace', 'other', '-id', GONE]);

const engine = {listContainers: async () => [{Id: LIVE}] as never};

test('a shim whose container the engine no longer lists is an orphan, with its runsc processes', async () => {
  const orphans = await findOrphanShims(engine, {procRoot: root, minAgeMs: 1_000});
  assert.deepEqual(orphans, [{id: GONE, pid: 10, children: [11, 12, 13], runscRoot: '/var/run/docker/runtime-runc/moby'}]);
});

test('shims of listed containers, of other namespaces, and very young ones are left alone', async () => {
  const ids = (await findOrphanShims(engine, {procRoot: root, minAgeMs: 1_000})).map((o) => o.id);
  assert.ok(!ids.includes(LIVE));
  assert.ok(!ids.includes(YOUNG));
  assert.deepEqual((await findOrphanShims(engine, {procRoot: root, minAgeMs: 0})).map((o) => o.id).sort(), [GONE, YOUNG]);
});

test('with ids, only those containers are considered, whatever their age', async () => {
  assert.deepEqual((await findOrphanShims(engine, {procRoot: root, ids: [YOUNG]})).map((o) => o.id), [YOUNG]);
  assert.deepEqual(await findOrphanShims(engine, {procRoot: root, ids: []}), []);
});

test('killStuckRuntime picks the runtime processes of one container, never its shim or other programs', async () => {
  assert.deepEqual(await killStuckRuntime(GONE, {procRoot: root}), [11, 12, 13]);
  assert.deepEqual(await killStuckRuntime('not-an-id', {procRoot: root}), []);
});
