// The warm pool's settings hash and launcher encoding (pure parts).
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import type {ContainerJob} from '../../../../src/backends/backend.ts';
import {encodeLaunch, escapeArg, exitMarkers, launcherScript, newLaunchToken, poolKey} from '../../../../src/backends/container/pool.ts';

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
  test('the launcher runs the argv as its child, then reports its status on both streams and exits with it', () => {
    assert.match(launcherScript(), /\n"\$@"\nc=\$\?\nprintf '\\036toolcell:%s\\036' "\$t"\nprintf '\\036toolcell:%s:%s\\036' "\$t" "\$c" >&2\nexit "\$c"$/);
    assert.match(launcherScript(), /case \$t in ""\|\*\[!0-9a-f\]\*\) exit 126;; esac/);
  });
  test('the launcher unsets the variables dash adds, unless the job grants them', () => {
    assert.match(launcherScript(), /unset PWD OLDPWD\n"\$@"\n/);
    assert.match(launcherScript(new Set(['PWD'])), /unset OLDPWD\n/);
    assert.doesNotMatch(launcherScript(new Set(['PWD', 'OLDPWD'])), /unset/);
  });
  test('the launcher never evaluates its input: no eval, only read/printf %b/"$@"', () => {
    assert.doesNotMatch(launcherScript(), /\beval\b|\$\(\s*\$a|source|\. /);
  });
});
