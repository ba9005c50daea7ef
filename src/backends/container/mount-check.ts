// A bind source is checked again at every container create, not only when profiles load: what the engine mounts must be what policy checked.
import {constants, type BigIntStats} from 'node:fs';
import {lstat, open, readFile, readlink, stat} from 'node:fs/promises';
import {isAbsolute, join, relative} from 'node:path';
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
 * 3. after start, runc only: {@link verifyMountedInodes}: the container's own mount table
 *    (`/proc/<pid>/mountinfo`) has a mount at exactly each target with the checked device, and
 *    the object there (walked from `/proc/<pid>/root` without following symlinks) has the checked
 *    inode; a container that fails is destroyed by the caller. A cold container's tool is held
 *    until this passed (sandbox.ts `withHold`); a warm-pool member gets no input before it.
 *
 * Being under a mount root is not re-checked here: the source string was checked under the
 * root's realpath at load time and is immutable; with no component a symlink it still resolves
 * to itself, hence still under the root.
 *
 * Does NOT close, by itself: the engine resolves the source path itself when it starts the
 * container (Docker cannot be handed an fd, and runc refuses a `/proc/<pid>/fd/N` source,
 * EINVAL). As root, mount-staging.ts closes that window (the engine is given a root-only bind
 * of the checked object). Without root, someone who can write the source's parent directory on
 * the host can still swap it between step 2 and the engine's mount; step 3 then refuses the call
 * under runc, before the held tool runs (a container that died before its mount table was read
 * is not checked). Under runsc step 3 does not apply. A mount point inside the container is
 * followed by the engine too: policy refuses, at load, targets a tool could move
 * (`policy/mounts.ts` `targetProblem`), and step 3 sees a mount that landed elsewhere.
 */

/** A bind source as checked: where it is mounted and which file it was (device, inode). */
export interface CheckedBind {
  source: string;
  target: string;
  dev: bigint;
  ino: bigint;
  /** The directory of its filesystem this source is (what mountinfo shows as a bind mount's root), when known. */
  root?: string;
}

/** A bind mount as given to the engine (`HostConfig.Mounts` entry of type `bind`). */
export interface BindSpec {
  Source: string;
  Target: string;
  ReadOnly?: boolean;
}

/**
 * The model-facing refusal: names the mount target, never the host path (that goes to `cause`,
 * for the log). `when`: `before-start` (no sandbox ran) or `after-start` (the container ran and
 * was stopped when the check after start failed; the tool may have run for milliseconds).
 */
