// Bind sources reach the engine through a root-only staging path bound to the checked object itself, so no one on the host can swap them between the check and the engine's mount.
import {spawn} from 'node:child_process';
import {constants} from 'node:fs';
import {lstat, mkdir, mkdtemp, open, readdir, readlink, rm, rmdir, stat, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import {mountChanged, pathPrefixes, type CheckedBind} from './mount-check.ts';
import {processStartTime} from './uid-leases.ts';

const log = rootLog.child({component: 'mount-staging'});

/**
 * Why: the engine resolves a bind source by its path when it starts the container, tens of
 * milliseconds after toolcell's last check; anyone who can write the source's parent directory
 * on the host can swap it (a `RENAME_EXCHANGE` with a symlink, timed by inotify) in between.
 * Docker cannot be handed an fd, and runc refuses a `/proc/<pid>/fd/N` source (EINVAL). So,
 * when toolcell runs as root, each checked source is opened (`O_NOFOLLOW`, and the kernel's
 * name of the opened object is compared with the checked path, device and inode) and that
 * open object is bind-mounted (`mount --no-canonicalize --bind /proc/self/fd/3 STAGE`, the fd
 * inherited by the child: the path is never resolved again) onto a staging path under
 * {@link STAGING_DIR}, a root-owned directory no one else can enter or write (every component
 * from `/` checked: a directory, owned by root, not writable by group or others). The engine is
 * given the staging path; only root can change what is there. The staging mounts are detached
 * (`umount -l`) once the container has started (the container keeps its own copy of the mount)
 * or when the start fails.
 *
 * Does NOT close: root on the host (or anything that can write `/run/toolcell`); an engine that
 * runs in another mount namespace than toolcell (it would not see the staging mount; the create
 * then fails, it never mounts something else). When toolcell is not root, staging is not used
 * and the race described in mount-check.ts remains. Staging mounts of a toolcell process that
 * died between staging and start stay until another toolcell process stages a mount (it detaches
 * those of processes that are gone).
 */
export const STAGING_DIR = '/run/toolcell/mounts';

/** Longest wait for `mount` / `umount`, in ms. */
const MOUNT_TIMEOUT_MS = 10_000;

/**
 * True when bind sources are staged: Linux, toolcell's effective uid is 0 (`mount` needs
 * CAP_SYS_ADMIN), and `TOOLCELL_MOUNT_STAGING` is not `off`. Set it to `off` only where staging
 * cannot work (toolcell as root in its own container or mount namespace, where the engine would
 * not see the staging path, or without CAP_SYS_ADMIN): the host race of mount-check.ts is open then.
 */
export function stagingAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  return process.platform === 'linux' && process.geteuid?.() === 0 && env.TOOLCELL_MOUNT_STAGING !== 'off';
}

/** Binds staged for one container. */
export interface StagedBinds {
  /** The staging path of each checked bind, in the same order: what the engine is given as `Source`. */
  readonly sources: readonly string[];
  /** Detaches the staging mounts and removes their directory. Idempotent; never throws (failures are logged). */
  release(): Promise<void>;
}

