// A bind source is checked again at every container create, not only when profiles load: what the engine mounts must be what policy checked.
import {constants, type BigIntStats} from 'node:fs';
import {lstat, open, readlink, stat} from 'node:fs/promises';
import {ToolcellError} from '../../errors.ts';

/**
 * Why this module exists: policy resolves a mount grant to a canonical host path once, when
 * profiles load (`policy/mounts.ts`). The engine follows whatever is at that path later, when
 * the container starts. A symlink planted in between (by a tool with a writable mount above
 * the source, or by anyone on the host who can write the source's parent) would redirect the
 * mount to `/proc`, `/etc` or another sandbox's files. So, for every bind mount of every
 * container, cold or warm-pool member (both go through `prepareSandbox`):
 *
 * 1. before create: {@link checkBindSources}: the source is a canonical absolute path, no
 *    component of it is a symlink (each one `lstat`ed), it is a directory or a regular file,
 *    and the object opened there (`O_NOFOLLOW`) is at exactly that path (`/proc/self/fd`)
 *    with the same device and inode;
 * 2. after create, before start: {@link verifyReportedMounts}: the engine reports exactly
 *    these bind mounts (source, target, mode), and step 1 is repeated with the same result;
 * 3. after start, runc only: {@link verifyMountedInodes}: what is mounted at each target in the
 *    container (seen from the host through `/proc/<pid>/root`) has the device and inode
 *    checked in step 1; a container that fails is destroyed by the caller.
 *
 * Being under a mount root is not re-checked here: the source string was checked under the
 * root's realpath at load time and is immutable; with no component a symlink it still resolves
 * to itself, hence still under the root.
 *
 * Does NOT close: the engine resolves the source path itself when it starts the container (a
 * plain path: Docker cannot be handed an fd, and a `/proc/<pid>/fd/N` source is refused by
 * runc, EINVAL, since that mount belongs to another mount namespace). Someone who can write the
 * source's parent directory on the host can still swap it between step 2 and the engine's
 * mount. Step 3 detects that under runc; a warm-pool member is checked before it receives any
 * input, but a cold container's tool already runs during step 3 (milliseconds), and one that
 * has exited by then is not checked. Under runsc step 3 does not apply (the sandbox's root is
 * not the container's view). A tool cannot race it from inside: policy refuses, at load, any
 * mount source inside another grant's writable mount.
 */

/** A bind source as checked: where it is mounted and which file it was (device, inode). */
export interface CheckedBind {
  source: string;
  target: string;
  dev: bigint;
  ino: bigint;
}

/** A bind mount as given to the engine (`HostConfig.Mounts` entry of type `bind`). */
export interface BindSpec {
  Source: string;
  Target: string;
  ReadOnly?: boolean;
}

/** The model-facing refusal: names the mount target, never the host path (that goes to `cause`, for the log). */
export function mountChanged(target: string, detail: string, profile?: string): ToolcellError {
  const whose = profile === undefined ? 'its profile' : `profile "${profile}"`;
  return new ToolcellError('BACKEND_UNAVAILABLE',
    `The host directory that ${whose} mounts at "${target}" is no longer the one checked when profiles were loaded, so no sandbox was started. The operator must check that mount.`,
    {reason: 'mount-changed', target, ...(profile === undefined ? {} : {profile})},
    {cause: new Error(detail)});
}

/**
 * True when `path` is absolute and canonical in form: no empty, `.` or `..` component, no
 * trailing slash, no NUL (`/` itself is canonical). Pure.
 */
export function isCanonicalPath(path: string): boolean {
  if (!path.startsWith('/') || path.includes('\0')) return false;
  if (path === '/') return true;
  return path.slice(1).split('/').every((c) => c !== '' && c !== '.' && c !== '..');
}

/** Every prefix of a canonical absolute path, shortest first: `/a/b` → `['/a', '/a/b']` (`/` itself is not listed). Pure. */
export function pathPrefixes(path: string): string[] {
  const parts = path.split('/').slice(1).filter((c) => c !== '');
  return parts.map((_, i) => `/${parts.slice(0, i + 1).join('/')}`);
}

/** The bind mounts of a create options' `HostConfig.Mounts` (other types are not host paths). Pure. */
export function bindMounts(mounts: ReadonlyArray<{Type?: string; Source?: string; Target?: string; ReadOnly?: boolean}> | undefined): BindSpec[] {
  return (mounts ?? []).filter((m) => m.Type === 'bind').map((m) => ({Source: String(m.Source), Target: String(m.Target), ...(m.ReadOnly === undefined ? {} : {ReadOnly: m.ReadOnly})}));
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

/**
 * Checks one bind source now (step 1 of the module comment).
 * @returns its device and inode (bigint: inode numbers may exceed 2^53).
 * @throws ToolcellError `BACKEND_UNAVAILABLE` (`reason: 'mount-changed'`, `target`) when the path
 *   is not canonical, does not exist, a component is a symlink or not a directory, the final
 *   object is neither a directory nor a regular file (a FIFO is opened non-blocking, so it cannot
 *   hang the check), or what was opened is not at that path with that device and inode.
 */
export async function checkBindSource(source: string, target: string, profile?: string): Promise<CheckedBind> {
  const refuse = (detail: string) => mountChanged(target, `mount source ${source}: ${detail}`, profile);
  if (!isCanonicalPath(source)) throw refuse('not a canonical absolute path');
  const prefixes = pathPrefixes(source);
  let last: BigIntStats | undefined;
  for (const [i, prefix] of prefixes.entries()) {
    let st: BigIntStats;
    try {
      st = await lstat(prefix, {bigint: true});
    } catch (err) {
      throw refuse(`${prefix}: ${(err as NodeJS.ErrnoException).code ?? 'cannot lstat'}`);
    }
    if (st.isSymbolicLink()) throw refuse(`${prefix} is a symlink`);
    const final = i === prefixes.length - 1;
    if (!final && !st.isDirectory()) throw refuse(`${prefix} is not a directory`);
    if (final && !st.isDirectory() && !st.isFile()) throw refuse(`${prefix} is neither a directory nor a regular file`);
    last = st;
  }
  if (last === undefined) throw refuse('the root directory is never a mount source');
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(source, OPEN_FLAGS | (last.isDirectory() ? constants.O_DIRECTORY : 0));
    const opened = await handle.stat({bigint: true});
    if (opened.dev !== last.dev || opened.ino !== last.ino) throw new Error('replaced between lstat and open');
    // The kernel's own name of the opened object: any symlink on the way would show here.
    const where = await readlink(`/proc/self/fd/${handle.fd}`);
    if (where !== source) throw new Error(`opened object is at ${where}`);
    return {source, target, dev: opened.dev, ino: opened.ino};
  } catch (err) {
    if (err instanceof ToolcellError) throw err;
    throw refuse((err as NodeJS.ErrnoException).code ?? (err as Error).message);
  } finally {
    await handle?.close();
  }
}

