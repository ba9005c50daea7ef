import {createHash, randomBytes} from 'node:crypto';
import type Docker from 'dockerode';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import type {ContainerJob} from '../backend.ts';
import {isNoSuchContainer} from './docker-errors.ts';
import {toCreateOptions} from './host-config.ts';
import {REMOVE_TIMEOUT_MS} from './reaper.ts';
import {prepareSandbox, type Sandbox} from './sandbox.ts';
import {uidLeases} from './uid-leases.ts';

const log = rootLog.child({component: 'container-pool'});

/** Pause before a slot whose member was refused for a changed mount source tries again, in ms (not marked broken: see `#create`). */
const MOUNT_CHANGED_RETRY_MS = 1_000;

/**
 * Warm pool of containers (issue 4): containers created and started ahead of demand, each
 * waiting for the one job it will run, handed to exactly one call and removed after it.
 *
 * A member is created with exactly the create options of a cold container for the same job
 * (`toCreateOptions`: same image, user, env, workdir, HostConfig, labels but the job id), except
 * that its command is {@link launcherArgv}: a fixed `/bin/sh` script that reads a per-call
 * token and the job's argv from stdin, runs the argv as its child (same limits, same init as
 * PID 1; the tool reads the rest of stdin as its own) and, once the child has exited, writes
 * an *exit report* (see {@link exitMarkers}) at the end of stdout and of stderr. The backend
 * answers the call as soon as both reports arrived, instead of waiting for the engine to notice
 * the container's exit (about 30-40 ms here), and removes the container after answering. The
 * argv is data for the script, never code: each element is one line, with only `\` and newline
 * escaped and decoded by `printf %b`. The launcher stays as the tool's parent, so a warm call
 * has one more process under the profile's pids limit than a cold one (the only difference a
 * tool can see: its parent is the launcher, not init). The allowlist check on argv[0] happens in policy before
 * `run`, unchanged.
 *
 * Members are keyed by a SHA-256 of their create options (the settings hash); a job takes only
 * a member with its own key. Members older than `maxAgeMs`, or whose container stopped, are
 * discarded, never used. When no member is ready, the call waits for a member being created
 * that no other call waits for (`acquire`), else creates its container cold (a burst larger
 * than the pool degrades to fresh members and cold starts, never to reuse). Images without `/bin/sh`
 * fail to start a member; their key is then marked unpoolable for a while and runs cold.
 */

/** Options of the warm pool. */
export interface PoolOptions {
  /** Ready members kept per settings key (default 2). */
  size?: number;
  /** Most members across all keys (default 8). */
  maxTotal?: number;
  /** Most memory the members may reserve together, in MB: sum of their `memoryMb` (default 2048). */
  maxMemoryMb?: number;
  /** A member older than this is discarded, in ms (default 120 000). */
  maxAgeMs?: number;
  /** A key not used for this long stops being refilled, in ms (default 600 000). */
  idleKeyMs?: number;
  /** Longest argv+stdin header the launcher is given, in bytes; larger jobs run cold (default 65 536: dash reads it byte by byte). */
  maxHeaderBytes?: number;
}

/** The byte the launcher writes to stderr once it runs and waits for its input (a readiness signal, consumed by the pool). */
export const READY_BYTE = 'R';
/** How long a new member may take to signal readiness, in ms. */
const READY_TIMEOUT_MS = 15_000;

/**
 * Waits for the launcher's readiness frame on the attach socket: stderr, length 1, READY_BYTE.
 * Bytes after it (none expected: the launcher then blocks on stdin) are put back.
 * @throws Error when the first frame is anything else (e.g. init could not exec /bin/sh), the
 *   socket ends, or it takes longer than READY_TIMEOUT_MS.
 */
