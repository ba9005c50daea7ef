// The hardened floor of every container, one row per guarantee, named for the hazard it stops.
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import type {ContainerJob} from '../../../../src/backends/backend.ts';
import {ToolcellError} from '../../../../src/errors.ts';
import {
  FSIZE_FLOOR_BYTES, MANAGED_LABEL, MQUEUE_MASK, NOFILE_LIMIT, RUNSC_EMPTY_TMP, RUNSC_PIDS_BASE, RUNSC_PIDS_PER_TASK, SANDBOX_USER,
  toCreateOptions, toHostConfig, tmpfsBytes, type ToolcellHostConfig,
} from '../../../../src/backends/container/host-config.ts';

const MiB = 2 ** 20;

function job(overrides: Partial<ContainerJob> = {}): ContainerJob {
  return {
    kind: 'container',
    id: 'job-1',
    image: 'toolcell/python',
    argv: ['/usr/bin/python3', '-c', 'print(1)'],
    limits: {timeoutMs: 10_000, memoryMb: 256, outputBytes: 65_536, cpus: 0.5, pids: 64},
    network: 'none',
    readOnlyRoot: true,
    tmpfs: {'/tmp': '64m'},
    mounts: [],
    runtime: 'runc',
    profile: 'python-offline',
    ...overrides,
  };
}

const ulimit = (hc: ToolcellHostConfig, name: string) => hc.Ulimits?.find((u) => u.Name === name);

type Row = [hazard: string, j: ContainerJob, check: (hc: ToolcellHostConfig) => void];

