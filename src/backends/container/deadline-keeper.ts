/**
 * The server's side of the deadline keeper (keeper.ts): tells one detached host process which
 * containers must be gone by when, so that no container outlives its deadline whatever happens
 * to the server (issue 11 item 4).
 */
import {spawn, type ChildProcess} from 'node:child_process';
import type Docker from 'dockerode';
import {fileURLToPath} from 'node:url';
import {log as rootLog} from '../../log.ts';

const log = rootLog.child({component: 'container-deadline-keeper'});

/** The keeper acts this long after a deadline, in ms, so that a live server's own stop and removal go first. */
export const KEEPER_GRACE_MS = 2_000;

/** keeper.js next to this module when built, keeper.ts when run from source. */
const KEEPER = fileURLToPath(new URL(`./keeper${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));

/**
 * Starts the keeper process on first use (detached, its own session, stdin a pipe, no other
 * stdio; neither the process nor the pipe keeps this process alive; one per engine, shared by
 * the backends of this process) and sends it `watch` and `release` lines. When the keeper died, the next `watch` starts a new one and hands it every
 * container still watched. If it cannot be started, calls run as before, without the guarantee
 * after a server crash (logged once at WARN).
 * The keeper reaches the same engine as `docker` when that client names a unix socket or a plain
 * host:port; otherwise (TLS or SSH clients) it uses the environment's engine (`DOCKER_HOST`).
 * Does NOT: stop the tool at its deadline while the server lives (the backend does that); the
 * keeper acts {@link KEEPER_GRACE_MS} later, and only removes containers named to it.
 */
/** One keeper process per engine per toolcell process, shared by its backends. */
interface Shared {
  child: ChildProcess | undefined;
  members: Set<DeadlineKeeper>;
}
const shared = new Map<string, Shared>();

export class DeadlineKeeper {
  readonly #engine: Record<string, string>;
  readonly #shared: Shared;
  readonly #watched = new Map<string, number>();
  #warned = false;
  #closed = false;

  /** @param docker the backend's client, whose engine the keeper should reach (see the class comment). */
  constructor(docker?: Docker) {
    const modem = (docker?.modem ?? {}) as {socketPath?: unknown; host?: unknown; port?: unknown; protocol?: unknown; ca?: unknown; cert?: unknown};
    this.#engine = {};
    if (typeof modem.socketPath === 'string') this.#engine.TOOLCELL_KEEPER_SOCKET = modem.socketPath;
    else if (typeof modem.host === 'string' && (modem.protocol === 'http' || modem.protocol === undefined) && !modem.ca && !modem.cert) {
      this.#engine.TOOLCELL_KEEPER_HOST = modem.host;
      this.#engine.TOOLCELL_KEEPER_PORT = String(modem.port ?? 2375);
    }
    const key = JSON.stringify(this.#engine);
    let entry = shared.get(key);
    if (!entry) {
      entry = {child: undefined, members: new Set()};
      shared.set(key, entry);
    }
    this.#shared = entry;
    entry.members.add(this);
  }

  /** The shared keeper process, started (again) when needed; a new one is told every member's containers. */
  #ensure(): ChildProcess | undefined {
    const current = this.#shared.child;
    if (current && current.exitCode === null && current.signalCode === null && current.stdin?.writable) return current;
    try {
      const child = spawn(process.execPath, [KEEPER], {detached: true, stdio: ['pipe', 'ignore', 'ignore'], env: {...process.env, ...this.#engine}});
      child.on('error', (err) => this.#warn(err));
      child.stdin!.on('error', () => undefined);
      child.unref();
      (child.stdin as unknown as {unref?: () => void}).unref?.();
      this.#shared.child = child;
      for (const member of this.#shared.members) {
        for (const [id, deadline] of member.#watched) child.stdin!.write(`watch ${id} ${deadline}\n`);
      }
      return child;
    } catch (err) {
      this.#warn(err);
      return undefined;
    }
  }

  #warn(err: unknown): void {
    if (this.#warned) return;
    this.#warned = true;
    log.warn({err}, 'deadline keeper could not be started: a container may outlive its deadline if this server dies');
  }

  /** Container `id` must be gone by `deadline` (ms since the epoch) + {@link KEEPER_GRACE_MS}, even if this process dies. */
  watch(id: string, deadline: number): void {
    if (this.#closed || !/^[0-9a-f]{64}$/.test(id)) return;
    const at = Math.ceil(deadline + KEEPER_GRACE_MS);
    this.#watched.set(id, at);
    this.#ensure()?.stdin?.write(`watch ${id} ${at}\n`);
  }

  /** Container `id` is gone (or handled by the backend): the keeper forgets it. */
  release(id: string): void {
    if (!this.#watched.delete(id)) return;
    const child = this.#shared.child;
    if (child?.stdin?.writable) child.stdin.write(`release ${id}\n`);
  }

  /** Forgets every container (all removed, e.g. by the reaper at close); the keeper then has nothing to do. */
  releaseAll(): void {
    for (const id of [...this.#watched.keys()]) this.release(id);
  }

  /**
   * This backend is done. When it was the last one using the keeper, ends the keeper's input: it
   * enforces what it still holds (containers not released), then exits. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#shared.members.delete(this);
    if (this.#shared.members.size === 0) {
      this.#shared.child?.stdin?.end();
      this.#shared.child = undefined;
    }
  }
}