function awaitReady(socket: Sandbox['socket']): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
      if (err) reject(err);
      else resolve();
    };
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < 9) return;
      const ok = got[0] === 2 && got.readUInt32BE(4) === 1 && got.subarray(8, 9).toString('latin1') === READY_BYTE;
      // Stop listening first: unshift() would otherwise hand the same bytes to this handler again.
      done(ok ? undefined : new Error(`launcher did not start: ${got.subarray(8, 200).toString('utf8')}`));
      if (ok && got.length > 9) socket.unshift(got.subarray(9));
    };
    const onEnd = () => done(new Error('launcher exited before it was ready'));
    const timer = setTimeout(() => done(new Error('launcher was not ready in time')), READY_TIMEOUT_MS);
    socket.on('data', onData);
    socket.once('end', onEnd);
  });
}

/** Bytes of the per-call token the launcher is given (as 2 hex digits each). */
const TOKEN_BYTES = 16;
/** A token of the real length, for sizing a launch header. */
const SIZING_TOKEN = '0'.repeat(TOKEN_BYTES * 2);
/** Record separator (0x1e): brackets an exit report. */
const RS = '\x1e';
/** Longest exit report on one stream, in bytes (stderr: RS toolcell: token : code RS). */
export const EXIT_REPORT_MAX_BYTES = 64;

/** A new random per-call token for the launcher's exit report (hex). */
export function newLaunchToken(): string {
  return randomBytes(TOKEN_BYTES).toString('hex');
}

/**
 * The exit report the launcher writes once its child (the tool) has exited: `stdout` is
 * appended to the container's stdout, and `stderrPrefix` + the exit status (decimal) + RS to
 * its stderr. Each pipe is a FIFO, so a report arrives after everything the tool wrote to that
 * stream before it exited.
 *
 * The report is the tool's own word about itself, like its output: a tool that learnt the
 * token (it is read by the launcher from stdin before the tool starts, and never passed to
 * it) could end its call early with an exit status of its choosing, which it can do anyway by
 * exiting. It cannot extend its call: the deadline, the output cap and removal apply as before.
 */
export function exitMarkers(token: string): {stdout: Buffer; stderrPrefix: Buffer} {
  return {stdout: Buffer.from(`${RS}toolcell:${token}${RS}`, 'latin1'), stderrPrefix: Buffer.from(`${RS}toolcell:${token}:`, 'latin1')};
}

/**
 * The launcher script: signals readiness on stderr, reads the token line, the argc line, then
 * one escaped line per argument, runs them as its child, then writes the exit report (see
 * {@link exitMarkers}) to stdout and stderr and exits with the child's status.
 * dash exports `PWD` (and `OLDPWD` after a cd) on its own; they are unset so that the tool's
 * environment is exactly the one a cold container gets, unless the job grants them itself.
 * The launcher's own variables (`t n a c`) are not exported, so the tool never sees them.
 */
export function launcherScript(keep: ReadonlySet<string> = new Set()): string {
  const unset = ['PWD', 'OLDPWD'].filter((v) => !keep.has(v));
  return [
    `printf ${READY_BYTE} >&2`,
    'IFS= read -r t || exit 126',
    'case $t in ""|*[!0-9a-f]*) exit 126;; esac',
    'IFS= read -r n || exit 126',
    'case $n in ""|*[!0-9]*) exit 126;; esac',
    'set --',
    'while [ "$n" -gt 0 ]; do',
    '  IFS= read -r a || exit 126',
    "  a=$(printf '%bx' \"$a\")",
    '  set -- "$@" "${a%x}"',
    '  n=$((n-1))',
    'done',
    ...(unset.length > 0 ? [`unset ${unset.join(' ')}`] : []),
    '"$@"',
    'c=$?',
    "printf '\\036toolcell:%s\\036' \"$t\"",
    "printf '\\036toolcell:%s:%s\\036' \"$t\" \"$c\" >&2",
    'exit "$c"',
  ].join('\n');
}

/** Command of a warm-pool member for `job` (`/bin/sh -c LAUNCHER`). */
export function launcherArgv(job: Pick<ContainerJob, 'env'>): string[] {
  return ['/bin/sh', '-c', launcherScript(new Set(Object.keys(job.env ?? {}))), 'toolcell-launcher'];
}

