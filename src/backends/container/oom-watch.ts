/**
 * Witnesses of OOM kills besides `State.OOMKilled`: the engine's `oom` events for one backend's
 * containers ({@link OomWatch}) and the kernel log's `oom-kill:` records ({@link kernelLoggedOom}).
 */
import {closeSync, constants, openSync, readSync} from 'node:fs';
import type {Readable} from 'node:stream';
import type Docker from 'dockerode';
import {log as rootLog} from '../../log.ts';
import {OWNER_LABEL} from './host-config.ts';

const log = rootLog.child({component: 'container-oom-watch'});

/** Ids seen are kept this long, in ms (a call reads its own id within seconds). */
const KEEP_MS = 120_000;

/**
 * Watches the engine's event stream for `oom` events of one backend's containers (label
 * `toolcell.owner`), as a second source for `outOfMemory`.
 *
 * Why: `State.OOMKilled` from inspect is not always set. Seen here under runsc (Docker 20.10,
 * runsc 2022-12): of 32 memory bombs with 4 in flight, 2 to 4 exited 137 with
 * `OOMKilled: false`, while the engine emitted an `oom` event for every one of them, and
 * re-inspecting later did not help. Source: Docker Engine API v1.41, `GET /events`
 * (container action `oom`).
 *
 * The stream's socket is unref'd, so it never keeps the process alive; it is restarted on
 * demand after an error. Where the engine cannot be reached, `saw` simply answers false.
 */
export class OomWatch {
  readonly #docker: Docker;
  readonly #owner: string;
  readonly #seen = new Map<string, number>();
  readonly #waiters = new Map<string, Set<() => void>>();
  #stream: Readable | undefined;
  #starting: Promise<void> | undefined;
  #closed = false;

  constructor(docker: Docker, owner: string) {
    this.#docker = docker;
    this.#owner = owner;
  }

  /** Starts the event subscription if it is not running; never throws. */
  ensure(): Promise<void> {
    if (this.#stream || this.#closed) return Promise.resolve();
    this.#starting ??= (async () => {
      try {
        // No abortSignal: on this long-lived request it would also cut the stream later on.
        const request = this.#docker.getEvents({
          filters: {type: ['container'], event: ['oom'], label: [`${OWNER_LABEL}=${this.#owner}`]},
        }) as unknown as Promise<Readable & {socket?: {unref?: () => void}}>;
        let timer: NodeJS.Timeout | undefined;
        const stream = await Promise.race([
          request,
          new Promise<undefined>((resolve) => {
            timer = setTimeout(() => resolve(undefined), 5_000);
            timer.unref();
          }),
        ]).finally(() => clearTimeout(timer));
        if (!stream || this.#closed) {
          stream?.destroy();
          if (!stream) void request.then((late) => late.destroy(), () => undefined);
          return;
        }
        stream.socket?.unref?.();
        let rest = '';
        stream.on('data', (chunk: Buffer) => {
          const lines = (rest + chunk.toString('utf8')).split('\n');
          rest = lines.pop() ?? '';
          for (const line of lines) {
            if (!line.trim()) continue;
            try {
              this.#record((JSON.parse(line) as {id?: string; Actor?: {ID?: string}}).Actor?.ID ?? '');
            } catch { /* not JSON: ignore */ }
          }
        });
        const reset = () => {
          if (this.#stream === stream) this.#stream = undefined;
        };
        stream.once('error', reset);
        stream.once('end', reset);
        stream.once('close', reset);
        this.#stream = stream;
      } catch (err) {
        log.debug({err}, 'oom event subscription failed; OOMKilled from inspect only');
      } finally {
        this.#starting = undefined;
      }
    })();
    return this.#starting;
  }

  #record(id: string): void {
    if (!/^[0-9a-f]{64}$/.test(id)) return;
    const now = performance.now();
    this.#seen.set(id, now);
    for (const [k, t] of this.#seen) if (now - t > KEEP_MS) this.#seen.delete(k);
    for (const wake of this.#waiters.get(id) ?? []) wake();
  }

  /** True once an `oom` event was seen for container `id`, waiting up to `waitMs` for it. */
  async saw(id: string, waitMs = 0): Promise<boolean> {
    if (this.#seen.has(id)) return true;
    if (waitMs <= 0 || !this.#stream) return false;
    await new Promise<void>((resolve) => {
      const set = this.#waiters.get(id) ?? new Set();
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) this.#waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      set.add(done);
      this.#waiters.set(id, set);
    });
    return this.#seen.has(id);
  }

  /** Ends the subscription. */
  close(): void {
    this.#closed = true;
    this.#stream?.destroy();
    this.#stream = undefined;
  }
}

/**
 * Whether the kernel log holds an OOM kill in the memory cgroup of container `id`: a record of
 * the kernel facility (not one written by a user program) starting `oom-kill:` and naming the
 * id (`oom_memcg=/docker/ID`, `task_memcg=…`, or the systemd scope `docker-ID.scope`). A third
 * witness, besides `OOMKilled` and the engine's `oom` event, that both were seen to miss on a
 * loaded machine. Reads `/dev/kmsg` without blocking (kernel Documentation/ABI/testing/dev-kmsg);
 * answers false where it cannot be read (not root, not the engine's host, dmesg_restrict).
 * Records older than the kernel's ring buffer are gone, so call it right after the exit.
 */
export function kernelLoggedOom(id: string, path = '/dev/kmsg'): boolean {
  if (!/^[0-9a-f]{64}$/.test(id)) return false;
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  const buf = Buffer.alloc(8192);
  try {
    for (let i = 0; i < 100_000; i++) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        // EPIPE: records were overwritten while reading; go on with the next one. EAGAIN: the end.
        if ((err as NodeJS.ErrnoException).code === 'EPIPE') continue;
        return false;
      }
      if (n <= 0) return false;
      const record = buf.toString('latin1', 0, n);
      const semi = record.indexOf(';');
      const prio = Number(record.slice(0, record.indexOf(',')));
      if (semi < 0 || !(prio >= 0 && prio < 8)) continue; // facility 0 (kernel) only
      const message = record.slice(semi + 1);
      if (message.startsWith('oom-kill:') && message.includes(id)) return true;
    }
    return false;
  } finally {
    closeSync(fd);
  }
}
