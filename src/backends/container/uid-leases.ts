// Each live sandbox gets a host uid and gid no other live sandbox has, leased through O_EXCL files shared by every toolcell process on the host.
import {closeSync, constants, lstatSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync} from 'node:fs';
import {homedir} from 'node:os';
import {join, resolve} from 'node:path';
import {ToolcellError} from '../../errors.ts';
import {isNoSuchContainer, isRemovalInProgress} from './docker-errors.ts';
import {log as rootLog} from '../../log.ts';

const log = rootLog.child({component: 'uid-leases'});

/**
 * First uid (and gid) of the range toolcell owns. Chosen above systemd's container range
 * (524288-1879048191, `systemd-nspawn --private-users=pick`) and below its foreign range
 * (2147352576) and 2^31 (tools that read uids as signed 32-bit numbers); no Debian user or
 * group is there. Source: systemd, docs/UIDS-GIDS.md.
 */
export const UID_BASE = 1_900_000_000;
/** Number of uids in the range: at most this many sandboxes can be live on one host at once. */
export const UID_COUNT = 65_536;

/** An empty lease file older than this (ms) was left by a creator that died before writing it. */
const UNWRITTEN_LEASE_MS = 60_000;

/** One leased uid; the same number is the gid. */
export interface UidLease {
  readonly uid: number;
  readonly gid: number;
  /** Records the container that runs as this uid, so that a reclaimer checks it is gone. */
  bind(containerId: string): void;
  /** Gives the uid back (its container is removed, or was never created). Idempotent. */
  release(): void;
}

/** Options of a {@link UidLeases}. */
export interface UidLeasesOptions {
  /** Directory of the lease files; default {@link defaultLeaseDir}. */
  dir?: string;
  base?: number;
  count?: number;
}

/**
 * The lease directory: `/run/toolcell/uid-leases` when running as root, else
 * `$XDG_RUNTIME_DIR/toolcell-uid-leases` (a per-user 0700 directory), else
 * `$XDG_STATE_HOME/toolcell/uid-leases` or `~/.local/state/toolcell/uid-leases` (the user's own
 * state directory, never the shared temp dir: another local user could create that path first);
 * `TOOLCELL_UID_LEASE_DIR` overrides it. Every toolcell process that shares a Docker engine
 * must use the same directory (same user, same host), or their leases do not see each other.
 * Pure apart from reading its defaults (`process.env`, the effective uid, the home directory).
 */
export function defaultLeaseDir(env: NodeJS.ProcessEnv = process.env, euid: number = process.geteuid?.() ?? -1, home: string = homedir()): string {
  if (env.TOOLCELL_UID_LEASE_DIR) return env.TOOLCELL_UID_LEASE_DIR;
  if (euid === 0) return '/run/toolcell/uid-leases';
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'toolcell-uid-leases');
  return join(env.XDG_STATE_HOME || join(home, '.local', 'state'), 'toolcell', 'uid-leases');
}

/**
 * Checks that no other local user can replace `dir` or anything on its path (so none can squat
 * the lease directory, or swap it later): every component from `/` is owned by root or by
 * `euid`; one writable by group or others must be sticky (`/tmp`) and the next component then
 * owned by `euid` or root; a symlink on the way must be owned by root or `euid`; `dir` itself is
 * a directory (not a symlink) owned by `euid` with mode 0700 (no group or other bits).
 * @throws Error naming the first bad component and the remedy.
 */
export function checkPrivateDir(dir: string, euid: number): void {
  const parts = dir.split('/').filter((c) => c !== '');
  const prefixes = parts.map((_, i) => `/${parts.slice(0, i + 1).join('/')}`);
  const remedy = `Remove it if another user made it, or set TOOLCELL_UID_LEASE_DIR to a directory only this user (uid ${euid}) can write`;
  let prev = lstatSync('/');
  for (const [i, prefix] of prefixes.entries()) {
    const final = i === prefixes.length - 1;
    const link = lstatSync(prefix);
    if (link.isSymbolicLink()) {
      if (final) throw new Error(`${prefix} is a symlink. ${remedy}.`);
      if (link.uid !== 0 && link.uid !== euid) throw new Error(`${prefix} is a symlink owned by uid ${link.uid}. ${remedy}.`);
    }
    const st = statSync(prefix);
    const openParent = (prev.mode & 0o022) !== 0;
    if (!st.isDirectory()) throw new Error(`${prefix} is not a directory. ${remedy}.`);
    if (st.uid !== 0 && st.uid !== euid) throw new Error(`${prefix} is owned by uid ${st.uid}, not by this user (${euid}) or root. ${remedy}.`);
    if (openParent && (prev.mode & 0o1000) === 0) throw new Error(`the directory holding ${prefix} is writable by others and not sticky. ${remedy}.`);
    if (final && st.uid !== euid) throw new Error(`${prefix} is owned by uid ${st.uid}, not by this user (${euid}). ${remedy}.`);
    if (final && (st.mode & 0o077) !== 0) throw new Error(`${prefix} has mode ${(st.mode & 0o777).toString(8)}, which lets others in (0700 required). ${remedy}.`);
    prev = st;
  }
}

/** Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22), or undefined when it does not exist. Source: proc(5). */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 2 (comm) may contain spaces and parentheses: count fields after its closing parenthesis.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** A lease file's content: `<pid> <start time> [<container id>]`. Pure. */
export function parseLease(text: string): {pid: number; start: string; container?: string} | undefined {
  const m = /^(\d+) (\d+)(?: ([0-9a-f]{12,64}))?\n?$/.exec(text);
  if (!m) return undefined;
  return {pid: Number(m[1]), start: m[2]!, container: m[3]};
}

/**
 * Leases uids from a range toolcell owns, so that two live sandboxes never share a host uid,
 * even across several toolcell processes (servers, test files) on one engine.
 *
 * A lease is a file named after the uid in a private directory (mode 0700, owned by this
 * user, no symlink), created with `O_CREAT|O_EXCL` (the kernel decides who gets it) and holding
 * the owner's pid, the owner's start time (so a reused pid is not mistaken for the owner) and,
 * once created, the container's id. A lease whose owner process is gone is stale; it is
 * reclaimed only if its container is gone too (`isGone`), under a per-uid `O_EXCL` reclaim lock,
 * re-reading the lease under the lock before removing it. The owner removes its own lease.
 *
 * An empty lease (its creator died between the create and the write) is stale after a minute.
 *
 * Limits: {@link UID_COUNT} live sandboxes per host; `acquire` then fails. A process that dies
 * while holding a reclaim lock (a few system calls long) leaves that one uid unusable until the
 * lock file is removed by hand. Processes in different pid namespaces, or under different host
 * users, must not share an engine (their leases do not see each other). A uid is reused after
 * release (round robin from a random start), so files a call left in a writable mount may be
 * owned by the uid of a later call.
 */
export class UidLeases {
  readonly dir: string;
  readonly #base: number;
  readonly #count: number;
  readonly #pid = process.pid;
  #start: string | undefined;
  #next: number;
  #dirChecked = false;
  /** Uids this process holds, → container id when bound. */
  readonly #held = new Map<number, string | undefined>();

  constructor(options: UidLeasesOptions = {}) {
    this.dir = resolve(options.dir ?? defaultLeaseDir());
    this.#base = options.base ?? UID_BASE;
    this.#count = options.count ?? UID_COUNT;
    this.#next = Math.floor(Math.random() * this.#count);
  }