/** Escapes one argv element for the launcher: `\` → `\\`, newline → `\n` (decoded by `printf %b`). */
export function escapeArg(arg: string): string {
  return arg.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
}

/** The bytes a launcher reads: `token\n`, `argc\n`, one escaped line per argument, then `stdin` verbatim. */
export function encodeLaunch(token: string, argv: readonly string[], stdin?: string): Buffer {
  const header = `${token}\n${argv.length}\n${argv.map((a) => `${escapeArg(a)}\n`).join('')}`;
  return stdin === undefined ? Buffer.from(header, 'utf8') : Buffer.concat([Buffer.from(header, 'utf8'), Buffer.from(stdin, 'utf8')]);
}

/** The settings hash of a job: SHA-256 of the create options of its pool member (owner-independent). */
export function poolKey(job: ContainerJob): string {
  const options = toCreateOptions(job, {owner: '', command: launcherArgv(job), pool: ''});
  return createHash('sha256').update(JSON.stringify(options)).digest('hex').slice(0, 32);
}

interface Member {
  sandbox: Sandbox;
  memoryMb: number;
  createdAt: number;
  exited: boolean;
}

interface Slot {
  key: string;
  template: ContainerJob;
  ready: Member[];
  creating: number;
  lastUsed: number;
  /** performance.now() until which the key is not refilled (launcher failed to start). */
  brokenUntil: number;
  /** Calls waiting for a member being created, first come first served; never more than `creating`. */
  waiters: Array<(sandbox: Sandbox | undefined) => void>;
}

/** The warm pool; owned by a ContainerBackend. */
export class ContainerPool {
  readonly #docker: Docker;
  readonly #owner: string;
  readonly #size: number;
  readonly #maxTotal: number;
  readonly #maxMemoryMb: number;
  readonly #maxAgeMs: number;
  readonly #idleKeyMs: number;
  readonly #maxHeaderBytes: number;
  readonly #slots = new Map<string, Slot>();
  /** Containers being created right now (so close() can remove them too). */
  readonly #pending = new Set<Docker.Container>();
  /** Member creations in flight (close() waits for them). */
  readonly #inflight = new Set<Promise<void>>();
  readonly #sweeper: NodeJS.Timeout;
  #closed = false;