const rows: Row[] = [
  ['the tool cannot reach any network (no interface but loopback)', job(), (hc) => assert.equal(hc.NetworkMode, 'none')],
  ['the tool cannot write the image (root is read-only by default)', job(), (hc) => assert.equal(hc.ReadonlyRootfs, true)],
  ['the root stays read-only when the job does not say otherwise', job({readOnlyRoot: undefined as unknown as boolean}), (hc) => assert.equal(hc.ReadonlyRootfs, true)],
  ['a writable root is only given when the profile grants it', job({readOnlyRoot: false}), (hc) => assert.equal(hc.ReadonlyRootfs, false)],
  ['the tool holds no capability (CapDrop ALL, nothing added)', job(), (hc) => {
    assert.deepEqual(hc.CapDrop, ['ALL']);
    assert.deepEqual(hc.CapAdd, []);
  }],
  ['setuid binaries cannot raise privileges (no-new-privileges)', job(), (hc) => assert.ok((hc.SecurityOpt as string[]).includes('no-new-privileges'))],
  ['Docker\'s default seccomp profile is not replaced or disabled', job(), (hc) => {
    for (const opt of hc.SecurityOpt as string[]) assert.doesNotMatch(opt, /seccomp|apparmor|label/i);
  }],
  ['the container is never privileged', job(), (hc) => assert.equal(hc.Privileged, false)],
  ['swap cannot extend the memory limit (MemorySwap = Memory)', job(), (hc) => {
    assert.equal(hc.Memory, 256 * MiB);
    assert.equal(hc.MemorySwap, 256 * MiB);
  }],
  ['the OOM killer is not disabled and sandbox processes die first', job(), (hc) => {
    assert.equal(hc.OomKillDisable, false);
    assert.equal(hc.OomScoreAdj, 1000);
  }],
  ['a busy loop gets only its CPU quota (NanoCpus)', job(), (hc) => assert.equal(hc.NanoCpus, 500_000_000)],
  ['a fork bomb stops at the pids limit', job(), (hc) => assert.equal(hc.PidsLimit, 64)],
  ['under gVisor the pids limit counts the sandbox\'s host threads, still bounded', job({runtime: 'runsc'}), (hc) => {
    assert.equal(hc.PidsLimit, RUNSC_PIDS_BASE + RUNSC_PIDS_PER_TASK * 64);
    assert.equal(hc.Runtime, 'runsc');
  }],
  ['tmpfs cannot hold executables, setuid files or devices, and has a size', job(), (hc) => {
    assert.deepEqual(Object.keys(hc.Tmpfs ?? {}), ['/tmp', '/dev/mqueue']);
    const opts = hc.Tmpfs!['/tmp']!.split(',');
    for (const o of ['noexec', 'nosuid', 'nodev', 'size=64m']) assert.ok(opts.includes(o), o);
  }],
  ['no writable tmpfs is mounted that the profile does not grant', job({tmpfs: {}}), (hc) => assert.deepEqual(hc.Tmpfs, {'/dev/mqueue': MQUEUE_MASK})],
  ['/dev/mqueue is not writable (an empty read-only tmpfs over Docker\'s mode-1777 mqueue mount)', job(), (hc) => {
    assert.equal(hc.Tmpfs!['/dev/mqueue'], MQUEUE_MASK);
    assert.ok(MQUEUE_MASK.split(',').includes('ro'));
  }],
  ['no POSIX message queue can be created (RLIMIT_MSGQUEUE 0)', job(), (hc) => assert.deepEqual(ulimit(hc, 'msgqueue'), {Name: 'msgqueue', Soft: 0, Hard: 0})],
  ['under gVisor, /tmp does not become writable when the profile grants none (runsc adds its own /tmp)', job({tmpfs: {}, runtime: 'runsc'}), (hc) => {
    assert.deepEqual(hc.Tmpfs, {'/tmp': RUNSC_EMPTY_TMP, '/dev/mqueue': MQUEUE_MASK});
    assert.ok(RUNSC_EMPTY_TMP.split(',').includes('ro'));
  }],
  ['under gVisor a granted /tmp is kept as granted', job({runtime: 'runsc'}), (hc) => assert.match(hc.Tmpfs!['/tmp']!, /^rw,noexec,nosuid,nodev,size=64m/)],
  ['too many open files are refused (RLIMIT_NOFILE)', job(), (hc) => assert.deepEqual(ulimit(hc, 'nofile'), {Name: 'nofile', Soft: NOFILE_LIMIT, Hard: NOFILE_LIMIT})],
  ['one file cannot grow past the file-size limit (RLIMIT_FSIZE)', job(), (hc) => {
    assert.deepEqual(ulimit(hc, 'fsize'), {Name: 'fsize', Soft: FSIZE_FLOOR_BYTES, Hard: FSIZE_FLOOR_BYTES});
  }],
  ['the file-size limit follows a larger tmpfs', job({tmpfs: {'/tmp': '1g'}}), (hc) => assert.equal(ulimit(hc, 'fsize')?.Hard, 2 ** 30)],
  ['a crash cannot write a core dump', job(), (hc) => assert.deepEqual(ulimit(hc, 'core'), {Name: 'core', Soft: 0, Hard: 0})],
  ['zombies are reaped and signals delivered (init as PID 1)', job(), (hc) => assert.equal(hc.Init, true)],
  ['runc stays runc (the runtime is exactly the job\'s)', job(), (hc) => assert.equal(hc.Runtime, 'runc')],
  ['no shared IPC and no /dev/shm to write to', job(), (hc) => assert.equal(hc.IpcMode, 'none')],
  ['the host cgroup hierarchy is not visible', job(), (hc) => assert.equal(hc.CgroupnsMode, 'private')],
  ['output is not logged to the engine host\'s disk', job(), (hc) => assert.deepEqual(hc.LogConfig, {Type: 'none', Config: {}})],
  ['a crashed container is not restarted', job(), (hc) => assert.equal(hc.RestartPolicy?.Name, 'no')],
  ['no host directory is mounted that the profile does not grant', job(), (hc) => {
    assert.deepEqual(hc.Mounts, []);
    assert.equal(hc.Binds, undefined);
  }],
  ['a granted mount is read-only unless the profile says otherwise', job({mounts: [{source: '/srv/ws', target: '/workspace', readOnly: true}]}), (hc) => {
    assert.deepEqual(hc.Mounts, [{Type: 'bind', Source: '/srv/ws', Target: '/workspace', ReadOnly: true, BindOptions: {Propagation: 'rprivate', NonRecursive: true}}]);
  }],
  ['a mount missing readOnly is still read-only', job({mounts: [{source: '/srv/ws', target: '/workspace'} as never]}), (hc) => assert.equal(hc.Mounts![0]!.ReadOnly, true)],
  ['a read-write mount is only what the profile granted', job({mounts: [{source: '/srv/out', target: '/out', readOnly: false}]}), (hc) => assert.equal(hc.Mounts![0]!.ReadOnly, false)],
  ['a path with a colon cannot smuggle mount options (Mounts, not Binds strings)', job({mounts: [{source: '/srv/a:rw', target: '/w:rw', readOnly: true}]}), (hc) => {
    assert.equal(hc.Mounts![0]!.Source, '/srv/a:rw');
    assert.equal(hc.Mounts![0]!.ReadOnly, true);
  }],
];

describe('toHostConfig: the floor no profile can turn off', () => {
  for (const [hazard, j, check] of rows) test(hazard, () => check(toHostConfig(j)));
});

