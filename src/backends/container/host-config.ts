// Profile → Docker create options as pure functions: the hardened floor every container gets.
import type Docker from 'dockerode';
import {ToolcellError} from '../../errors.ts';
import type {ContainerJob} from '../backend.ts';
import {EGRESS_RELAY_PORT} from '../../egress/relay.ts';
import {isCanonicalPath} from './mount-check.ts';

/**
 * Profile → Docker settings, as pure functions (no I/O), so that every guarantee of the
 * container tier can be table-tested (test/unit/backends/container/host-config.test.ts).
 *
 * The floor below is applied to every container and no job field can turn it off:
 * no network (`NetworkMode: none`, `NetworkDisabled`), every capability dropped,
 * `no-new-privileges`, Docker's default seccomp profile (nothing is passed that would
 * replace or disable it), a non-root user, swap = memory, a CPU quota, a pids limit,
 * tmpfs mounted `noexec,nosuid,nodev` with a size, ulimits (open files, file size, no core
 * dumps), no IPC namespace sharing and no `/dev/shm`, an init process as PID 1, no log
 * files on the engine host, and our labels on the container.
 * Source: Docker Engine API v1.41, `POST /containers/create` (HostConfig).
 */

/** Label on every container toolcell creates; the reaper removes what carries it. */
export const MANAGED_LABEL = 'toolcell.managed';
/** Label with the job id of a cold container (`pool` for a warm-pool member). */
export const JOB_LABEL = 'toolcell.job';
/** Label with the profile name. */
export const PROFILE_LABEL = 'toolcell.profile';
/** Label with the id of the backend instance that created the container (see reaper.ts). */
export const OWNER_LABEL = 'toolcell.owner';
/** Label with the settings hash of a warm-pool member (see pool.ts). */
export const POOL_LABEL = 'toolcell.pool';

/**
 * uid:gid in the create options built here (`nobody:nogroup`), never root. It is a placeholder:
 * `prepareSandbox` replaces it with a uid:gid leased for that one container (uid-leases.ts),
 * so that the warm pool's settings hash (`poolKey`) does not change with the uid.
 */
export const SANDBOX_USER = '65534:65534';
/** RLIMIT_NOFILE (soft = hard): open file descriptors per process. */
export const NOFILE_LIMIT = 1024;
/** RLIMIT_FSIZE floor in bytes (64 MiB); raised to the largest tmpfs size when that is larger. */
export const FSIZE_FLOOR_BYTES = 64 * 2 ** 20;
/**
 * gVisor only: host threads the runsc sandbox needs before the tool runs (measured: about 38
 * idle with Debian's runsc 2022-12, ptrace platform), and per process inside the sandbox
 * (measured: about 7). Under runsc `PidsLimit` bounds the sandbox's *host* threads, so it is
 * `RUNSC_PIDS_BASE + RUNSC_PIDS_PER_TASK * pids`; a tool that forks past it crashes its own
 * sandbox (the call fails, the host is unaffected). A plain `pids` of 32 does not even let
 * runsc start (seen here: "urpc method containerManager.StartRoot failed: EOF", or a hang).
 */
export const RUNSC_PIDS_BASE = 64;
export const RUNSC_PIDS_PER_TASK = 8;

/** Mounted at /tmp under runsc when the profile grants no /tmp: empty, read-only, tiny. */
export const RUNSC_EMPTY_TMP = 'ro,noexec,nosuid,nodev,size=4k,mode=755';

/**
 * Mounted over `/dev/mqueue` (where Docker mounts the IPC namespace's writable POSIX message
 * queue filesystem, mode 1777) unless a profile grants a tmpfs there itself: empty, read-only.
 */
export const MQUEUE_MASK = 'ro,noexec,nosuid,nodev,size=4k,mode=555';

const MB = 2 ** 20;
const TMPFS_PATH = /^\/[A-Za-z0-9._/-]*$/;
const TMPFS_SIZE = /^([1-9][0-9]*)([kmg])$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `HostConfig` fields of API 1.41 that @types/dockerode does not declare. */
export interface ToolcellHostConfig extends Docker.HostConfig {
  /** `private`: the container sees its own cgroup as `/` and not the host's hierarchy. */
  CgroupnsMode?: 'private' | 'host';
  Mounts?: Array<Docker.MountSettings & {BindOptions?: {Propagation: Docker.MountPropagation; NonRecursive?: boolean}}>;
}

