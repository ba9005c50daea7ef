/**
 * Pre-initialized warm pool of hosted MCP servers: members started, handshaken and listed ahead
 * of demand, each waiting for exactly one call, handed to one call and removed after it.
 */
import {createHash} from 'node:crypto';
import {log as rootLog} from '../../log.ts';
import type {ContainerJob, ServerJob} from '../backend.ts';
import {START_TIMEOUT_MS} from '../container/container-backend.ts';
import {countSlots, type PoolOptions} from '../container/pool.ts';
import {freezeListing} from './frozen-listing.ts';
import type {SessionHandlers} from './mcp-stdio-session.ts';
import {ServerSandbox, type ServerSandboxDeps} from './server-sandbox.ts';

const log = rootLog.child({component: 'server-pool'});

/**
 * After a member failed to start or to answer its handshake, or died unused while it waited, its
 * key is not refilled for this long, in ms; doubled after each further such failure in a row, up
 * to {@link MAX_BROKEN_RETRY_MS}; reset when a live member is handed to a call.
 */
const BROKEN_RETRY_MS = 5_000;
/** Longest refill back-off of a key whose members keep failing, in ms. */
const MAX_BROKEN_RETRY_MS = 60_000;

/** A ready member: started, initialized, its `tools/list` answered. */
export interface ReadyServer {
  server: ServerSandbox;
  /** The `tools/list` it answered during its handshake (compared with the pins by the call). */
  listed: Record<string, unknown>[];
  /** The session's handlers: the call that takes the member sets its own. */
  handlers: SessionHandlers;
}

interface Member extends ReadyServer {
  createdAt: number;
  dead: boolean;
}

interface Slot {
  key: string;
  template: ContainerJob;
  /**
   * The pin check of the job that registered the slot: run once on each new member's (frozen)
   * listing, off the call's path, so that the pin hashes a call compares are already computed
   * (policy/pins.ts keeps the hashes of frozen entries). Its verdict is not used: every call still
   * checks the member's listing against its own pins.
   */
  prehash: ServerJob['verifyListing'];
  ready: Member[];
  creating: number;
  brokenUntil: number;
  /** Members that failed (start, handshake, or died unused) in a row: sets the back-off. */
  failures: number;
  /** Calls waiting for a member being created ({@link ServerPool.take}), first come first served. */
  waiters: Array<(member: Member | undefined) => void>;
}

/**
 * The settings key of a server job: SHA-256 of its sandbox settings without the job id (image
 * ID, argv, limits, grants, runtime). Two packages with the same settings share members: a
 * member is pinned to nothing but its settings; each call compares the member's listing with
 * its own pins.
 */
export function serverPoolKey(sandbox: ContainerJob): string {
  // The egress context names the call (its id, principal): not a setting. The grant is (in `network`).
  const {id: _id, egress: _egress, ...settings} = sandbox;
  return createHash('sha256').update(JSON.stringify(settings)).digest('hex').slice(0, 32);
}

/**
 * Whether a server's sandbox settings may be pre-initialized: a member runs the server's code
 * before any call exists (for up to start + handshake + `maxAgeMs`, unaudited, attributed to no
 * principal), so only settings that grant nothing outside the sandbox are pooled: no read-write
 * mount and no egress grant: a member's proxy session could only be bound to a call after its
 * server already ran (and could have connected) unattributed, so egress servers always start cold,
 * their session bound to the call from the first instruction. Others always run cold, fresh per call.
 * Pure.
 * Does NOT: stop a pooled member from using its CPU, memory and pids limits while it waits.
 */
export function poolable(sandbox: ContainerJob): boolean {
  return sandbox.mounts.every((m) => m.readOnly) && (sandbox.network as string) === 'none';
}

