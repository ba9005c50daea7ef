/**
 * Warm pool of containers (issue 4): containers created and started ahead of demand, each
 * waiting for the one job it will run, handed to exactly one call and removed after it.
 *
 * A member is created with exactly the create options of a cold container for the same job
 * (`toCreateOptions`: same image, user, env, workdir, HostConfig, labels but the job id), except
 * that its command is {@link launcherArgv} (launcher.ts): a fixed script run by a non-dumpable
 * static shell, `/opt/toolcell/sh`, that reads a per-call token and the job's argv from stdin, runs the argv as its child (same limits, same init as
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
 * than the pool degrades to fresh members and cold starts, never to reuse). Images without the
 * launcher (or with a readable one) fail to start a member; their key is then marked unpoolable
 * for a while and runs cold. Jobs the launcher cannot run exactly as cold (`launcherFits`: runsc,
 * a bare argv[0], env naming a variable the shell rewrites) always run cold.
 */
import {createHash} from 'node:crypto';
import type Docker from 'dockerode';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import type {ContainerJob} from '../backend.ts';
import {toCreateOptions} from './host-config.ts';
import {awaitReady, encodeLaunch, launcherArgv, launcherFits} from './launcher.ts';
import {REMOVE_TIMEOUT_MS} from './reaper.ts';
import type {ContainerRemover} from './teardown.ts';
import type {Provenance} from './provenance.ts';
import {prepareSandbox, type Sandbox} from './sandbox.ts';

const log = rootLog.child({component: 'container-pool'});

/** Pause before a slot whose member was refused for a changed mount source tries again, in ms (not marked broken: see `#create`). */
const MOUNT_CHANGED_RETRY_MS = 1_000;

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
  /** Longest argv+stdin header the launcher is given, in bytes; larger jobs run cold (default 65 536: the shell reads it byte by byte). */
  maxHeaderBytes?: number;
}

/** The settings hash of a job: SHA-256 of the create options of its pool member (owner-independent). */
export function poolKey(job: ContainerJob): string {
  const options = toCreateOptions(job, {owner: '', command: launcherArgv(), pool: ''});
  return createHash('sha256').update(JSON.stringify(options)).digest('hex').slice(0, 32);
}

interface Member {
  sandbox: Sandbox;
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
/**
 * Members ready and members being created, summed over a pool's slots (the container pool's
 * and the hosted-server pool's `stats()`).
 */
export function countSlots(slots: Iterable<{readonly ready: readonly unknown[]; readonly creating: number}>): {ready: number; creating: number} {
  let ready = 0;
  let creating = 0;
  for (const s of slots) {
    ready += s.ready.length;
    creating += s.creating;
  }
  return {ready, creating};
}

export class ContainerPool {
  readonly #docker: Docker;
  readonly #owner: string;
  readonly #provenance: Provenance;
  readonly #remover: ContainerRemover;
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

  /**
   * @param remover removes members that are never handed to a call (the backend's teardown.ts,
   *   so that every removal, with its retry and bookkeeping, happens in one place).
   */
  constructor(docker: Docker, owner: string, provenance: Provenance, remover: ContainerRemover, options: PoolOptions) {
    this.#docker = docker;
    this.#owner = owner;
    this.#provenance = provenance;
    this.#remover = remover;
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
    return {...countSlots(this.#slots.values()), keys: this.#slots.size, handed: this.#handed};
  }

  /** Starts keeping members ready for jobs with the settings of `template`. */
  register(template: ContainerJob): Slot | undefined {
    if (this.#closed || this.#size === 0) return undefined;
    if (!launcherFits({...template, argv: ['/bin/true']}, this.#maxHeaderBytes)) return undefined;
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
   * with the slot of the job's settings; `sandbox` undefined when none is ready (aged out,
   * exited), `slot` undefined when the job cannot use the pool (settings, launcher, argv too
   * large). Schedules a refill.
   */
  #take(job: ContainerJob): {sandbox?: Sandbox; slot?: Slot} {
    if (this.#closed || this.#size === 0) return {};
    if (!launcherFits(job, this.#maxHeaderBytes)) return {};
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
   * A ready member for `job` (see `#take`); when none is ready and more members are being created for this
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
      const base = toCreateOptions(slot.template, {owner: this.#owner, command: launcherArgv(), pool: slot.key});
      const claim = this.#provenance.claim(this.#owner);
      const options = {...base, name: claim.name, Labels: {...base.Labels, ...claim.labels}};
      const sandbox = await prepareSandbox(this.#docker, options, {
        image: slot.template.image, runtime: slot.template.runtime, signal: AbortSignal.timeout(30_000),
        onCreated: (c) => {
          created = c;
          this.#provenance.record(c.id);
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
      const member: Member = {sandbox, createdAt: performance.now(), exited: false};
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

  /** Removes a member's container (teardown.ts: bounded, retried on failure). Never throws. */
  async #removeQuietly(container: Docker.Container): Promise<void> {
    await this.#remover.destroy(container, REMOVE_TIMEOUT_MS);
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