function invalid(message: string): ToolcellError {
  // A job reaching here has passed the profile schema; a failure is a bug upstream, not the client's fault.
  return new ToolcellError('INTERNAL', 'The sandbox settings are invalid.', {}, {cause: new Error(message)});
}

/** Bytes of a tmpfs size such as `64m` (k, m, g are powers of 1024). */
export function tmpfsBytes(size: string): number {
  const m = TMPFS_SIZE.exec(size);
  if (!m) throw invalid(`tmpfs size ${JSON.stringify(size)} is not like 64m`);
  return Number(m[1]) * {k: 2 ** 10, m: 2 ** 20, g: 2 ** 30}[m[2] as 'k' | 'm' | 'g'];
}

/** The host `PidsLimit` for a job: `limits.pids` under runc, scaled for gVisor's host threads under runsc. */
export function hostPidsLimit(job: Pick<ContainerJob, 'limits' | 'runtime'>): number {
  return job.runtime === 'runsc' ? RUNSC_PIDS_BASE + RUNSC_PIDS_PER_TASK * job.limits.pids : job.limits.pids;
}

/**
 * The HostConfig of a job's container: the hardened floor plus the job's limits and grants.
 *
 * - `Memory` = `MemorySwap` = `limits.memoryMb` × 2^20 bytes (no swap); the kernel's OOM
 *   killer ends the container at the limit (reported as `outOfMemory`). `OomScoreAdj` 1000
 *   makes sandbox processes the host's first OOM victims.
 * - `NanoCpus` = `limits.cpus` × 10^9 (a CFS quota; not a CPU-time budget).
 * - `PidsLimit`: see {@link hostPidsLimit}. Under runc the init process counts as one pid.
 * - tmpfs: each `job.tmpfs` entry mounted `rw,noexec,nosuid,nodev,size=…,mode=1777`; its
 *   pages count against the memory limit. Under runsc without a granted `/tmp`, an empty
 *   read-only tmpfs is mounted there ({@link RUNSC_EMPTY_TMP}): runsc would otherwise add
 *   its own writable `/tmp`. `/dev/mqueue` gets an empty read-only tmpfs
 *   ({@link MQUEUE_MASK}) and RLIMIT_MSGQUEUE is 0, so no message queue can be created
 *   (under runc; gVisor ignores that rlimit and keeps queues in the sandbox's memory).
 * - mounts: `Mounts` of type bind (not `Binds` strings: no `:` parsing, and a missing source
 *   is an error instead of being created on the host), read-only unless `readOnly: false`,
 *   non-recursive (mounts below the source are not exposed), private propagation.
 * - `Runtime` is exactly `job.runtime`; the backend refuses runsc where the engine lacks it.
 * Does NOT guarantee: disk quotas on read-write mounts (RLIMIT_FSIZE caps one file, not the
 * number of files), or limits on the engine host's own resources used by the engine.
 * @throws ToolcellError `INTERNAL` for a job that no valid profile can produce (bad tmpfs
 *   path/size, relative mount sources, mount targets that are not canonical absolute paths,
 *   non-positive limits, unknown runtime or network).
 */
