import {randomUUID} from 'node:crypto';
import {hostname} from 'node:os';
import Docker from 'dockerode';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import type {Backend, ContainerJob, ExecutionResult} from '../backend.ts';
import {readPidsState} from './cgroup.ts';
import {dockerMessage, isNoSuchContainer, isUnreachable, toBackendError} from './docker-errors.ts';
import {toCreateOptions} from './host-config.ts';
import {OomWatch} from './oom-watch.ts';
import {OutputCollector} from './output.ts';
import {ContainerPool, EXIT_REPORT_MAX_BYTES, exitMarkers, newLaunchToken, type PoolOptions} from './pool.ts';
import {REMOVE_TIMEOUT_MS, killStuckRuntime, reapContainers, reapOrphanShims} from './reaper.ts';
import {prepareSandbox, type Sandbox} from './sandbox.ts';
import {uidLeases} from './uid-leases.ts';

const log = rootLog.child({component: 'container-backend'});

/** Removal after a cancellation must finish within this many ms (the issue allows 2 s in all). */
const CANCEL_REMOVE_TIMEOUT_MS = 1_500;
/** Removal after a deadline or the output cap: the call waits at most this long, in ms, then the reaper takes over. */
const STOP_REMOVE_TIMEOUT_MS = 5_000;
/** After the process exited, how long to wait for the rest of its output to arrive, in ms. */
const OUTPUT_DRAIN_MS = 1_000;
/** How long a successful `docker info` runtime list is trusted, in ms. */
const RUNTIMES_TTL_MS = 30_000;
/** Stderr texts of a failed fork (glibc/EAGAIN in Python, dash, bash, busybox); see `pidsLimited`. */
const FORK_FAILED = /Resource temporarily unavailable|can't fork|Cannot fork|fork: retry/i;

/** Options of a {@link ContainerBackend}. */
export interface ContainerBackendOptions {
  /** A dockerode client; default `new Docker()` (DOCKER_HOST, else /var/run/docker.sock). */
  docker?: Docker;
  /** Warm pool (issue 4); absent or `false`: every call creates its container cold. */
  pool?: PoolOptions | false;
}

type StopReason = 'timeout' | 'cancel' | 'truncated';

/** True for a start refused because argv[0] does not exist in the image (runc: "executable file not found"). */
function isCommandNotFound(err: unknown): boolean {
  if (!(err instanceof ToolcellError) || err.data.reason !== 'container-start-failed') return false;
  return /executable file not found|no such file or directory/i.test(dockerMessage(err.cause));
}

function emptyResult(durationMs: number): ExecutionResult {
  return {failed: false, timedOut: false, isCanceled: false, outOfMemory: false, truncated: false, stdout: '', stderr: '', durationMs};
}

