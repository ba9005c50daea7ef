// resolveCommands (allowlist names → absolute paths in the image), probeDocker (what doctor
// reports) and buildImages (sandboxes/ → images), on a real engine.
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import Docker from 'dockerode';
import {IMAGES, SANDBOXES_DIR, buildImages} from '../../../src/backends/container/images.ts';
import {probeDocker} from '../../../src/backends/container/probe.ts';
import {resolveCommands} from '../../../src/backends/container/resolve-commands.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {docker, dockerAvailable, managedContainers} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/base', 'toolcell/python', 'toolcell/shell']});

describe('resolveCommands', {skip: !ok && 'no Docker engine'}, () => {
  test('allowlisted names resolve to absolute paths inside the image; missing names are absent', async () => {
    const names = ['ls', 'cat', 'head', 'tail', 'wc', 'sort', 'uniq', 'grep', 'sed', 'jq', 'rg', '/usr/bin/jq', 'no-such-tool', '/usr/bin/no-such-tool', '/etc/passwd'];
    const map = await resolveCommands(docker, 'toolcell/shell', names);
    for (const n of ['ls', 'cat', 'head', 'tail', 'wc', 'sort', 'uniq', 'grep', 'sed', 'jq', 'rg']) assert.equal(map.get(n), `/usr/bin/${n}`, n);
    assert.equal(map.get('/usr/bin/jq'), '/usr/bin/jq');
    assert.equal(map.has('no-such-tool'), false);
    assert.equal(map.has('/usr/bin/no-such-tool'), false);
    assert.equal(map.has('/etc/passwd'), false, 'not executable');
    assert.deepEqual(await resolveCommands(docker, 'toolcell/python', ['python3']), new Map([['python3', '/usr/bin/python3']]));
    assert.deepEqual(await managedContainers('toolcell.profile=toolcell-resolve-commands'), []);
  });

  test('a name that is a shell builtin resolves to the program, not the builtin', async () => {
    const map = await resolveCommands(docker, 'toolcell/shell', ['echo', 'printf', 'test']);
    assert.equal(map.get('echo'), '/usr/bin/echo');
    assert.equal(map.get('printf'), '/usr/bin/printf');
  });

  test('a name with shell syntax is refused before any container runs', async () => {
    await assert.rejects(resolveCommands(docker, 'toolcell/shell', ['ls; id']), ToolcellError);
    await assert.rejects(resolveCommands(docker, 'toolcell/shell', ['../bin/ls']), ToolcellError);
  });

  test('a missing image is BACKEND_UNAVAILABLE naming it', async () => {
    await assert.rejects(resolveCommands(docker, 'toolcell/absent', ['ls']), (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && /toolcell\/absent/.test(e.message));
  });
});

describe('probeDocker', {skip: !ok && 'no Docker engine'}, () => {
  test('with Docker: reachable, runtimes, cgroup version, images, and limits really in force', async () => {
    const p = await probeDocker();
    assert.equal(p.reachable, true);
    assert.ok(p.runtimes.includes('runc'));
    assert.equal(p.runsc, p.runtimes.includes('runsc'));
    assert.match(p.cgroupVersion ?? '', /^[12]$/);
    assert.deepEqual(p.images, {'toolcell/base': true, 'toolcell/python': true, 'toolcell/shell': true, 'toolcell/node': true});
    assert.equal(p.limitsEffective, true, JSON.stringify(p));
    assert.equal(p.limitsSeen?.memoryBytes, 32 * 2 ** 20);
    assert.equal(p.limitsSeen?.pidsMax, 16);
    if (p.runsc) assert.equal(p.runscWorks, true);
    const info = await docker.info() as {Runtimes: Record<string, unknown>};
    assert.deepEqual(p.runtimes, Object.keys(info.Runtimes).sort());
  });

  test('without Docker: not reachable, with the reason, and never a throw', async () => {
    const p = await probeDocker({docker: new Docker({socketPath: '/nonexistent/docker.sock'})});
    assert.equal(p.reachable, false);
    assert.match(p.reason ?? '', /no Docker engine answers/);
    assert.equal(p.runsc, false);
    assert.deepEqual(Object.values(p.images), IMAGES.map(() => false));
  });

  test('an image asked for that is absent is reported absent', async () => {
    const p = await probeDocker({images: ['toolcell/absent'], runContainers: false});
    assert.equal(p.images['toolcell/absent'], false);
    assert.equal(p.limitsEffective, undefined);
  });
});

describe('buildImages', {skip: !ok && 'no Docker engine'}, () => {
  test('IMAGES names every folder of sandboxes/ with its tag and base', () => {
    assert.deepEqual(IMAGES.map((i) => [i.name, i.tag, i.kind]), [
      ['base', 'toolcell/base', 'rootfs'], ['python', 'toolcell/python', 'dockerfile'], ['shell', 'toolcell/shell', 'dockerfile'],
      ['node', 'toolcell/node', 'dockerfile'],
    ]);
    assert.match(SANDBOXES_DIR, /sandboxes\/$/);
  });

  test('an unknown image name is refused with the known names', async () => {
    await assert.rejects(buildImages(['nope']), (e: unknown) => e instanceof ToolcellError && e.code === 'INVALID_ARGUMENTS' && /base, python, shell, node/.test(e.message));
  });

  test('building an image streams progress lines and tags it (layer cache makes a rebuild quick)', async () => {
    const lines: string[] = [];
    await buildImages(['shell'], (l) => lines.push(l));
    assert.ok(lines.some((l) => /^shell: Step \d+\/\d+ : FROM \$\{BASE\}/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /^shell: Successfully tagged toolcell\/shell/.test(l)), lines.join('\n'));
    assert.ok(lines.every((l) => l.startsWith('shell: ')));
    const img = await docker.getImage('toolcell/shell').inspect();
    assert.equal(img.Config.User, '65534:65534', 'the image runs as a non-root user');
  });

  test('a failing build is BACKEND_UNAVAILABLE naming the image', async () => {
    await assert.rejects(buildImages(['python'], () => undefined, {base: 'toolcell/definitely-absent-base'}),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && /toolcell\/python/.test(e.message));
  });
});