export function toHostConfig(job: ContainerJob): ToolcellHostConfig {
  const {limits} = job;
  for (const [name, value] of Object.entries({memoryMb: limits.memoryMb, cpus: limits.cpus, pids: limits.pids})) {
    if (!(typeof value === 'number' && Number.isFinite(value) && value > 0)) throw invalid(`limits.${name} must be positive`);
  }
  // An egress grant keeps NetworkMode none: the only way out is the relay to the proxy (egress/relay.ts).
  if (job.network !== 'none' && !(typeof job.network === 'object' && job.network !== null && 'egress' in job.network)) {
    throw invalid(`network ${String(job.network)} is not granted by any profile`);
  }
  if (job.runtime !== 'runc' && job.runtime !== 'runsc') throw invalid(`runtime ${String(job.runtime)} is unknown`);

  const memory = Math.floor(limits.memoryMb * MB);
  const tmpfs: Record<string, string> = {};
  let largestTmpfs = 0;
  for (const [path, size] of Object.entries(job.tmpfs ?? {})) {
    if (!TMPFS_PATH.test(path) || path.split('/').includes('..')) throw invalid(`tmpfs path ${JSON.stringify(path)} is not absolute`);
    largestTmpfs = Math.max(largestTmpfs, tmpfsBytes(size));
    tmpfs[path] = `rw,noexec,nosuid,nodev,size=${size},mode=1777`;
  }
  if (job.runtime === 'runsc' && !Object.hasOwn(tmpfs, '/tmp')) {
    // runsc mounts its own writable, exec-allowed, unsized tmpfs at /tmp when the container has
    // none (seen with Debian's runsc 2022-12); an empty read-only one keeps "absent means denied".
    tmpfs['/tmp'] = RUNSC_EMPTY_TMP;
  }
  // Docker mounts the mqueue filesystem at /dev/mqueue writable by everyone; nothing writable
  // that the profile did not grant. `mq_open` does not go through that mount (it uses the IPC
  // namespace's internal one): RLIMIT_MSGQUEUE 0 below refuses new queues under runc.
  if (!Object.hasOwn(tmpfs, '/dev/mqueue')) tmpfs['/dev/mqueue'] = MQUEUE_MASK;
  const fsize = Math.max(FSIZE_FLOOR_BYTES, largestTmpfs);

  const mounts = (job.mounts ?? []).map((m) => {
    if (!m.source.startsWith('/') || m.source.includes('\0')) throw invalid('mount source must be an absolute path');
    // Canonical targets only (no `.`, `..`, `//`, trailing `/`): the check after start finds each one by its exact mount point.
    if (!isCanonicalPath(m.target) || m.target === '/') throw invalid(`mount target ${JSON.stringify(m.target)} is not a canonical absolute path`);
    return {
      Type: 'bind' as const,
      Source: m.source,
      Target: m.target,
      ReadOnly: m.readOnly !== false,
      BindOptions: {Propagation: 'rprivate' as const, NonRecursive: true},
    };
  });

  return {
    NetworkMode: 'none',
    ReadonlyRootfs: job.readOnlyRoot !== false,
    Privileged: false,
    CapDrop: ['ALL'],
    CapAdd: [],
    // Only no-new-privileges: Docker's default seccomp (and AppArmor, where present) stay in force.
    SecurityOpt: ['no-new-privileges'],
    Memory: memory,
    MemorySwap: memory,
    OomKillDisable: false,
    OomScoreAdj: 1000,
    NanoCpus: Math.max(1, Math.round(limits.cpus * 1e9)),
    PidsLimit: hostPidsLimit(job),
    Tmpfs: tmpfs,
    Ulimits: [
      {Name: 'nofile', Soft: NOFILE_LIMIT, Hard: NOFILE_LIMIT},
      {Name: 'fsize', Soft: fsize, Hard: fsize},
      {Name: 'core', Soft: 0, Hard: 0},
      // No POSIX message queue can be created (mq_open O_CREAT fails with EMFILE). gVisor does
      // not enforce this limit; its queues live in the sandbox's own memory.
      {Name: 'msgqueue', Soft: 0, Hard: 0},
    ],
    Init: true,
    Runtime: job.runtime,
    Mounts: mounts,
    // No /dev/shm and no shared IPC: nothing writable that the profile did not grant.
    IpcMode: 'none',
    CgroupnsMode: 'private',
    // Output is read from the attach stream only; nothing is written to the engine's disk.
    LogConfig: {Type: 'none', Config: {}},
    RestartPolicy: {Name: 'no', MaximumRetryCount: 0},
    AutoRemove: false,
    PublishAllPorts: false,
  };
}

