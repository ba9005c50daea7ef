// The warm pool's settings hash and launcher encoding (pure parts).
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import type {ContainerJob} from '../../../../src/backends/backend.ts';
import {RESERVED_ENV_PREFIX, encodeLaunch, escapeArg, exitMarkers, launcherFits, newLaunchToken} from '../../../../src/backends/container/launcher.ts';
import Docker from 'dockerode';
import {mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {ContainerPool, poolKey} from '../../../../src/backends/container/pool.ts';
import {DeadlineKeeper} from '../../../../src/backends/container/deadline-keeper.ts';
import {Provenance} from '../../../../src/backends/container/provenance.ts';
import {ContainerRemover} from '../../../../src/backends/container/teardown.ts';
import {ContainerEntry} from '../../../../src/policy/manifest-schema.ts';

const base: ContainerJob = {
  kind: 'container', id: 'a', image: 'toolcell/python', argv: ['/usr/bin/python3', '-c', 'print(1)'],
  limits: {timeoutMs: 1000, memoryMb: 64, outputBytes: 1024, cpus: 0.5, pids: 16},
  network: 'none', readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: [], runtime: 'runc', profile: 'p',
};

describe('poolKey: a member is only ever used for identical settings', () => {
  test('argv, stdin, job id and timeout do not change the key (they are per call)', () => {
    assert.equal(poolKey(base), poolKey({...base, id: 'b', argv: ['/bin/true'], stdin: 'x'}));
    assert.equal(poolKey(base), poolKey({...base, limits: {...base.limits, timeoutMs: 5, outputBytes: 7}}));
  });
  const differing: Array<[string, Partial<ContainerJob>]> = [
    ['image', {image: 'toolcell/shell'}],
    ['memory', {limits: {...base.limits, memoryMb: 128}}],
    ['cpus', {limits: {...base.limits, cpus: 1}}],
    ['pids', {limits: {...base.limits, pids: 32}}],
    ['runtime', {runtime: 'runsc'}],
    ['read-only root', {readOnlyRoot: false}],
    ['tmpfs', {tmpfs: {'/tmp': '16m'}}],
    ['mounts', {mounts: [{source: '/srv', target: '/w', readOnly: true}]}],
    ['mount mode', {mounts: [{source: '/srv', target: '/w', readOnly: false}]}],
    ['env', {env: {A: '1'}}],
    ['workdir', {workdir: '/tmp'}],
    ['profile', {profile: 'q'}],
  ];
  for (const [what, change] of differing) {
    test(`a different ${what} is a different key`, () => assert.notEqual(poolKey(base), poolKey({...base, ...change})));
  }
});

describe('launcher encoding', () => {
  test('backslashes and newlines are the only escaped characters', () => {
    assert.equal(escapeArg('a\\b\nc'), 'a\\\\b\\nc');
    assert.equal(escapeArg('$(id) `id` ; "\' %s \\c'), '$(id) `id` ; "\' %s \\\\c');
  });
  test('the header is the token, argc, one line per argument, then stdin verbatim', () => {
    assert.equal(encodeLaunch('ab12', ['/bin/echo', 'a\nb', ''], 'in\nput').toString(), 'ab12\n3\n/bin/echo\na\\nb\n\nin\nput');
    assert.equal(encodeLaunch('ab12', ['/bin/true']).toString(), 'ab12\n1\n/bin/true\n');
  });
  test('each call gets its own 128-bit hex token, and the reports carry it', () => {
    const a = newLaunchToken();
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.notEqual(a, newLaunchToken());
    const m = exitMarkers(a);
    assert.equal(m.stdout.toString('latin1'), `\x1etoolcell:${a}\x1e`);
    assert.equal(m.stderrPrefix.toString('latin1'), `\x1etoolcell:${a}:`);
  });
  test('only jobs the launcher runs exactly as cold may use the pool', () => {
    assert.equal(launcherFits(base, 65_536), true);
    assert.equal(launcherFits({...base, runtime: 'runsc'}, 65_536), false, 'gVisor cannot exec the unreadable launcher');
    assert.equal(launcherFits({...base, argv: ['python3', '-c', '1']}, 65_536), false, 'a bare name could be a busybox applet');
    for (const name of ['PWD', 'OLDPWD', 'SHLVL', `${RESERVED_ENV_PREFIX}T`]) {
      assert.equal(launcherFits({...base, env: {[name]: 'x'}}, 65_536), false, name);
    }
    assert.equal(launcherFits({...base, argv: ['/bin/echo', 'x'.repeat(100)]}, 64), false, 'header too large');
  });
  test('a package env may not name the launcher\'s reserved variables', () => {
    const entry = (env: Record<string, string>) => ContainerEntry.safeParse({image: 'toolcell/python', command: ['/usr/bin/python3'], env}).success;
    assert.equal(entry({t: '1', PATH: '/bin'}), true);
    assert.equal(entry({[`${RESERVED_ENV_PREFIX}T`]: '1'}), false);
  });
  test('gVisor jobs never get a pool slot (runsc cannot exec the unreadable launcher)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'toolcell-state-'));
    const docker = new Docker();
    const provenance = Provenance.of(dir);
    const pool = new ContainerPool(docker, 'o', provenance, new ContainerRemover(docker, provenance, new DeadlineKeeper()), {size: 1});
    try {
      assert.equal(pool.register({...base, runtime: 'runsc'}), undefined);
      assert.equal(await pool.acquire({...base, runtime: 'runsc'}, new AbortController().signal), undefined);
      assert.deepEqual(pool.stats(), {ready: 0, creating: 0, keys: 0, handed: 0});
    } finally {
      await pool.close();
      rmSync(dir, {recursive: true, force: true});
    }
  });
});