describe('toHostConfig refuses jobs no valid profile can produce', () => {
  const bad: Array<[string, ContainerJob]> = [
    ['a network other than none', job({network: 'bridge' as 'none'})],
    ['an unknown runtime', job({runtime: 'kata' as 'runc'})],
    ['a tmpfs path with mount options in it', job({tmpfs: {'/tmp,exec': '1m'}})],
    ['a tmpfs path with ..', job({tmpfs: {'/tmp/../etc': '1m'}})],
    ['a tmpfs size with options in it', job({tmpfs: {'/tmp': '1m,exec'}})],
    ['a relative mount source', job({mounts: [{source: 'ws', target: '/w', readOnly: true}]})],
    ['a relative mount target', job({mounts: [{source: '/ws', target: 'w', readOnly: true}]})],
    ['a mount target that is not canonical (the check after start compares exact mount points)', job({mounts: [{source: '/ws', target: '/w/./x/', readOnly: true}]})],
    ['the root as a mount target', job({mounts: [{source: '/ws', target: '/', readOnly: true}]})],
    ['zero memory', job({limits: {timeoutMs: 1, memoryMb: 0, outputBytes: 1, cpus: 1, pids: 1}})],
    ['NaN pids', job({limits: {timeoutMs: 1, memoryMb: 8, outputBytes: 1, cpus: 1, pids: Number.NaN}})],
  ];
  for (const [what, j] of bad) {
    test(`refuses ${what}`, () => assert.throws(() => toHostConfig(j), (e: unknown) => e instanceof ToolcellError && e.code === 'INTERNAL'));
  }
});

describe('toCreateOptions', () => {
  test('the tool runs as a non-root user', () => assert.equal(toCreateOptions(job(), {owner: 'o'}).User, SANDBOX_USER));
  // invariant: container:image:no-healthcheck
  test('the image\'s HEALTHCHECK never runs: every create disables it', () => {
    assert.deepEqual(toCreateOptions(job(), {owner: 'o'}).Healthcheck, {Test: ['NONE']});
    assert.deepEqual(toCreateOptions(job(), {owner: 'o', command: ['/bin/launcher'], pool: 'k'}).Healthcheck, {Test: ['NONE']});
  });
  test('argv is exec\'d as is: the image\'s ENTRYPOINT cannot wrap it in a shell', () => {
    const o = toCreateOptions(job({argv: ['/usr/bin/python3', '-c', '; rm -rf / $(id) `id`']}), {owner: 'o'});
    assert.deepEqual(o.Entrypoint, ['/usr/bin/python3']);
    assert.deepEqual(o.Cmd, ['-c', '; rm -rf / $(id) `id`']);
  });
  test('nothing of the host environment is passed, only the job\'s env', () => {
    process.env.TOOLCELL_UNIT_SECRET = 'hunter2';
    const o = toCreateOptions(job({env: {LANG: 'C.UTF-8'}}), {owner: 'o'});
    assert.deepEqual(o.Env, ['LANG=C.UTF-8']);
    delete process.env.TOOLCELL_UNIT_SECRET;
  });
  test('an env name that could inject another variable is refused', () => {
    assert.throws(() => toCreateOptions(job({env: {'A=B': 'x'}}), {owner: 'o'}), ToolcellError);
  });
  test('an argv element with NUL is refused', () => {
    assert.throws(() => toCreateOptions(job({argv: ['/bin/echo', 'a\0b']}), {owner: 'o'}), ToolcellError);
  });
  test('an empty argv is refused', () => assert.throws(() => toCreateOptions(job({argv: []}), {owner: 'o'}), ToolcellError));
  test('every container carries the managed label, the job, the profile and the owner', () => {
    const o = toCreateOptions(job(), {owner: 'host/1/u'});
    assert.deepEqual(o.Labels, {[MANAGED_LABEL]: 'true', 'toolcell.job': 'job-1', 'toolcell.profile': 'python-offline', 'toolcell.owner': 'host/1/u'});
  });
  test('a pool member carries the pool hash instead of a job id', () => {
    const o = toCreateOptions(job(), {owner: 'o', pool: 'abc', command: ['/bin/sh', '-c', 'x']});
    assert.equal(o.Labels?.['toolcell.job'], 'pool');
    assert.equal(o.Labels?.['toolcell.pool'], 'abc');
    assert.deepEqual(o.Entrypoint, ['/bin/sh']);
  });
  test('network is disabled at the container level too', () => assert.equal(toCreateOptions(job(), {owner: 'o'}).NetworkDisabled, true));
  test('stdin is attached once and there is no TTY', () => {
    const o = toCreateOptions(job(), {owner: 'o'});
    assert.equal(o.OpenStdin, true);
    assert.equal(o.StdinOnce, true);
    assert.equal(o.Tty, false);
  });
});

test('tmpfsBytes: k, m and g are powers of 1024', () => {
  assert.equal(tmpfsBytes('8k'), 8192);
  assert.equal(tmpfsBytes('64m'), 64 * MiB);
  assert.equal(tmpfsBytes('2g'), 2 * 2 ** 30);
  assert.throws(() => tmpfsBytes('64M'));
});