/**
 * Runs each {@link ContainerJob} in a fresh Docker container (dockerode, Docker Engine API),
 * hardened by {@link toCreateOptions}/`toHostConfig`, and removes it after the call.
 *
 * Per call: one new container, never reused (with the warm pool: created ahead of demand,
 * still used by exactly one call). Input: argv (`job.argv`, already substituted and
 * allowlisted by policy) and `job.stdin`, then stdin is closed. Output: stdout and stderr
 * each kept up to `limits.outputBytes` bytes; past that the container is killed and the
 * result has `truncated: true` (server memory stays bounded whatever the tool prints).
 *
 * Ends of a call (several flags may be true; dispatch picks the winner):
 * - deadline `limits.timeoutMs`, measured from the call's entry into `run` (container creation
 *   counts): killed and removed, `timedOut: true`;
 * - `options.signal` aborted: killed and removed within 2 s, `isCanceled: true`;
 * - OOM kill (`State.OOMKilled` from inspect, or the engine's `oom` event for the container
 *   when it exited non-zero: see OomWatch; also any exit 137 that toolcell did not cause, since
 *   gVisor's sentry SIGKILLs tasks itself at the memory limit without a host OOM event, and under
 *   runc both witnesses were seen missing on a loaded machine — a tool that SIGKILLs itself is
 *   then reported as out of memory; the reason changes, no limit does):
 *   `outOfMemory: true`;
 * - non-zero exit: `failed: true` with `exitCode`; `exitCode` is undefined when toolcell killed
 *   the container or the kernel OOM-killed it;
 * - `pidsLimited` (best effort): when a running container is stopped, its pids cgroup is read
 *   on the host (`pids.events` max > 0); after a natural failed exit, a fork-failure message in
 *   stderr (`Resource temporarily unavailable`, `can't fork`) is taken as the sign. The tool can
 *   fake that message; it only changes the reported reason, never a limit. Under runsc a fork
 *   bomb ends the whole gVisor sandbox instead (see `RUNSC_PIDS_BASE`).
 *
 * Rejects (`ToolcellError` `BACKEND_UNAVAILABLE`) when the engine is unreachable, the image is
 * missing, or the profile asks for runsc and the engine has no runsc (never run under runc
 * instead). Every container carries `toolcell.managed=true` and this instance's owner label
 * (`toolcell.job` is the job id for a cold container, `pool` for a warm-pool member, which
 * also carries `toolcell.pool` = its settings hash); {@link ContainerBackend.start} and
 * {@link ContainerBackend.close} reap leftovers.
 * Does NOT guarantee: that the engine itself stays within limits (image pulls, layer storage),
 * or isolation stronger than the kernel's namespaces/cgroups/seccomp under runc (use runsc).
 * A tool may ptrace other processes of its own container (same uid; Docker's default seccomp
 * allows it on kernels >= 4.8); nothing outside the container is reachable that way.
 */
export class ContainerBackend implements Backend<ContainerJob> {
  readonly kind = 'container' as const;
  /** Owner label value of this instance: `hostname/pid/uuid`. */
  readonly owner: string;
  readonly docker: Docker;
  readonly #pool: ContainerPool | undefined;
  readonly #oom: OomWatch;
  /** Cancel functions of calls in flight. */
  readonly #running = new Set<() => void>();
  /** Containers of calls in flight, by id. */
  readonly #live = new Map<string, Docker.Container>();
  /** Ids whose removal failed or timed out; retried by close() and the orphan-shim reaper. */
  readonly #leaked = new Set<string>();
  #runtimes: {names: Set<string>; at: number} | undefined;
  #closed = false;
  #started: Promise<void> | undefined;

  constructor(options: ContainerBackendOptions = {}) {
    this.docker = options.docker ?? new Docker();
    this.owner = `${hostname()}/${process.pid}/${randomUUID()}`;
    this.#pool = options.pool ? new ContainerPool(this.docker, this.owner, options.pool) : undefined;
    this.#oom = new OomWatch(this.docker, this.owner);
  }