  /** Uids held by this process now (for tests and metrics). */
  held(): number[] {
    return [...this.#held.keys()];
  }

  /**
   * Leases a uid no other live sandbox on this host has.
   * @param isGone tells whether a container of a dead process is gone (e.g. the engine answers
   *   404 for it); a stale lease whose container may still exist is not reclaimed.
   * @throws ToolcellError `BACKEND_UNAVAILABLE` (`reason: 'uid-leases'`) when the lease
   *   directory is unusable (not ours, group/world-writable, a symlink) or every uid is taken.
   */
  async acquire(isGone: (containerId: string) => Promise<boolean> = async () => false): Promise<UidLease> {
    this.#ensureDir();
    this.#start ??= processStartTime(this.#pid) ?? '0';
    for (let tried = 0; tried < this.#count; tried++) {
      const index = this.#next;
      this.#next = (this.#next + 1) % this.#count;
      const uid = this.#base + index;
      if (this.#held.has(uid)) continue;
      if (this.#create(uid) || (await this.#reclaim(uid, isGone) && this.#create(uid))) {
        this.#held.set(uid, undefined);
        return this.#lease(uid);
      }
    }
    throw new ToolcellError('BACKEND_UNAVAILABLE', `Every sandbox user id of this host is in use (${this.#count} sandboxes); retry when calls have finished.`, {reason: 'uid-leases'});
  }

  /** Releases the lease of the container `containerId`, if this process holds one. Idempotent. */
  releaseContainer(containerId: string): void {
    for (const [uid, id] of this.#held) if (id === containerId) this.#release(uid);
  }

  /**
   * After a remove request for `containerId` failed with `err`: releases its lease when the
   * engine said the container does not exist (404), and, when its removal is only in progress
   * (409: it still exists, its processes may still run as that uid), once `isGone` confirms it is
   * gone (polled every `intervalMs` ms, at most `tries` times; after that the lease is kept until
   * {@link releaseGone} or a reclaimer finds the container gone). Other errors keep the lease.
   * @param isGone true only when the engine answers 404 for the container.
   */
  releaseAfterRemoveError(containerId: string, err: unknown, isGone: (containerId: string) => Promise<boolean>, intervalMs = 500, tries = 60): void {
    if (isRemovalInProgress(err)) {
      void (async () => {
        for (let i = 0; i < tries && [...this.#held.values()].includes(containerId); i++) {
          await new Promise((r) => setTimeout(r, intervalMs).unref());
          if (await isGone(containerId).catch(() => false)) return this.releaseContainer(containerId);
        }
      })();
      return;
    }
    if (isNoSuchContainer(err)) this.releaseContainer(containerId);
  }

  /**
   * Releases the leases of bound containers that `isGone` reports gone (e.g. after a reaper
   * removed them without telling anyone). Leases of containers that may still exist are kept.
   */
  async releaseGone(isGone: (containerId: string) => Promise<boolean>): Promise<void> {
    for (const [uid, id] of [...this.#held]) {
      if (id !== undefined && await isGone(id).catch(() => false)) this.#release(uid);
    }
  }

  #lease(uid: number): UidLease {
    let released = false;
    return {
      uid, gid: uid,
      bind: (containerId: string) => {
        if (released || !/^[0-9a-f]{12,64}$/.test(containerId)) return;
        this.#held.set(uid, containerId);
        try {
          // Rewritten in place: only this process ever writes its own lease file.
          const fd = openSync(this.#path(uid), constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW);
          try {
            writeSync(fd, `${this.#pid} ${this.#start} ${containerId}\n`);
          } finally {
            closeSync(fd);
          }
        } catch (err) {
          log.warn({err, uid}, 'could not record the container of a uid lease');
        }
      },
      release: () => {
        if (released) return;
        released = true;
        this.#release(uid);
      },
    };
  }

  #release(uid: number): void {
    if (!this.#held.has(uid)) return;
    this.#held.delete(uid);
    try {
      unlinkSync(this.#path(uid));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({err, uid}, 'could not remove a uid lease file');
    }
  }

  #path(uid: number): string {
    return join(this.dir, String(uid));
  }

  /** Creates the lease file of `uid` exclusively; false when it exists. */
  #create(uid: number): boolean {
    let fd: number;
    try {
      fd = openSync(this.#path(uid), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw this.#unusable(err);
    }
    try {
      writeSync(fd, `${this.#pid} ${this.#start}\n`);
    } finally {
      closeSync(fd);
    }
    return true;
  }

  /** True when the lease of `uid` is stale (owner gone, container gone); its file is then removed. */
  async #reclaim(uid: number, isGone: (containerId: string) => Promise<boolean>): Promise<boolean> {
    const seen = this.#read(uid);
    if (seen === undefined || !(await this.#stale(uid, seen, isGone))) return false;
    const lock = `${this.#path(uid)}.reclaim`;
    let fd: number;
    try {
      fd = openSync(lock, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    } catch {
      return false; // someone else is reclaiming it
    }
    try {
      writeSync(fd, `${this.#pid} ${this.#start}\n`);
      closeSync(fd);
      // Under the lock nobody but the (dead) owner could have changed it: read it again.
      const now = this.#read(uid);
      if (now === undefined || now !== seen) return false;
      unlinkSync(this.#path(uid));
      log.debug({uid}, 'reclaimed a stale uid lease');
      return true;
    } catch {
      return false;
    } finally {
      try {
        unlinkSync(lock);
      } catch { /* already gone */ }
    }
  }

  async #stale(uid: number, text: string, isGone: (containerId: string) => Promise<boolean>): Promise<boolean> {
    const lease = parseLease(text);
    if (lease === undefined) {
      // A creator writes its line right after the exclusive create: an unreadable lease older than
      // UNWRITTEN_LEASE_MS was left by a process that died in between (or is not ours: leave it then).
      if (text !== '') return false;
      try {
        return Date.now() - lstatSync(this.#path(uid)).mtimeMs > UNWRITTEN_LEASE_MS;
      } catch {
        return false;
      }
    }
    if (processStartTime(lease.pid) === lease.start) return false;
    if (lease.container === undefined) return true;
    return await isGone(lease.container).catch(() => false);
  }

  #read(uid: number): string | undefined {
    try {
      return readFileSync(this.#path(uid), 'latin1');
    } catch {
      return undefined;
    }
  }

  /** Creates the lease directory (0700) once and checks that it and its path are ours ({@link checkPrivateDir}). */
  #ensureDir(): void {
    if (this.#dirChecked) return;
    try {
      mkdirSync(this.dir, {recursive: true, mode: 0o700});
      checkPrivateDir(this.dir, process.geteuid?.() ?? -1);
    } catch (err) {
      throw this.#unusable(err);
    }
    this.#dirChecked = true;
  }

  #unusable(err: unknown): ToolcellError {
    log.error({err, dir: this.dir}, `the uid lease directory is unusable; container tools cannot run: ${(err as Error).message}`);
    return new ToolcellError('BACKEND_UNAVAILABLE', 'Sandbox user ids cannot be leased on this host, so container tools cannot run now.', {reason: 'uid-leases'}, {cause: err});
  }
}

/** The leases of this process, shared by every container backend in it. */
export const uidLeases = new UidLeases();