export function mountChanged(target: string, detail: string, profile?: string, when: 'before-start' | 'after-start' = 'before-start'): ToolcellError {
  const whose = profile === undefined ? 'its profile' : `profile "${profile}"`;
  const message = when === 'before-start'
    ? `The host directory that ${whose} mounts at "${target}" is no longer the one checked when profiles were loaded, so no sandbox was started. The operator must check that mount.`
    : `What the engine mounted at "${target}" for ${whose} is not the checked host directory (redirected on the host or at the mount point), so the sandbox was stopped right after it started and its output discarded. The operator must check that mount.`;
  return new ToolcellError('BACKEND_UNAVAILABLE', message,
    {reason: 'mount-changed', target, profile},
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
  return (mounts ?? []).filter((m) => m.Type === 'bind').map((m) => ({Source: String(m.Source), Target: String(m.Target), ReadOnly: m.ReadOnly}));
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
    const root = await filesystemRoot(source, opened.dev);
    return {source, target, dev: opened.dev, ino: opened.ino, root};
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
 * After create, for every container (binds or not): the engine reports no mount but the granted
 * binds (checked by {@link verifyReportedMounts}) and tmpfs. An image `VOLUME` (Dockerfile
 * reference, "VOLUME"; Engine API image `Config.Volumes`) otherwise becomes an anonymous volume:
 * a writable, exec-allowed directory on the engine's disk that no profile granted. Such a
 * container is refused before it starts. Pure.
 * Decision: refuse rather than mask, so a profile never runs with a path silently changed; the
 * operator can grant a tmpfs (or a mount) at the declared path, which the engine then uses
 * instead of creating the volume.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` (`reason: 'image-volume'`, `target`) naming the
 *   first such mount point (never its host path).
 * Does NOT: inspect the image itself (only what the engine will mount).
 */
export function refuseUngrantedMounts(info: InspectedMounts, profile?: string): void {
  const other = (info.Mounts ?? []).find((m) => m.Type !== 'bind' && m.Type !== 'tmpfs');
  if (other === undefined) return;
  const target = String(other.Destination ?? '?');
  const whose = profile === undefined ? 'its profile' : `profile "${profile}"`;
  throw new ToolcellError('BACKEND_UNAVAILABLE',
    `The image declares a volume at ${JSON.stringify(target)} (Dockerfile VOLUME), which would give the sandbox a writable path ${whose} never granted, so no sandbox was started. The operator can use an image without VOLUME, or grant a tmpfs or mount at ${JSON.stringify(target)} in the profile.`,
    {reason: 'image-volume', target, ...(profile === undefined ? {} : {profile})},
    {cause: new Error(`engine reports mount ${JSON.stringify(other)}`)});
}

/** One line of `/proc/<pid>/mountinfo` (the fields this module reads). Source: proc(5), "/proc/pid/mountinfo". */
export interface MountInfoEntry {
  /** Device of the mounted filesystem, as `stat` reports `st_dev` (glibc's makedev encoding). */
  dev: bigint;
  /** The directory of that filesystem mounted here (field 4, octal escapes decoded). */
  root: string;
  /** Where it is mounted, relative to the process's root (field 5, octal escapes decoded). */
  mountPoint: string;
}

/** `major:minor` → `st_dev` as glibc's `makedev` encodes it (what Node's `stat` reports). Pure. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** Parses mountinfo text, in file order (later lines are mounted on top of earlier ones). Malformed lines are skipped. Pure. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const m = /^(\d+):(\d+)$/.exec(f[2] ?? '');
    if (f.length < 5 || !m) continue;
    entries.push({dev: makedev(Number(m[1]), Number(m[2])), root: unescape(f[3]!), mountPoint: unescape(f[4]!)});
  }
  return entries;
}

/**
 * The directory of its filesystem that a host path is (the `root` a bind mount of it shows in
 * mountinfo), from this process's mount table: the longest mount point above `path` with device
 * `dev`. Undefined when none matches (e.g. btrfs subvolumes report another device); the root is
 * then not compared.
 */
export async function filesystemRoot(path: string, dev: bigint): Promise<string | undefined> {
  let table: MountInfoEntry[];
  try {
    table = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  } catch {
    return undefined;
  }
  let best: MountInfoEntry | undefined;
  for (const e of table) {
    const rel = relative(e.mountPoint, path);
    const within = rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
    if (within && (best === undefined || e.mountPoint.length >= best.mountPoint.length)) best = e;
  }
  if (best === undefined || best.dev !== dev) return undefined;
  const rel = relative(best.mountPoint, path);
  return rel === '' ? best.root : join(best.root, rel);
}

/**
 * Step 3 (runc): in the mount table of the running container whose init process is host pid
 * `pid` (`/proc/<pid>/mountinfo`), the mount on top at exactly each target is of the checked
 * source's device; and the object there, reached from the host through `/proc/<pid>/root` with
 * no symlink on the way (each component `lstat`ed), has the checked inode (when the process
 * exits before that, the mount's `root`, the mounted directory's current path on its
 * filesystem, must be the checked path instead). The mount table is the kernel's account of where
 * each mount landed: a mount redirected by a symlink at its mount point (inside the container)
 * shows at another mount point, and one redirected on the host shows another root or inode.
 * @returns `false` when the process is gone (before its mount table was read: nothing checked;
 *   or after, with the inodes not yet compared), `true` when every target matched.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` `mount-changed` naming the first target that does
 *   not match (a pid reused by another process after the container exited also fails: refused,
 *   never passed).
 */
export async function verifyMountedInodes(pid: number, checked: readonly CheckedBind[], profile?: string): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  let table: MountInfoEntry[];
  try {
    table = parseMountInfo(await readFile(`/proc/${pid}/mountinfo`, 'utf8'));
  } catch {
    return false; // the container (and its /proc entry) is gone
  }
  const after = 'after start';
  for (const bind of checked) {
    const fail = (detail: string) => mountChanged(bind.target, `${after}: ${detail} (checked ${bind.source}, dev/ino ${bind.dev}/${bind.ino}${bind.root === undefined ? '' : `, root ${bind.root}`})`, profile, 'after-start');
    const top = table.findLast((e) => e.mountPoint === bind.target);
    if (top === undefined) throw fail(`nothing is mounted at ${bind.target} in the container (mount points: ${table.map((e) => e.mountPoint).join(' ')})`);
    if (top.dev !== bind.dev) throw fail(`the mount at the target has device ${top.dev}`);
    // The root is the mounted directory's path now: the checked directory renamed since shows its new
    // name, so the inode below decides; the root decides only when the inode cannot be read any more.
    const rootDiffers = bind.root !== undefined && top.root !== bind.root;
    const base = `/proc/${pid}/root`;
    let st: BigIntStats | undefined;
    for (const prefix of pathPrefixes(bind.target)) {
      try {
        st = await lstat(`${base}${prefix}`, {bigint: true});
      } catch (err) {
        // The process exited after its mount table was read: no root left to walk.
        if (!(await stat(`/proc/${pid}`).then(() => true, () => false))) {
          if (rootDiffers) throw fail(`the mount at the target is ${top.root} of its filesystem`);
          return false;
        }
        throw fail(`cannot lstat ${prefix} in the container (${(err as NodeJS.ErrnoException).code})`);
      }
      if (st.isSymbolicLink()) throw fail(`${prefix} is a symlink in the container`);
    }
    if (st === undefined || st.dev !== bind.dev || st.ino !== bind.ino) throw fail(`the object at the target is dev/ino ${st?.dev}/${st?.ino}`);
  }
  return true;
}