/**
 * Keeps `size` members ready per settings key (container/pool.ts `PoolOptions`: `size`,
 * `maxTotal`, `maxMemoryMb` as the sum of members' `memoryMb`, `maxAgeMs`). A member is created
 * exactly as a cold call's server (same image ID, floor, limits, uid lease, labels but the job
 * id `pool`), then initialized and listed within `handshakeTimeoutMs`; the deadline keeper
 * removes it if this process dies while it waits. {@link acquire} hands a ready member to
 * one call (the caller removes it after that call); the caller starts its replacement with
 * {@link refill} once the call is done, so that creating it does not compete with the call for
 * the engine and the CPUs; a member whose
 * server ended, broke the protocol, or is older than `maxAgeMs` is removed, never handed out.
 * What a member's server writes while it waits (handshake included) counts against its
 * `outputBytes` (past it the member is dropped); the call then gets `outputBytes` of its own, as
 * a cold call does after its handshake.
 * Settings that grant a writable mount (not {@link poolable}) are never registered: they run cold.
 * `alsoLive` counts containers that are not members but still live (calls' servers being removed)
 * against `maxTotal` and `maxMemoryMb`.
 * A call that finds no member ready waits ({@link take}) for one being created, if one is on its
 * way for it (one waiting call per member being created); otherwise it runs cold.
 * Does NOT: share a member between calls, or start extra members for waiting calls.
 */
export class ServerPool {
  readonly #deps: ServerSandboxDeps;
  readonly #size: number;
  readonly #maxTotal: number;
  readonly #maxMemoryMb: number;
  readonly #maxAgeMs: number;
  readonly #handshakeMs: number;
  readonly #alsoLive: () => {count: number; memoryMb: number};
  readonly #slots = new Map<string, Slot>();
  readonly #closing = new AbortController();
  readonly #pending = new Set<Promise<void>>();
  /** Members ever started (created), for stats. */
  #started = 0;

  constructor(deps: ServerSandboxDeps, options: PoolOptions & {handshakeTimeoutMs: number; alsoLive?: () => {count: number; memoryMb: number}}) {
    this.#deps = deps;
    this.#size = options.size ?? 2;
    this.#maxTotal = options.maxTotal ?? 8;
    this.#maxMemoryMb = options.maxMemoryMb ?? 2_048;
    this.#maxAgeMs = options.maxAgeMs ?? 120_000;
    this.#handshakeMs = options.handshakeTimeoutMs;
    this.#alsoLive = options.alsoLive ?? (() => ({count: 0, memoryMb: 0}));
  }