  constructor(docker: Docker, owner: string, options: PoolOptions) {
    this.#docker = docker;
    this.#owner = owner;
    this.#size = Math.max(0, Math.floor(options.size ?? 2));
    this.#maxTotal = Math.max(0, Math.floor(options.maxTotal ?? 8));
    this.#maxMemoryMb = options.maxMemoryMb ?? 2048;
    this.#maxAgeMs = options.maxAgeMs ?? 120_000;
    this.#idleKeyMs = options.idleKeyMs ?? 600_000;
    this.#maxHeaderBytes = options.maxHeaderBytes ?? 65_536;
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(1_000, Math.min(this.#maxAgeMs / 2, 30_000)));
    this.#sweeper.unref();
  }

  /** Members handed straight from their creation to a waiting call (see `acquire`). */
  #handed = 0;

  /** Members ready now, being created, keys, and members handed to waiting calls so far (for metrics and tests). */
  stats(): {ready: number; creating: number; keys: number; handed: number} {
    let ready = 0;
    let creating = 0;
    for (const s of this.#slots.values()) {
      ready += s.ready.length;
      creating += s.creating;
    }
    return {ready, creating, keys: this.#slots.size, handed: this.#handed};
  }

  /** Starts keeping members ready for jobs with the settings of `template`. */
  register(template: ContainerJob): Slot | undefined {
    if (this.#closed || this.#size === 0) return undefined;
    let key: string;
    try {
      key = poolKey(template);
    } catch {
      return undefined;
    }
    let slot = this.#slots.get(key);
    if (!slot) {
      slot = {key, template: {...template, argv: ['/bin/true'], stdin: undefined}, ready: [], creating: 0, lastUsed: performance.now(), brokenUntil: 0, waiters: []};
      this.#slots.set(key, slot);
    }
    this.#fill(slot);
    return slot;
  }

  /**
   * A ready member for `job`, removed from the pool (the caller now owns and must remove it),
   * or undefined (no member ready, aged out, settings differ, or the job's argv is too large
   * for the launcher): then the caller creates a cold container. Schedules a refill.
   */
  take(job: ContainerJob): Sandbox | undefined {
    return this.#take(job).sandbox;
  }

  /** `take`, also returning the slot of the job's settings (undefined when the job cannot use the pool). */
  #take(job: ContainerJob): {sandbox?: Sandbox; slot?: Slot} {
    if (this.#closed || this.#size === 0) return {};
    if (encodeLaunch(SIZING_TOKEN, job.argv).length > this.#maxHeaderBytes) return {};
    const slot = this.register(job);
    if (!slot) return {};
    slot.lastUsed = performance.now();
    let member: Member | undefined;
    while ((member = slot.ready.shift())) {
      if (!member.exited && performance.now() - member.createdAt < this.#maxAgeMs) break;
      void this.#discard(member.sandbox);
    }
    this.#fill(slot);
    return member ? {sandbox: member.sandbox, slot} : {slot};
  }

  /**
   * Like {@link take}, but when no member is ready and more members are being created for this
   * key than calls already wait for them, waits for the next one (created after the call
   * arrived or before it, never used by anyone). A member being created is always further along
   * than a cold container the caller would start now, and waiting adds no work to an engine that
   * is already the bottleneck. Resolves undefined (the caller then starts a cold container) when
   * nothing is being created, that creation fails, the pool closes, or `signal` aborts.
   */
  async acquire(job: ContainerJob, signal: AbortSignal): Promise<Sandbox | undefined> {
    if (signal.aborted) return undefined; // keep the members for calls that still want them
    const {sandbox: ready, slot} = this.#take(job);
    if (ready || this.#closed) return ready;
    if (!slot || slot.creating <= slot.waiters.length) return undefined;
    return await new Promise<Sandbox | undefined>((resolve) => {
      const waiter = (sandbox: Sandbox | undefined): void => {
        signal.removeEventListener('abort', onAbort);
        resolve(sandbox);
      };
      const onAbort = (): void => {
        const i = slot.waiters.indexOf(waiter);
        if (i >= 0) slot.waiters.splice(i, 1);
        resolve(undefined);
      };
      signal.addEventListener('abort', onAbort, {once: true});
      slot.waiters.push(waiter);
    });
  }

  /** The stdin bytes of a member for `job` (launcher header with `token`, then `job.stdin`). */
  launchInput(job: ContainerJob, token: string): Buffer {
    return encodeLaunch(token, job.argv, job.stdin);
  }

  #totals(): {count: number; memoryMb: number} {
    let count = 0;
    let memoryMb = 0;
    for (const s of this.#slots.values()) {
      count += s.ready.length + s.creating;
      memoryMb += (s.ready.length + s.creating) * s.template.limits.memoryMb;
    }
    return {count, memoryMb};
  }

  #fill(slot: Slot): void {
    if (this.#closed || performance.now() < slot.brokenUntil) return;
    while (slot.ready.length + slot.creating < this.#size) {
      const totals = this.#totals();
      if (totals.count >= this.#maxTotal || totals.memoryMb + slot.template.limits.memoryMb > this.#maxMemoryMb) return;
      slot.creating++;
      const creation: Promise<void> = this.#create(slot).finally(() => {
        slot.creating--;
        this.#inflight.delete(creation);
        // Waiters beyond the creations still in flight would wait for nothing: they go cold.
        while (slot.waiters.length > slot.creating) slot.waiters.pop()!(undefined);
        // A member handed to a waiter left the slot short: refill it (a live slot only).
        if (this.#slots.get(slot.key) === slot) this.#fill(slot);
      });
      this.#inflight.add(creation);
    }
  }

  async #create(slot: Slot): Promise<void> {
    let created: Docker.Container | undefined;
    try {
      const options = toCreateOptions(slot.template, {owner: this.#owner, command: launcherArgv(slot.template), pool: slot.key});
      const sandbox = await prepareSandbox(this.#docker, options, {
        image: slot.template.image, runtime: slot.template.runtime, signal: AbortSignal.timeout(30_000),
        onCreated: (c) => {
          created = c;
          this.#pending.add(c);
        },
      });
      try {
        await awaitReady(sandbox.socket);
      } catch (err) {
        await this.#discard(sandbox);
        throw err;
      }
      if (this.#closed || !this.#slots.has(slot.key)) {
        await this.#discard(sandbox);
        return;
      }
      const waiter = slot.waiters.shift();
      if (waiter) {
        this.#handed++;
        waiter(sandbox); // straight to a waiting call: fresh, never used
        return;
      }
      const member: Member = {sandbox, memoryMb: slot.template.limits.memoryMb, createdAt: performance.now(), exited: false};
      void sandbox.exited.then(() => {
        member.exited = true;
        const i = slot.ready.indexOf(member);
        if (i >= 0) {
          slot.ready.splice(i, 1);
          void this.#discard(sandbox);
        }
      });
      slot.ready.push(member);
    } catch (err) {
      if (this.#closed) {
        log.debug({err}, 'warm pool member creation stopped by close()');
        if (created) await this.#removeQuietly(created);
        return;
      }
      if (err instanceof ToolcellError && err.data.reason === 'mount-changed') {
        // Not a broken engine: a swapped mount source (perhaps a host attacker's, to push calls
        // cold for a minute). Keep the slot; its refill retries after a pause (at most 1/s).
        log.warn({err, profile: slot.template.profile}, 'warm pool member refused: a mount source changed; retrying in a second');
        if (created) await this.#removeQuietly(created);
        await new Promise((r) => setTimeout(r, MOUNT_CHANGED_RETRY_MS).unref());
        return;
      }
      slot.brokenUntil = performance.now() + 60_000;
      log.warn({err, image: slot.template.image, profile: slot.template.profile}, 'warm pool member could not be started; these calls run cold for a minute');
      if (created) await this.#removeQuietly(created);
    } finally {
      if (created) this.#pending.delete(created);
    }
  }

  #sweep(): void {
    const now = performance.now();
    for (const slot of this.#slots.values()) {
      slot.ready = slot.ready.filter((m) => {
        if (!m.exited && now - m.createdAt < this.#maxAgeMs) return true;
        void this.#discard(m.sandbox);
        return false;
      });
      if (now - slot.lastUsed > this.#idleKeyMs) {
        for (const m of slot.ready) void this.#discard(m.sandbox);
        if (slot.creating === 0) this.#slots.delete(slot.key);
        slot.ready = [];
      } else {
        this.#fill(slot);
      }
    }
  }

  async #discard(sandbox: Sandbox): Promise<void> {
    await this.#removeQuietly(sandbox.container);
    sandbox.release();
  }

  async #removeQuietly(container: Docker.Container): Promise<void> {
    try {
      await container.remove({force: true, v: true, abortSignal: AbortSignal.timeout(REMOVE_TIMEOUT_MS)} as Docker.ContainerRemoveOptions);
      uidLeases.releaseContainer(container.id); // uid lease: the container is gone
    } catch (err) {
      if (isNoSuchContainer(err)) uidLeases.releaseAfterRemoveError(container.id, err, (id) => this.#docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(5_000)}).then(() => false, (e: unknown) => (e as {statusCode?: number})?.statusCode === 404));
      else log.warn({err, containerId: container.id}, 'warm pool member remove failed; the reaper will retry');
    }
  }

  /** Stops refilling and removes every member, ready or being created. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const slot of this.#slots.values()) for (const waiter of slot.waiters.splice(0)) waiter(undefined);
    const members = [...this.#slots.values()].flatMap((s) => s.ready.splice(0));
    this.#slots.clear();
    await Promise.all([
      ...members.map((m) => this.#discard(m.sandbox)),
      ...[...this.#pending].map((c) => this.#removeQuietly(c)),
      ...this.#inflight,
    ]);
  }
}