/** Labels of a job's container. `owner` is the backend instance id; `pool` a settings hash for warm-pool members. */
export function containerLabels(job: Pick<ContainerJob, 'id' | 'profile'>, owner: string, pool?: string): Record<string, string> {
  return {
    [MANAGED_LABEL]: 'true',
    [JOB_LABEL]: pool === undefined ? job.id : 'pool',
    [PROFILE_LABEL]: job.profile,
    [OWNER_LABEL]: owner,
    // Kept conditional: a label's value is a string, and a cold container carries no pool label.
    ...(pool === undefined ? {} : {[POOL_LABEL]: pool}),
  };
}

/**
 * The environment that points a sandbox with an egress grant at its relay
 * (`http://127.0.0.1:3128`, egress/relay.ts): `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
 * their lower-case forms, `NO_PROXY` empty (nothing bypasses the proxy: there is no other
 * route anyway), and `NODE_USE_ENV_PROXY=1` (Node 24's fetch and http honour the variables
 * then). Empty for a job without a grant. Pure. Not guaranteed: that a program honours these
 * variables; one that does not simply has no network.
 */
export function egressEnv(job: Pick<ContainerJob, 'network'>): Record<string, string> {
  if (job.network === 'none') return {};
  const url = `http://127.0.0.1:${EGRESS_RELAY_PORT}`;
  return {HTTP_PROXY: url, HTTPS_PROXY: url, ALL_PROXY: url, http_proxy: url, https_proxy: url, all_proxy: url, NO_PROXY: '', no_proxy: '', NODE_USE_ENV_PROXY: '1'};
}

/** `KEY=value` strings of `job.env`. @throws ToolcellError `INTERNAL` for names that are not shell-style identifiers or values with NUL. */
export function toEnv(env: Record<string, string> | undefined): string[] {
  return Object.entries(env ?? {}).map(([k, v]) => {
    if (!ENV_NAME.test(k) || typeof v !== 'string' || v.includes('\0')) throw invalid(`environment variable ${JSON.stringify(k)} is invalid`);
    return `${k}=${v}`;
  });
}

/**
 * Create options of a container for `job`.
 *
 * The process is exactly `command` (default `job.argv`): `Entrypoint` = `[command[0]]` and
 * `Cmd` = the rest, so an image's own ENTRYPOINT (e.g. a shell) never wraps the argv; no shell
 * parses anything. The environment is `job.env` over the image's `ENV`; nothing of the host's
 * environment is passed. stdin is attached once (`OpenStdin`, `StdinOnce`), stdout/stderr are
 * attached, no TTY. The image's `HEALTHCHECK` is disabled (`Healthcheck: {Test: ['NONE']}`,
 * Docker Engine API ContainerConfig.Healthcheck): nothing but `command` runs in the sandbox.
 * @param options.command argv to run instead of `job.argv` (the warm pool's launcher).
 * @param options.owner backend instance id, for the owner label.
 * @param options.pool settings hash, for warm-pool members.
 * @throws ToolcellError `INTERNAL` for an empty argv or an argv element containing NUL.
 */
export function toCreateOptions(
  job: ContainerJob,
  options: {owner: string; command?: string[]; pool?: string},
): Docker.ContainerCreateOptions & {HostConfig: ToolcellHostConfig} {
  const command = options.command ?? job.argv;
  const [file, ...args] = command;
  if (file === undefined || file === '') throw invalid('argv is empty');
  if (command.some((a) => typeof a !== 'string' || a.includes('\0'))) throw invalid('an argv element contains NUL');
  return {
    Image: job.image,
    Entrypoint: [file],
    Cmd: args,
    User: SANDBOX_USER,
    WorkingDir: job.workdir ?? '',
    // The proxy variables last: a package's env cannot point them elsewhere (there is no route anyway).
    Env: toEnv({...job.env, ...egressEnv(job)}),
    Labels: containerLabels(job, options.owner, options.pool),
    Hostname: 'sandbox',
    NetworkDisabled: true,
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    OpenStdin: true,
    StdinOnce: true,
    Tty: false,
    // The image's HEALTHCHECK would run an image-chosen command through the engine (docker exec,
    // engine CPU, any interval) outside argv and the allowlist: disabled for every sandbox.
    Healthcheck: {Test: ['NONE']},
    HostConfig: toHostConfig(job),
  };
}
