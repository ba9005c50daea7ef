// A dir: source is copied exactly as it was resolved: links leaving the folder are refused, and a file changed or a link swapped after resolving is caught before the build.
import assert from 'node:assert/strict';
import {symlinkSync, unlinkSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import type Docker from 'dockerode';
import {ConfigError, ToolcellError} from '../../../src/errors.ts';
import {resolveSource} from '../../../src/hosted/resolve-source.ts';
import {buildServerImage} from '../../../src/hosted/server-image.ts';
import {tempDir} from '../../support/temp.ts';

// invariant: hosted:add:dir-copied-as-resolved

let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir();
  await dir.write('server/main.js', 'console.log(1)');
  await dir.write('server/lib/util.js', 'export {}');
  await dir.write('secret/id_rsa', 'PRIVATE KEY');
  symlinkSync('lib/util.js', join(dir.path, 'server', 'link.js'));
});
after(() => dir?.dispose());

/** An engine that must never be reached: the checks come first. */
const noDocker = new Proxy({}, {get: () => { throw new Error('the engine was reached'); }}) as unknown as Docker;

test('the folder hash covers paths, modes and contents; links inside are followed', async () => {
  const a = await resolveSource({type: 'dir', path: join(dir.path, 'server')});
  const b = await resolveSource({type: 'dir', path: join(dir.path, 'server')});
  assert.equal(a.integrity, b.integrity);
  assert.match(a.version, /^dir-[0-9a-f]{12}$/);
});

test('a file changed after resolving is refused before the build', async () => {
  const resolved = await resolveSource({type: 'dir', path: join(dir.path, 'server')});
  writeFileSync(join(dir.path, 'server', 'main.js'), 'console.log(2)');
  await assert.rejects(buildServerImage(resolved, {name: 'x', source: 'dir:x', docker: noDocker}),
    (e: unknown) => e instanceof ToolcellError && /changed while it was being added/.test(e.message));
});

test('a link swapped after resolving to point outside the folder is refused; so is one there from the start', async () => {
  const resolved = await resolveSource({type: 'dir', path: join(dir.path, 'server')});
  unlinkSync(join(dir.path, 'server', 'link.js'));
  symlinkSync(join(dir.path, 'secret', 'id_rsa'), join(dir.path, 'server', 'link.js'));
  await assert.rejects(buildServerImage(resolved, {name: 'x', source: 'dir:x', docker: noDocker}),
    (e: unknown) => e instanceof ConfigError && /link.js is a symbolic link that leaves the folder/.test(e.message));
  await assert.rejects(resolveSource({type: 'dir', path: join(dir.path, 'server')}), /leaves the folder/);
});
