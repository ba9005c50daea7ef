/**
 * Container teardown: the one place where a call's container is removed, with the bounded
 * retry of failed removals and the watch for runtime shims a removed container left behind
 * (issue 13 item 1). `ContainerBackend.run` fills in a {@link Teardown} as the call goes and
 * hands it to {@link ContainerRemover.finish} exactly once, in its `finally`.
 */
import type Docker from 'dockerode';
import {log as rootLog} from '../../log.ts';
import type {DeadlineKeeper} from './deadline-keeper.ts';
import {isNoSuchContainer} from './docker-errors.ts';
import {uidLeases} from './uid-leases.ts';
import type {Provenance} from './provenance.ts';
import {REMOVE_TIMEOUT_MS, forceRemove} from './reaper.ts';
import {killStuckRuntime, reapOrphanShims} from './shims.ts';
import type {Sandbox} from './sandbox.ts';

const log = rootLog.child({component: 'container-teardown'});

/** Most ids remembered for orphan-shim reaping after a failed removal or start (oldest dropped first). */
const EVER_LEAKED_MAX = 1_024;

/** How one call's container is to be removed; `run` fills it in, {@link ContainerRemover.finish} acts on it. */
export interface Teardown {
  /** The call's container, once the engine created it. */
  container?: Docker.Container;
  /** Its attach connection and wait request (released after removal). */
  sandbox?: Sandbox;
  /** Set when the call ended while its container was still being created or started. */
  preparing?: Promise<Sandbox>;
  /** Bound on the removal, in ms (the call's result is built after it). */
  timeoutMs: number;
  /** The container's start failed: look for runtime shims it left (a failed runsc start does). */
  watchOrphans: boolean;
}

/** A new teardown: removal bounded by `REMOVE_TIMEOUT_MS`. */
export function newTeardown(): Teardown {
  return {timeoutMs: REMOVE_TIMEOUT_MS, watchOrphans: false};
}

/**
 * Removes the containers of one backend: each call's once ({@link finish}), warm-pool members
 * the pool discards unused ({@link destroy}, called by pool.ts), failed removals
 * retried in the background and then again at {@link close}, orphaned runtime shims of
 * containers whose removal or start failed ended (ids kept in a bounded set). Every removal
 * releases the container from the deadline keeper and drops its provenance record.
 */
export class ContainerRemover {
  /** True only when the engine answers 404 for the container (a 409 "removal in progress" is not gone). */
  readonly #isGone = (id: string): Promise<boolean> => this.#docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(5_000)}).then(() => false, (e: unknown) => (e as {statusCode?: number})?.statusCode === 404);
  readonly #docker: Docker;
  readonly #provenance: Provenance;
  readonly #keeper: DeadlineKeeper;
  /** Containers of calls in flight (their removal included), by id. */
  readonly #live = new Map<string, Docker.Container>();
  /** Ids whose removal failed or timed out; retried in the background and by close(). */
  readonly #leaked = new Set<string>();
  /** Ids that ever failed to be removed or started, for orphan-shim reaping (at most EVER_LEAKED_MAX). */
  readonly #everLeaked = new Set<string>();
  #retrying: Promise<void> | undefined;

  constructor(docker: Docker, provenance: Provenance, keeper: DeadlineKeeper) {
    this.#docker = docker;
    this.#provenance = provenance;
    this.#keeper = keeper;
  }

  /** Counts a container as live (close() removes it) until its teardown removed it. */
  track(container: Docker.Container): void {
    this.#live.set(container.id, container);
  }

  /** True when no removal failed so far (or all failed ones were retried successfully). */
  get clean(): boolean {
    return this.#leaked.size === 0;
  }