  /**
   * Start-up: removes containers labelled `toolcell.managed=true` left on this engine by
   * earlier processes — by default (`scope: 'orphans'`) those whose owner process on this host
   * is gone (see `isOrphan`), so that several toolcell servers (or test files) can share one
   * engine without reaping each other's live sandboxes; `'all'` removes every labelled
   * container; `'none'` removes nothing. Then ends orphaned runtime shims older than 30 s.
   * Idempotent; `run` does not call it.
   * @throws ToolcellError `BACKEND_UNAVAILABLE` when the engine is unreachable.
   */
  start(options: {scope?: 'orphans' | 'all' | 'none'} = {}): Promise<void> {
    this.#started ??= (async () => {
      try {
        const scope = options.scope ?? 'orphans';
        if (scope !== 'none') {
          await reapContainers(this.docker, scope === 'orphans' ? {orphansOnly: true} : {});
          await reapOrphanShims(this.docker);
        }
      } catch (err) {
        this.#started = undefined;
        throw new ToolcellError('BACKEND_UNAVAILABLE', 'The Docker engine is unreachable, so container tools cannot run on this host now.', {reason: 'engine-unreachable'}, {cause: err});
      }
    })();
    return this.#started;
  }

  /**
   * Keeps warm-pool members ready for jobs like `template` (same image and settings; argv and
   * stdin do not matter). No-op without a pool. Errors are logged, not thrown.
   */
  prewarm(template: ContainerJob): void {
    if (this.#pool && !this.#closed) this.#pool.register(template);
  }

  /**
   * Warm-pool members ready and being created, settings keys kept warm, and members handed
   * straight from their creation to a call that waited for them (all 0 without a pool).
   */
  poolStats(): {ready: number; creating: number; keys: number; handed: number} {
    return this.#pool?.stats() ?? {ready: 0, creating: 0, keys: 0, handed: 0};
  }

  /** Runtimes the engine offers (cached for 30 s). @throws ToolcellError `BACKEND_UNAVAILABLE` when unreachable. */
  async runtimes(): Promise<Set<string>> {
    const now = performance.now();
    if (this.#runtimes && now - this.#runtimes.at < RUNTIMES_TTL_MS) return this.#runtimes.names;
    try {
      // dockerode's info() takes {abortSignal} at run time; its typings omit the parameter.
      const info = (await (this.docker.info as (o: object) => Promise<unknown>).call(this.docker, {abortSignal: AbortSignal.timeout(5_000)})) as {Runtimes?: Record<string, unknown>};
      const names = new Set(Object.keys(info.Runtimes ?? {}));
      this.#runtimes = {names, at: now};
      return names;
    } catch (err) {
      throw new ToolcellError('BACKEND_UNAVAILABLE', 'The Docker engine is unreachable, so container tools cannot run on this host now.', {reason: 'engine-unreachable'}, {cause: err});
    }
  }

  async #ensureRuntime(job: ContainerJob): Promise<void> {
    const names = await this.runtimes();
    if (!names.has(job.runtime)) {
      this.#runtimes = undefined; // re-check next time: an operator may register it and SIGHUP dockerd
      throw new ToolcellError('BACKEND_UNAVAILABLE',
        `The Docker engine has no "${job.runtime}" runtime; profile "${job.profile}" requires it and is not run under another runtime.`,
        {reason: 'runtime-missing', runtime: job.runtime, profile: job.profile});
    }
  }

  /**
   * Runs one job in a fresh container; see the class comment for flags and limits.
   * @throws ToolcellError `BACKEND_UNAVAILABLE` (engine unreachable, image missing, runtime
   *   missing, container could not be created or started, backend closed); `INTERNAL` for a
   *   job no valid profile can produce.
   */
  async run(job: ContainerJob, options: {signal: AbortSignal}): Promise<ExecutionResult> {
    const t0 = performance.now();
    const elapsed = () => Math.round(performance.now() - t0);
    const {signal} = options;
    if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The container backend is shutting down.', {reason: 'closed'});
    if (signal.aborted) return {...emptyResult(elapsed()), failed: true, isCanceled: true};
    const createOptions = toCreateOptions(job, {owner: this.owner});
    await this.#ensureRuntime(job);
    await this.#oom.ensure();

    const stop = new AbortController();
    let reason: StopReason | undefined;
    let pidsAtStop: ReturnType<typeof readPidsState>;
    let sandboxId: string | undefined;
    const terminate = (r: StopReason) => {
      if (reason) return;
      reason = r;
      if (sandboxId && r !== 'cancel') pidsAtStop = readPidsState(sandboxId);
      stop.abort(new Error(r));
    };
    const remaining = job.limits.timeoutMs - (performance.now() - t0);
    const timer = setTimeout(() => terminate('timeout'), Math.max(0, remaining));
    const onAbort = () => terminate('cancel');
    signal.addEventListener('abort', onAbort, {once: true});
    if (signal.aborted) terminate('cancel'); // aborted while the runtime and OOM watch were checked
    this.#running.add(onAbort); // close() cancels calls in flight
    const stopped = new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), {once: true}));

    let container: Docker.Container | undefined;
    let sandbox: Sandbox | undefined;
    let warm = false;
    let finished = false;
    /** The call was answered before its container was removed: remove it in the background. */
    let removeAfter = false;
    try {
      // 1. A container: a warm-pool member for these exact settings, else a cold one.
      const lease = this.#pool ? await this.#pool.acquire(job, stop.signal) : undefined;
      // Stopped while waiting for a member: no cold container (a lease is removed below, with the others).
      if (reason && !lease) return await this.#stoppedResult(reason, undefined, undefined, elapsed);
      if (lease) {
        sandbox = lease;
        warm = true;
      } else {
        const preparing = prepareSandbox(this.docker, createOptions, {
          image: job.image, runtime: job.runtime, signal: stop.signal,
          onCreated: (c) => {
            container = c;
            if (!finished) this.#live.set(c.id, c);
          },
        });
        const prepared = await Promise.race([
          preparing.then((s) => ({s}), (e: unknown) => ({e})),
          stopped.then(() => ({stopped: true as const})),
        ]);
        if ('stopped' in prepared || reason) {
          // Deadline or cancellation while the container was being created or started: answer now,
          // and remove the container as soon as the engine has it (the create request is not aborted).
          void preparing.then(
            (s) => this.#destroy(s.container, REMOVE_TIMEOUT_MS).finally(() => s.release()),
            () => (container ? this.#destroy(container, REMOVE_TIMEOUT_MS) : undefined),
          );
          return await this.#stoppedResult(reason ?? 'cancel', container, undefined, elapsed);
        }
        if ('e' in prepared) {
          const err = prepared.e;
          if (container) {
            await this.#destroy(container, REMOVE_TIMEOUT_MS);
            // A failed runsc start can leave its shim and sandbox processes behind (MACHINE.md).
            this.#watchForOrphans(container.id);
          }
          if (isCommandNotFound(err)) {
            // Same outcome as the warm path, where the launcher's `exec` fails with 127.
            return {...emptyResult(elapsed()), failed: true, exitCode: 127, stderr: `${job.argv[0]}: not found in the image\n`};
          }
          throw err;
        }
        sandbox = prepared.s;
      }
      container = sandbox.container;
      sandboxId = sandbox.id;
      this.#live.set(sandbox.id, container);
      if (reason) return await this.#stoppedResult(reason, container, undefined, elapsed);

      // 2. Output: bounded capture; over the cap, stop the call. A warm member's launcher reports
      // the tool's exit at the end of both streams (pool.ts `exitMarkers`).
      const collector = new OutputCollector(job.limits.outputBytes, () => terminate('truncated'));
      const token = warm ? newLaunchToken() : undefined;
      const reported = Promise.withResolvers<number>();
      if (token !== undefined) collector.expectExitReport(exitMarkers(token), EXIT_REPORT_MAX_BYTES, reported.resolve);
      const streamDone = new Promise<void>((resolve) => {
        sandbox!.socket.on('data', (chunk: Buffer) => collector.push(chunk));
        sandbox!.socket.once('end', resolve);
        sandbox!.socket.once('close', resolve);
      });
      sandbox.socket.resume(); // a warm member's socket was paused after its readiness signal

      // 3. Input, then close stdin.
      const input = token !== undefined ? this.#pool!.launchInput(job, token) : job.stdin === undefined ? undefined : Buffer.from(job.stdin, 'utf8');
      if (input !== undefined && input.length > 0) sandbox.socket.end(input);
      else sandbox.socket.end();

      // 4. Exit (reported by the launcher, or seen by the engine) or termination, whichever is first.
      const outcome = await Promise.race([
        reported.promise.then((code) => ({code, reported: true})),
        sandbox.exited.then((code) => ({code, reported: false})),
        stopped.then(() => undefined),
      ]);
      if (reason || outcome === undefined) {
        return await this.#stoppedResult(reason ?? 'timeout', container, collector, elapsed, pidsAtStop);
      }
      if (outcome.reported) {
        // The tool has exited and its output is complete: answer now; the container (its launcher
        // is exiting too) is removed right after, off the call's path.
        const status = outcome.code;
        const oomKilled = status === 137 || (status !== 0 && await this.#oom.saw(sandbox.id, 0));
        removeAfter = true;
        return this.#exitResult(collector, status, oomKilled, elapsed);
      }
      // Exited by itself: collect the rest of the output, then read why it ended.
      await Promise.race([streamDone, new Promise((r) => setTimeout(r, OUTPUT_DRAIN_MS).unref())]);
      if (reason) return await this.#stoppedResult(reason, container, collector, elapsed, pidsAtStop);
      let oomKilled = false;
      let exitCode = outcome.code;
      try {
        const info = await container.inspect({abortSignal: AbortSignal.timeout(5_000)});
        oomKilled = info.State.OOMKilled === true;
        exitCode = info.State.ExitCode;
      } catch (err) {
        log.debug({err, jobId: job.id}, 'inspect after exit failed');
      }
      // OOMKilled can be missing (seen under runsc); the engine's oom event is the second witness.
      if (!oomKilled && exitCode !== undefined && exitCode !== 0) oomKilled = await this.#oom.saw(sandbox.id, exitCode === 137 ? 1_500 : 0);
      // gVisor's sentry also kills a task itself (SIGKILL, exit 137) when the sandbox runs out of
      // its memory limit, with no host OOM at all; and under runc, with the machine loaded, both
      // witnesses above were seen missing for a tmpfs-filling tool the kernel had OOM-killed (the
      // init process reports its child's SIGKILL as 137). So an exit 137 toolcell did not cause
      // (this path: not timed out, cancelled or truncated) is taken as OOM under either runtime.
      if (!oomKilled && exitCode === 137) oomKilled = true;
      await this.#destroy(container, REMOVE_TIMEOUT_MS);
      return this.#exitResult(collector, exitCode, oomKilled, elapsed);
    } finally {
      finished = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      this.#running.delete(onAbort);
      sandbox?.release();
      if (container && removeAfter) this.#removeInBackground(container);
      else if (container) this.#live.delete(container.id);
    }
  }

  /** Result of a call whose tool exited by itself with `exitCode` (undefined: unknown). */
  #exitResult(collector: OutputCollector, exitCode: number | undefined, oomKilled: boolean, elapsed: () => number): ExecutionResult {
    collector.finish();
    const stderr = collector.stderr.text();
    const failed = oomKilled || exitCode !== 0 || collector.truncated;
    const result: ExecutionResult = {
      ...emptyResult(0),
      failed,
      outOfMemory: oomKilled,
      truncated: collector.truncated,
      stdout: collector.stdout.text(),
      stderr,
      pidsLimited: failed && !oomKilled && FORK_FAILED.test(stderr.slice(-4096)),
    };
    if (!oomKilled && exitCode !== undefined) result.exitCode = exitCode;
    result.durationMs = elapsed();
    return result;
  }

  /**
   * Removes a container whose call has been answered, off the call's path. It stays in `#live`
   * until removed, and `close()` waits for these removals; a failed one goes to the reaper.
   */
  #removeInBackground(container: Docker.Container): void {
    const removal: Promise<void> = this.#destroy(container, REMOVE_TIMEOUT_MS).finally(() => {
      this.#live.delete(container.id);
      this.#removing.delete(removal);
    });
    this.#removing.add(removal);
  }

  /** Removals of answered calls' containers still in flight. */
  readonly #removing = new Set<Promise<void>>();

  /** Result of a call that toolcell stopped (deadline, cancellation, output cap), after removing its container. */
  async #stoppedResult(
    reason: StopReason,
    container: Docker.Container | undefined,
    collector: OutputCollector | undefined,
    elapsed: () => number,
    pids?: ReturnType<typeof readPidsState>,
  ): Promise<ExecutionResult> {
    if (container) await this.#destroy(container, reason === 'cancel' ? CANCEL_REMOVE_TIMEOUT_MS : STOP_REMOVE_TIMEOUT_MS);
    const result: ExecutionResult = {
      ...emptyResult(0),
      failed: true,
      timedOut: reason === 'timeout',
      isCanceled: reason === 'cancel',
      truncated: reason === 'truncated' || (collector?.truncated ?? false),
      stdout: collector?.stdout.text() ?? '',
      stderr: collector?.stderr.text() ?? '',
      durationMs: 0,
    };
    if (pids) result.pidsLimited = pids.refused > 0 || (pids.max !== undefined && pids.current !== undefined && pids.current >= pids.max);
    result.durationMs = elapsed();
    return result;
  }

  /** True only when the engine answers 404 for the container (for uid leases: a 409 "removal in progress" is not gone). */
  readonly #isGone = (id: string): Promise<boolean> => this.docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(5_000)}).then(() => false, (e: unknown) => (e as {statusCode?: number})?.statusCode === 404);

  /** Kills and removes a container, bounded by `timeoutMs`; on failure it is remembered for the reaper. */
  async #destroy(container: Docker.Container, timeoutMs: number): Promise<void> {
    try {
      await container.remove({force: true, v: true, abortSignal: AbortSignal.timeout(timeoutMs)} as Docker.ContainerRemoveOptions);
      this.#leaked.delete(container.id);
      uidLeases.releaseContainer(container.id); // uid lease: the container is gone
    } catch (err) {
      if (isNoSuchContainer(err)) return uidLeases.releaseAfterRemoveError(container.id, err, this.#isGone);
      this.#leaked.add(container.id);
      log.warn({err, containerId: container.id}, 'container remove failed; reaper will retry');
      void this.#retryLeaked();
    }
  }

  #retrying: Promise<void> | undefined;
  /** Background retry of failed removals, then of their orphaned runtime processes. */
  #retryLeaked(): Promise<void> {
    this.#retrying ??= (async () => {
      await new Promise((r) => setTimeout(r, 2_000).unref());
      for (const id of [...this.#leaked]) {
        for (let attempt = 0; attempt < 2 && this.#leaked.has(id); attempt++) {
          try {
            await this.docker.getContainer(id).remove({force: true, v: true, abortSignal: AbortSignal.timeout(REMOVE_TIMEOUT_MS)} as Docker.ContainerRemoveOptions);
            this.#leaked.delete(id);
            uidLeases.releaseContainer(id); // uid lease: the container is gone
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
      await reapOrphanShims(this.docker, {ids: this.#leakedAndGone()}).catch(() => undefined);
    })().finally(() => {
      this.#retrying = undefined;
    });
    return this.#retrying;
  }

  /** Looks for orphaned shims of a removed container shortly after its failed start. */
  #watchForOrphans(id: string): void {
    this.#everLeaked.add(id);
    setTimeout(() => {
      void reapOrphanShims(this.docker, {ids: [id]}).catch(() => undefined);
    }, 1_000).unref();
  }

  #everLeaked = new Set<string>();
  #leakedAndGone(): string[] {
    for (const id of this.#leaked) this.#everLeaked.add(id);
    return [...this.#everLeaked];
  }

  /**
   * Stops everything this instance started: cancels calls in flight (their `run` resolves with
   * `isCanceled: true` after removing its container; close waits up to 2 s for them), drains the
   * warm pool, removes whatever is left, reaps every container with this owner label and
   * ends orphaned runtime shims of containers whose removal failed. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return this.#closing;
    this.#closed = true;
    this.#closing = (async () => {
      // Calls in flight end as cancelled (each removes its own container), not as tool failures.
      for (const cancel of this.#running) cancel();
      await this.#pool?.close();
      for (let i = 0; i < 40 && this.#running.size > 0; i++) await new Promise((r) => setTimeout(r, 50));
      await Promise.all(this.#removing);
      await Promise.all([...this.#live.values()].map((c) => this.#destroy(c, REMOVE_TIMEOUT_MS)));
      try {
        await reapContainers(this.docker, {owner: this.owner});
      } catch (err) {
        if (!isUnreachable(err)) log.warn({err}, 'reap at close failed');
      }
      await reapOrphanShims(this.docker, {ids: this.#leakedAndGone()}).catch(() => undefined);
      // uid leases of containers the reaper removed; those that may still exist keep theirs.
      await uidLeases.releaseGone(this.#isGone);
      this.#oom.close();
    })();
    return this.#closing;
  }
  #closing: Promise<void> = Promise.resolve();
}