/**
 * Checks every bind source (see {@link checkBindSource}); when `previous` is given, each must
 * also still be the same device and inode as then.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` `mount-changed` naming the first failing target.
 */
export async function checkBindSources(binds: readonly BindSpec[], profile?: string, previous?: readonly CheckedBind[]): Promise<CheckedBind[]> {
  const checked: CheckedBind[] = [];
  for (const [i, bind] of binds.entries()) {
    const now = await checkBindSource(bind.Source, bind.Target, profile);
    const before = previous?.[i];
    if (before !== undefined && (before.dev !== now.dev || before.ino !== now.ino || before.source !== now.source)) {
      throw mountChanged(bind.Target, `mount source ${bind.Source}: replaced between the checks before and after create`, profile);
    }
    checked.push(now);
  }
  return checked;
}

/** The parts of `docker inspect` this module reads (Docker Engine API 1.41, `GET /containers/{id}/json`). */
export interface InspectedMounts {
  Mounts?: Array<{Type?: string; Source?: string; Destination?: string; RW?: boolean}>;
  HostConfig?: {Mounts?: Array<{Type?: string; Source?: string; Target?: string; ReadOnly?: boolean}>; Binds?: string[] | null};
}

/**
 * Step 2: the engine's own account of the container's bind mounts must be exactly `expected`:
 * same sources, targets and modes, in `Mounts` (what it will mount) and `HostConfig.Mounts`, and
 * no `Binds`. Pure.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` `mount-changed` naming the first target that differs.
 */
export function verifyReportedMounts(info: InspectedMounts, expected: readonly BindSpec[], profile?: string): void {
  const fail = (target: string, detail: string) => mountChanged(target, `engine reports ${detail}`, profile);
  const firstTarget = expected[0]?.Target ?? '/';
  if ((info.HostConfig?.Binds ?? []).length > 0) throw fail(firstTarget, `Binds ${JSON.stringify(info.HostConfig?.Binds)}`);
  const reported = (info.Mounts ?? []).filter((m) => m.Type === 'bind');
  const configured = (info.HostConfig?.Mounts ?? []).filter((m) => m.Type === 'bind');
  if (reported.length !== expected.length || configured.length !== expected.length) {
    throw fail(firstTarget, `${reported.length}/${configured.length} bind mounts, expected ${expected.length}`);
  }
  for (const want of expected) {
    const got = reported.find((m) => m.Destination === want.Target);
    const conf = configured.find((m) => m.Target === want.Target);
    const readOnly = want.ReadOnly !== false;
    if (got === undefined || got.Source !== want.Source || got.RW !== !readOnly) {
      throw fail(want.Target, `mount ${JSON.stringify(got)} for ${want.Source}`);
    }
    if (conf === undefined || conf.Source !== want.Source || (conf.ReadOnly === true) !== readOnly) {
      throw fail(want.Target, `HostConfig mount ${JSON.stringify(conf)} for ${want.Source}`);
    }
  }
}

/**
 * Step 3 (runc): what is mounted at each target of the running container whose init process is
 * host pid `pid` has the checked device and inode (`stat` of `/proc/<pid>/root/<target>` from
 * the host).
 * @returns `false` when the container has already exited (nothing left to check), `true` when
 *   every target matched.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` `mount-changed` naming the first target that does
 *   not match.
 */
export async function verifyMountedInodes(pid: number, checked: readonly CheckedBind[], profile?: string): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  for (const bind of checked) {
    let st: BigIntStats;
    try {
      st = await stat(`/proc/${pid}/root${bind.target}`, {bigint: true});
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // The container (and its /proc entry) is gone: it ran and exited before this check.
      try {
        await stat(`/proc/${pid}`);
      } catch {
        return false;
      }
      throw mountChanged(bind.target, `cannot stat the mounted ${bind.source} in the container (${code})`, profile);
    }
    if (st.dev !== bind.dev || st.ino !== bind.ino) {
      throw mountChanged(bind.target, `mounted object is not the checked ${bind.source} (dev/ino ${st.dev}/${st.ino}, expected ${bind.dev}/${bind.ino})`, profile);
    }
  }
  return true;
}