  /** Acts on a call's teardown; the only removal of a call's container. Never throws. */
  async finish(t: Teardown): Promise<void> {
    if (t.preparing) {
      // The call ended while the container was being created or started: remove it as soon as the
      // engine has it (the create request is not aborted), off the call's path.
      void t.preparing.then(
        (s) => this.destroy(s.container, REMOVE_TIMEOUT_MS).finally(() => s.release()),
        () => (t.container ? this.destroy(t.container, REMOVE_TIMEOUT_MS) : undefined),
      );
    }
    const container = t.container;
    if (!container) return;
    if (t.watchOrphans) this.#remember(container.id); // keep its record until its shims were looked for
    await this.destroy(container, t.timeoutMs);
    t.sandbox?.release();
    this.#live.delete(container.id);
    // A failed runsc start can leave its shim and sandbox processes behind (MACHINE.md).
    if (t.watchOrphans) this.#watchForOrphans(container.id);
  }

  /** Kills and removes a container, bounded by `timeoutMs`; on failure it is remembered and retried. Never throws. */
  async destroy(container: Docker.Container, timeoutMs: number): Promise<void> {
    try {
      await forceRemove(container, timeoutMs);
      this.#gone(container.id);
    } catch (err) {
      if (isNoSuchContainer(err)) {
        this.#gone(container.id, err);
        return;
      }
      this.#leaked.add(container.id);
      log.warn({err, containerId: container.id}, 'container remove failed; reaper will retry');
      void this.#retryLeaked();
    }
  }

  /**
   * The container was removed, or the engine says it is (404), or its removal is already in
   * progress (409, `err`): then its uid lease is kept until the engine answers 404.
   */
  #gone(id: string, err?: unknown): void {
    this.#leaked.delete(id);
    if (err === undefined) uidLeases.releaseContainer(id); // uid lease: the container is gone
    else uidLeases.releaseAfterRemoveError(id, err, this.#isGone);
    this.#keeper.release(id);
    if (!this.#everLeaked.has(id)) void this.#provenance.forget(id);
  }

  #remember(id: string): void {
    this.#everLeaked.delete(id);
    this.#everLeaked.add(id);
    for (const old of this.#everLeaked) {
      if (this.#everLeaked.size <= EVER_LEAKED_MAX) break;
      this.#everLeaked.delete(old);
    }
  }

  /** Background retry of failed removals, then of their orphaned runtime processes. */
  #retryLeaked(): Promise<void> {
    this.#retrying ??= (async () => {
      await new Promise((r) => setTimeout(r, 2_000).unref());
      for (const id of [...this.#leaked]) {
        for (let attempt = 0; attempt < 2 && this.#leaked.has(id); attempt++) {
          try {
            await forceRemove(this.#docker.getContainer(id), REMOVE_TIMEOUT_MS);
            this.#leaked.delete(id);
            uidLeases.releaseContainer(id);
          } catch (err) {
            if (isNoSuchContainer(err)) {
              this.#leaked.delete(id);
              uidLeases.releaseAfterRemoveError(id, err, this.#isGone);
            }
            // A removal that hangs waits for a runtime process that hangs (runsc start): end those, then retry once.
            else if (attempt === 0) await killStuckRuntime(id);
          }
        }
      }
      await reapOrphanShims(this.#docker, {ids: this.#leakedAndGone()}).catch(() => undefined);
    })().finally(() => {
      this.#retrying = undefined;
    });
    return this.#retrying;
  }

  /** Looks for orphaned shims of a removed container shortly after its failed start. */
  #watchForOrphans(id: string): void {
    setTimeout(() => {
      void reapOrphanShims(this.#docker, {ids: [id]}).catch(() => undefined).then(() => this.#provenance.forget(id));
    }, 1_000).unref();
  }

  #leakedAndGone(): string[] {
    for (const id of this.#leaked) this.#remember(id);
    return [...this.#everLeaked];
  }

  /** Removes every live container (those of calls still in flight too); orphaned shims are {@link reapShims}'s. */
  async close(): Promise<void> {
    await Promise.all([...this.#live.values()].map((c) => this.destroy(c, REMOVE_TIMEOUT_MS)));
  }

  /** Ends orphaned runtime shims of containers whose removal or start failed. Never throws. */
  async reapShims(): Promise<void> {
    await reapOrphanShims(this.#docker, {ids: this.#leakedAndGone()}).catch(() => undefined);
  }
}