/** Runs `file args` with `fd` (if given) as the child's fd 3; resolves on exit 0. @throws Error with stderr otherwise. */
function run(file: string, args: string[], fd?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ['ignore', 'ignore', 'pipe', ...(fd === undefined ? [] : [fd])],
      timeout: MOUNT_TIMEOUT_MS, killSignal: 'SIGKILL', env: {PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C'},
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 2000) stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${file} ${args.join(' ')}: ${signal ?? `exit ${code}`}: ${stderr.trim()}`))));
  });
}

/** Creates `dir` (0700) and checks every component from `/`: a directory, owned by root, not writable by group or others; `dir` itself not enterable by others. */
async function ensureStagingDir(dir: string): Promise<void> {
  await mkdir(dir, {recursive: true, mode: 0o700});
  for (const prefix of pathPrefixes(dir)) {
    const st = await lstat(prefix);
    if (!st.isDirectory() || st.uid !== 0) throw new Error(`${prefix} is not a directory owned by root`);
    if ((st.mode & 0o022) !== 0) throw new Error(`${prefix} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`);
  }
  if (((await lstat(dir)).mode & 0o077) !== 0) throw new Error(`${dir} is open to group or others (0700 required)`);
}

/** This process's staging directory name: `<pid>-<start time>` (so a reused pid is not mistaken for a live owner). */
function ownerName(pid: number): string | undefined {
  const start = processStartTime(pid);
  return start === undefined ? undefined : `${pid}-${start}`;
}

let swept = false;

/** Detaches and removes the staging directories of toolcell processes that are gone (best effort, once per process). */
async function sweepDead(dir: string): Promise<void> {
  if (swept) return;
  swept = true;
  for (const name of await readdir(dir).catch(() => [])) {
    const m = /^(\d+)-(\d+)$/.exec(name);
    if (!m || ownerName(Number(m[1])) === name) continue;
    await detachAll(join(dir, name));
  }
}

/** `umount -l` every entry under each `c-*` directory of `owner`, then removes it all. */
async function detachAll(owner: string): Promise<void> {
  for (const c of await readdir(owner).catch(() => [])) {
    const containerDir = join(owner, c);
    for (const entry of await readdir(containerDir).catch(() => [])) await detach(join(containerDir, entry));
    await rmdir(containerDir).catch((err: unknown) => log.warn({err, dir: containerDir}, 'could not remove a staging directory'));
  }
  await rmdir(owner).catch(() => undefined);
}

/** Detaches the mount at `path` (if any) and removes the path. */
async function detach(path: string): Promise<void> {
  await run('umount', ['-l', path]).catch(() => undefined); // not mounted (never staged, or already detached)
  await rm(path, {force: true, recursive: false}).catch(async () => rmdir(path)).catch((err: unknown) => log.warn({err, path}, 'could not remove a staging path'));
}

/**
 * Stages every checked bind (see the module comment). Call right after the sources were checked
 * (mount-check.ts `checkBindSources`); give the engine {@link StagedBinds.sources}.
 * @param dir parent of the staging paths (tests); default {@link STAGING_DIR}.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` `mount-changed` when a source is no longer the
 *   checked object when opened; `BACKEND_UNAVAILABLE` `mount-staging` when the staging
 *   directory is unsafe or `mount` fails. Whatever was staged before the failure is released.
 */
export async function stageBinds(checked: readonly CheckedBind[], profile?: string, dir: string = STAGING_DIR): Promise<StagedBinds> {
  const paths: string[] = [];
  let containerDir: string | undefined;
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    for (const path of paths) await detach(path);
    if (containerDir !== undefined) await rmdir(containerDir).catch((err: unknown) => log.warn({err, dir: containerDir}, 'could not remove a staging directory'));
  };
  try {
    const owner = ownerName(process.pid);
    if (owner === undefined) throw new Error('cannot read this process\'s start time');
    try {
      await ensureStagingDir(join(dir, owner));
      await sweepDead(dir);
      containerDir = await mkdtemp(join(dir, owner, 'c-'));
    } catch (err) {
      throw staging(err);
    }
    for (const [i, bind] of checked.entries()) {
      const refuse = (detail: string) => mountChanged(bind.target, `staging mount source ${bind.source}: ${detail}`, profile);
      let handle: Awaited<ReturnType<typeof open>>;
      try {
        // O_NOFOLLOW: a symlink at the last component fails; one on the way shows in the fd's name below.
        handle = await open(bind.source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
      } catch (err) {
        throw refuse((err as NodeJS.ErrnoException).code ?? 'cannot open');
      }
      try {
        const st = await handle.stat({bigint: true});
        if (st.dev !== bind.dev || st.ino !== bind.ino) throw refuse('not the checked object');
        if (!st.isDirectory() && !st.isFile()) throw refuse('neither a directory nor a regular file');
        const name = await readlink(`/proc/self/fd/${handle.fd}`);
        if (name !== bind.source) throw refuse(`opened object is at ${name}`);
        const stage = join(containerDir, String(i));
        if (st.isDirectory()) await mkdir(stage, {mode: 0o700});
        else await writeFile(stage, '', {mode: 0o600, flag: 'wx'});
        paths.push(stage);
        try {
          await run('mount', ['--no-canonicalize', '--bind', '/proc/self/fd/3', stage], handle.fd);
        } catch (err) {
          throw staging(err);
        }
        const staged = await stat(stage, {bigint: true});
        if (staged.dev !== bind.dev || staged.ino !== bind.ino) throw refuse(`staged ${stage} is dev/ino ${staged.dev}/${staged.ino}`);
      } finally {
        await handle.close();
      }
    }
    return {sources: [...paths], release};
  } catch (err) {
    await release();
    throw err;
  }
}

function staging(err: unknown): ToolcellError {
  log.error({err}, 'mount sources cannot be staged; container tools with mounts cannot run');
  return new ToolcellError('BACKEND_UNAVAILABLE', 'The sandbox\'s mounts cannot be prepared on this host, so container tools with mounts cannot run now.', {reason: 'mount-staging'}, {cause: err});
}