  /** Keeps members ready for jobs like `job` (same sandbox settings), unless they are not {@link poolable}. */
  register(job: ServerJob): void {
    if (!poolable(job.sandbox)) {
      log.debug({package: job.packageName}, 'hosted server not pre-initialized: its profile grants a writable mount (or network); its calls run cold');
      return;
    }
    const key = serverPoolKey(job.sandbox);
    if (!this.#slots.has(key)) this.#slots.set(key, {key, template: {...job.sandbox, id: 'pool'}, prehash: job.verifyListing, ready: [], creating: 0, brokenUntil: 0, failures: 0, waiters: []});
    this.#fill(this.#slots.get(key)!);
  }

  /** Members ready and being created, and members started in all (`started`, every create attempt). */
  stats(): {ready: number; creating: number; keys: number; started: number} {
    return {...countSlots(this.#slots.values()), keys: this.#slots.size, started: this.#started};
  }

  /**
   * A ready member for `job`'s settings, taken out of the pool (the caller owns it and removes it
   * after its one call), or undefined. Starts no replacement: the caller calls {@link refill}
   * after the call.
   */
  acquire(job: ServerJob): ReadyServer | undefined {
    const slot = this.#slots.get(serverPoolKey(job.sandbox));
    if (!slot) return undefined;
    let member: Member | undefined;
    while ((member = slot.ready.shift()) !== undefined) {
      const died = member.dead || member.server.session.failure !== undefined;
      if (!died && performance.now() - member.createdAt < this.#maxAgeMs) break;
      // A server that dies unused would otherwise cost each call a cold start plus refills that die again.
      if (died) this.#backOff(slot);
      this.#discard(member);
    }
    if (member) slot.failures = 0;
    return member;
  }

  /**
   * {@link acquire}, or, when no member is ready but more are being created for `job`'s settings
   * than calls already wait for, the next of those once it is ready (a member on its way is
   * ready sooner than a cold server started now). Resolves undefined when there is none to wait
   * for, when the member being waited for failed, or when `signal` aborts.
   */
  async take(job: ServerJob, signal: AbortSignal): Promise<ReadyServer | undefined> {
    const ready = this.acquire(job);
    if (ready || signal.aborted) return ready;
    const slot = this.#slots.get(serverPoolKey(job.sandbox));
    if (!slot || slot.creating <= slot.waiters.length) return undefined;
    const member = await new Promise<Member | undefined>((resolve) => {
      const waiter = (m: Member | undefined) => {
        signal.removeEventListener('abort', onAbort);
        resolve(m);
      };
      const onAbort = () => {
        const i = slot.waiters.indexOf(waiter);
        if (i >= 0) slot.waiters.splice(i, 1);
        resolve(undefined);
      };
      slot.waiters.push(waiter);
      signal.addEventListener('abort', onAbort, {once: true});
    });
    if (member) slot.failures = 0;
    return member;
  }

  /** Starts members for `job`'s settings up to `size` (within the bounds and back-off); no-op for settings never registered. */
  refill(job: ServerJob): void {
    const slot = this.#slots.get(serverPoolKey(job.sandbox));
    if (slot) this.#fill(slot);
  }

  /** {@link refill} for every registered settings key (e.g. once a live container is gone and the bounds have room). */
  refillAll(): void {
    for (const slot of this.#slots.values()) this.#fill(slot);
  }

  /** No refill of `slot` for the current back-off (doubling per failure in a row). */
  #backOff(slot: Slot): void {
    slot.failures++;
    slot.brokenUntil = performance.now() + Math.min(MAX_BROKEN_RETRY_MS, BROKEN_RETRY_MS * 2 ** Math.min(slot.failures - 1, 10));
  }

  #reservedMb(): {count: number; mb: number} {
    const other = this.#alsoLive();
    let count = other.count;
    let mb = other.memoryMb;
    for (const s of this.#slots.values()) {
      const n = s.ready.length + s.creating;
      count += n;
      mb += n * s.template.limits.memoryMb;
    }
    return {count, mb};
  }

  #fill(slot: Slot): void {
    while (!this.#closing.signal.aborted && performance.now() >= slot.brokenUntil && slot.ready.length + slot.creating < this.#size) {
      const reserved = this.#reservedMb();
      if (reserved.count >= this.#maxTotal || reserved.mb + slot.template.limits.memoryMb > this.#maxMemoryMb) return;
      slot.creating++;
      this.#started++;
      const p: Promise<void> = this.#create(slot).finally(() => {
        slot.creating--;
        this.#pending.delete(p);
      });
      this.#pending.add(p);
    }
  }

  async #create(slot: Slot): Promise<void> {
    const handlers: SessionHandlers = {};
    let server: ServerSandbox | undefined;
    const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(START_TIMEOUT_MS + this.#handshakeMs)]);
    try {
      server = await ServerSandbox.start(this.#deps, slot.template, {signal, deadlineAt: Date.now() + START_TIMEOUT_MS + this.#handshakeMs + this.#maxAgeMs, handlers});
      await server.initialize(signal);
      // Frozen: the listing a call checks is exactly the one hashed here, ahead of the call.
      const listed = freezeListing(await server.list('tools/list', 'tools', signal));
      try {
        slot.prehash(listed);
      } catch (err) {
        log.debug({err, key: slot.key}, 'pre-hashing a pool member\'s listing failed; its call hashes it');
      }
      if (this.#closing.signal.aborted) throw new Error('pool closed');
      const member: Member = {server, listed, handlers, createdAt: performance.now(), dead: false};
      // While it waits, a member that breaks is marked and removed at the next acquire.
      handlers.onFailure = () => {
        member.dead = true;
      };
      if (server.session.failure !== undefined) throw new Error('the server ended while waiting');
      server = undefined;
      // A call waiting for it takes it at once; otherwise it waits in the pool.
      const waiter = slot.waiters.shift();
      if (waiter) waiter(member);
      else slot.ready.push(member);
    } catch (err) {
      if (!this.#closing.signal.aborted) {
        this.#backOff(slot);
        log.debug({err, key: slot.key}, 'hosted server pool member failed to start; calls run cold for a while');
      }
      // The call waiting for this member starts its own server.
      slot.waiters.shift()?.(undefined);
    } finally {
      if (server) await server.remove(5_000);
    }
  }

  #discard(member: Member): void {
    const p: Promise<void> = member.server.remove(5_000).finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  /** Stops filling, removes every member (waiting for those being created). Idempotent. */
  async close(): Promise<void> {
    this.#closing.abort();
    for (const slot of this.#slots.values()) for (const waiter of slot.waiters.splice(0)) waiter(undefined);
    for (const slot of this.#slots.values()) {
      for (const member of slot.ready.splice(0)) this.#discard(member);
    }
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    for (const slot of this.#slots.values()) {
      for (const member of slot.ready.splice(0)) await member.server.remove(5_000);
    }
  }
}
