/**
 * The container backend: runs each job in a fresh hardened Docker container (cold or from the
 * warm pool) and turns how it ended into an ExecutionResult; removal, reaping, exit attribution,
 * the launcher and the pool live in their own modules next to this one.
 */
import {randomUUID} from 'node:crypto';
import {hostname} from 'node:os';
import Docker from 'dockerode';
import type {EgressProxy, EgressSession} from '../../egress/proxy.ts';
import {netnsOf, startEgressRelay, type EgressRelay} from '../../egress/relay.ts';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import {makeResult, type Backend, type ContainerJob, type ExecutionResult} from '../backend.ts';
import {CgroupSampler, readPidsState} from './cgroup.ts';
import {dockerMessage, isNoSuchContainer, isUnreachable} from './docker-errors.ts';
import {toCreateOptions} from './host-config.ts';
import {DeadlineKeeper} from './deadline-keeper.ts';
import {attributeExit, type ExitEvidence} from './exit-reason.ts';
import {OomWatch, kernelLoggedOom} from './oom-watch.ts';
import {OutputCollector} from './output.ts';
import {EXIT_REPORT_MAX_BYTES, exitMarkers, newLaunchToken} from './launcher.ts';
import {ContainerPool, type PoolOptions} from './pool.ts';
import {reapContainers} from './reaper.ts';
import {reapOrphanShims} from './shims.ts';
import {Provenance} from './provenance.ts';
import {prepareSandbox, type Sandbox} from './sandbox.ts';
import {uidLeases} from './uid-leases.ts';
import {ContainerRemover, newTeardown} from './teardown.ts';

const log = rootLog.child({component: 'container-backend'});

/** Removal after a cancellation must finish within this many ms (the issue allows 2 s in all). */
const CANCEL_REMOVE_TIMEOUT_MS = 1_500;
/** Removal after a deadline or the output cap: the call waits at most this long, in ms, then the reaper takes over. */
export const STOP_REMOVE_TIMEOUT_MS = 5_000;
/** After the process exited, how long to wait for the rest of its output to arrive, in ms. */
const OUTPUT_DRAIN_MS = 1_000;
/** How long a successful `docker info` runtime list is trusted, in ms. */
const RUNTIMES_TTL_MS = 30_000;

/** Options of a {@link ContainerBackend}. */
export interface ContainerBackendOptions {
  /** A dockerode client; default `new Docker()` (DOCKER_HOST, else /var/run/docker.sock). */
  docker?: Docker;
  /** Warm pool (issue 4); absent or `false`: every call creates its container cold. */
  pool?: PoolOptions | false;
  /** State directory holding the installation's reaper key and container records (provenance.ts); default `defaultStateDir()`. */
  stateDir?: string;
  /**
   * The egress proxy (egress/proxy.ts) for jobs whose profile grants egress: each such call gets
   * a session and a relay in its network namespace (egress/relay.ts). Absent: those jobs are
   * refused (`BACKEND_UNAVAILABLE`, reason `egress-unavailable`); jobs without a grant never use it.
   */
  egress?: EgressProxy;
}

/** Why toolcell stopped a call: its own deadline, the caller, the output cap, or a sandbox that could not be started in time. */
type StopReason = 'timeout' | 'cancel' | 'truncated' | 'start-timeout';

/**
 * How long a call may wait for its sandbox (a warm-pool member, or a cold container's create,
 * attach and start) before the tool runs, in ms. Over it the call fails with
 * `BACKEND_UNAVAILABLE` (reason `start-timeout`), never `TIMEOUT`: the tool did not run out of
 * its time, the engine was too slow. The tool's own `timeoutMs` starts when it is handed its input.
 */
export const START_TIMEOUT_MS = 30_000;

/** True for a start refused because argv[0] does not exist in the image (runc: "executable file not found"). */
function isCommandNotFound(err: unknown): boolean {
  if (!(err instanceof ToolcellError) || err.data.reason !== 'container-start-failed') return false;
  return /executable file not found|no such file or directory/i.test(dockerMessage(err.cause));
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
 * - deadline `limits.timeoutMs`, measured from the moment the started container is handed its
 *   input (creation and start, or the wait for a warm-pool member, have their own budget,
 *   {@link START_TIMEOUT_MS}; over it the call rejects with `BACKEND_UNAVAILABLE`): killed and
 *   removed, `timedOut: true`;
 * - `options.signal` aborted: killed and removed within 2 s, `isCanceled: true`;
 * - the tool's own end: attributed by {@link attributeExit} (exit-reason.ts) from the evidence
 *   gathered before the container is removed: `outOfMemory` only with an OOM witness (the
 *   engine's `OOMKilled` or `oom` event, a kernel `oom-kill:` record naming the container, the
 *   memory cgroup's OOM-kill count); `pidsLimited` from the pids cgroup's refused forks (read
 *   when a launcher reports, before a running container is killed, and sampled every 200 ms
 *   while a cold container runs; a fork-failure message in stderr only where the cgroup cannot
 *   be read); an exit 129-192 without OOM witness is `failed` with `signal` (e.g. 9); any other
 *   non-zero exit is `failed` with `exitCode`. Under runsc a fork bomb ends the whole gVisor
 *   sandbox instead (see `RUNSC_PIDS_BASE`), reported as killed by a signal.
 *   Cgroup and kernel-log evidence needs toolcell on the engine's host with read access (root).
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
  /** The installation key and records that mark containers as ours (provenance.ts). */
  readonly provenance: Provenance;
  readonly #pool: ContainerPool | undefined;
  readonly #oom: OomWatch;
  readonly #egress: EgressProxy | undefined;
  /** Removes containers at their deadline if this process dies (deadline-keeper.ts). */
  readonly #keeper: DeadlineKeeper;
  /** Cancel functions of calls in flight. */
  readonly #running = new Set<() => void>();
  /** The one owner of container removal, leak retry and orphan watching (teardown.ts). */
  readonly #remover: ContainerRemover;
  #runtimes: {names: Set<string>; at: number} | undefined;
  #closed = false;
  #started: Promise<void> | undefined;

  constructor(options: ContainerBackendOptions = {}) {
    this.docker = options.docker ?? new Docker();
    this.owner = `${hostname()}/${process.pid}/${randomUUID()}`;
    this.provenance = Provenance.of(options.stateDir);
    this.#keeper = new DeadlineKeeper(this.docker);
    this.#remover = new ContainerRemover(this.docker, this.provenance, this.#keeper);
    this.#pool = options.pool ? new ContainerPool(this.docker, this.owner, this.provenance, this.#remover, options.pool) : undefined;
    this.#oom = new OomWatch(this.docker, this.owner);
    this.#egress = options.egress;
  }

  /**
   * Start-up: removes containers left on this engine by earlier processes of this installation
   * (only those with a valid proof of origin, provenance.ts) — by default (`scope: 'orphans'`)
   * those whose owner process on this host is gone (see `isOrphan`), so that several toolcell
   * servers (or test files) can share one engine without reaping each other's live sandboxes;
   * `'all'` removes every container of this installation; `'none'` removes nothing. Then ends
   * orphaned runtime shims (30 s old at least) of container ids this installation recorded.
   * Idempotent; `run` does not call it.
   * @throws ToolcellError `BACKEND_UNAVAILABLE` when the engine is unreachable.
   */
  start(options: {scope?: 'orphans' | 'all' | 'none'} = {}): Promise<void> {
    this.#started ??= (async () => {
      try {
        const scope = options.scope ?? 'orphans';
        if (scope !== 'none') {
          await reapContainers(this.docker, {orphansOnly: scope === 'orphans', provenance: this.provenance});
          await reapOrphanShims(this.docker, {provenance: this.provenance});
          await this.provenance.prune(new Set((await this.docker.listContainers({all: true})).map((c) => c.Id)));
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
    if (signal.aborted) return makeResult(elapsed(), {isCanceled: true});
    // Egress: a session of the proxy and a relay in the sandbox's network namespace, both this call's alone.
    const egress = job.network === 'none' ? undefined : job.egress;
    if (job.network !== 'none') {
      if (this.#egress === undefined || egress === undefined) {
        throw new ToolcellError('BACKEND_UNAVAILABLE', `Profile "${job.profile}" grants egress, but this server runs no egress proxy; the tool did not run.`, {reason: 'egress-unavailable'});
      }
      if (job.runtime !== 'runc') {
        throw new ToolcellError('BACKEND_UNAVAILABLE', `Profile "${job.profile}" grants egress under runtime ${job.runtime}; egress is available under runc only.`, {reason: 'egress-runtime', runtime: job.runtime});
      }
    }
    let egressSession: EgressSession | undefined;
    let relay: EgressRelay | undefined;
    const claim = this.provenance.claim(this.owner);
    const base = toCreateOptions(job, {owner: this.owner});
    const createOptions = {...base, name: claim.name, Labels: {...base.Labels, ...claim.labels}};
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
    // Until the tool runs, the call has the start budget; then `timeoutMs` of its own (a busy
    // engine's slowness is not the tool's time).
    /** The latest the container may exist, in ms since the epoch, for the keeper that outlives this process. */
    let deadlineAt = Date.now() + START_TIMEOUT_MS + job.limits.timeoutMs;
    let timer = setTimeout(() => terminate('start-timeout'), START_TIMEOUT_MS);
    /** The tool is about to get its input: its own deadline starts now. */
    const startToolClock = (id: string) => {
      clearTimeout(timer);
      deadlineAt = Date.now() + job.limits.timeoutMs;
      this.#keeper.watch(id, deadlineAt);
      timer = setTimeout(() => terminate('timeout'), job.limits.timeoutMs);
    };
    const onAbort = () => terminate('cancel');
    signal.addEventListener('abort', onAbort, {once: true});
    if (signal.aborted) terminate('cancel'); // aborted while the runtime and OOM watch were checked
    this.#running.add(onAbort); // close() cancels calls in flight
    const stopped = new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), {once: true}));

    let sandbox: Sandbox | undefined;
    let warm = false;
    let finished = false;
    let sampler: CgroupSampler | undefined;
    /** How the container is removed; acted on once, in `finally` (teardown.ts). */
    const teardown = newTeardown();
    /** Builds the result once the container is removed (so output that arrived meanwhile counts). */
    let build: () => ExecutionResult;
    const stoppedAs = (r: StopReason, collector?: OutputCollector) => {
      teardown.timeoutMs = r === 'cancel' ? CANCEL_REMOVE_TIMEOUT_MS : STOP_REMOVE_TIMEOUT_MS;
      if (r === 'start-timeout') {
        return () => {
          throw new ToolcellError('BACKEND_UNAVAILABLE',
            `The sandbox could not be started within ${START_TIMEOUT_MS / 1000} s (the container engine is overloaded); the tool did not run.`,
            {reason: 'start-timeout', startTimeoutMs: START_TIMEOUT_MS});
        };
      }
      const pids = pidsAtStop;
      return () => this.#stoppedResult(r, collector, elapsed, pids);
    };
    try {
      build = await (async (): Promise<() => ExecutionResult> => {
        // 1. A container: a warm-pool member for these exact settings, else a cold one.
        // Egress jobs never use the pool: their relay and proxy session are bound to one call.
        const lease = this.#pool && egress === undefined ? await this.#pool.acquire(job, stop.signal) : undefined;
        // Stopped while waiting for a member: no cold container (a lease is removed with the others).
        if (reason && !lease) return stoppedAs(reason);
        if (lease) {
          sandbox = lease;
          warm = true;
          this.#keeper.watch(lease.id, deadlineAt);
        } else {
          const preparing = prepareSandbox(this.docker, createOptions, {
            image: job.image, runtime: job.runtime, signal: stop.signal,
            onCreated: (c) => {
              teardown.container = c;
              this.provenance.record(c.id);
              this.#keeper.watch(c.id, deadlineAt);
              if (!finished) this.#remover.track(c);
            },
            ...(egress === undefined ? {} : {
              afterStart: async ({pid, uid, gid}: {pid: number; uid: number; gid: number}) => {
                // The namespace of `pid`, read while the container is known to run with that pid (before and after): no pid reuse.
                const netns = netnsOf(pid);
                const again = await teardown.container!.inspect({abortSignal: AbortSignal.timeout(5_000)});
                if (!again.State.Running || again.State.Pid !== pid) throw new Error('the sandbox stopped before its egress relay started');
                egressSession = await this.#egress!.open(egress, {uid, gid});
                relay = await startEgressRelay({pid, uid, gid, socketPath: egressSession.socketPath, expectedNetns: netns});
              },
            }),
          });
          const prepared = await Promise.race([
            preparing.then((s) => ({s}), (e: unknown) => ({e})),
            stopped.then(() => ({stopped: true as const})),
          ]);
          if ('stopped' in prepared || reason) {
            // Deadline or cancellation while the container was being created or started: answer now.
            teardown.preparing = preparing;
            return stoppedAs(reason ?? 'cancel');
          }
          if ('e' in prepared) {
            teardown.watchOrphans = true;
            if (isCommandNotFound(prepared.e)) {
              // Same outcome as the warm path, where the launcher's `exec` fails with 127.
              return () => makeResult(elapsed(), {exitCode: 127, stderr: `${job.argv[0]}: not found in the image\n`});
            }
            const err = prepared.e;
            return () => {
              throw err;
            };
          }
          sandbox = prepared.s;
        }
        teardown.container = sandbox.container;
        teardown.sandbox = sandbox;
        sandboxId = sandbox.id;
        this.#remover.track(sandbox.container);
        sampler = new CgroupSampler(sandbox.id);
        if (reason) return stoppedAs(reason);
        startToolClock(sandbox.id);

        // 2. Output: bounded capture; over the cap, stop the call. A warm member's launcher reports
        // the tool's exit at the end of both streams (launcher.ts `exitMarkers`).
        const collector = new OutputCollector(job.limits.outputBytes, () => terminate('truncated'));
        const token = warm ? newLaunchToken() : undefined;
        // The report is kept out of the output, but not trusted: it travels through the
        // stdout/stderr pipes the tool shares with its launcher, so a tool can read the token
        // off them (a read end of /proc/self/fd/1) and race the launcher with a forged status.
        // The status is the engine's: the launcher exits with the tool's real status.
        if (token !== undefined) collector.expectExitReport(exitMarkers(token), EXIT_REPORT_MAX_BYTES, () => undefined);
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

        // 4. Exit, as the engine sees it, or termination, whichever is first.
        const outcome = await Promise.race([
          sandbox.exited.then((code) => ({code})),
          stopped.then(() => undefined),
        ]);
        if (reason || outcome === undefined) return stoppedAs(reason ?? 'timeout', collector);
        // Exited by itself: collect the rest of the output, then read why it ended.
        await Promise.race([streamDone, new Promise((r) => setTimeout(r, OUTPUT_DRAIN_MS).unref())]);
        if (reason) return stoppedAs(reason, collector);
        sampler.stop();
        let engineOomKilled = false;
        let status = outcome.code;
        try {
          const info = await sandbox.container.inspect({abortSignal: AbortSignal.timeout(5_000)});
          engineOomKilled = info.State.OOMKilled === true;
          status = info.State.ExitCode;
        } catch (err) {
          log.debug({err, jobId: job.id}, 'inspect after exit failed');
        }
        // The engine's oom event can trail the exit (seen under runsc): wait for it a little on a SIGKILL.
        const evidence = await this.#witnesses(sandbox.id, {status, engineOomKilled, cgroup: sampler.evidence}, status === 137 ? 1_500 : 0);
        return () => this.#exitResult(collector, evidence, elapsed);
      })();
    } finally {
      finished = true;
      sampler?.stop();
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      if (!teardown.container) sandbox?.release();
      try {
        await this.#remover.finish(teardown);
      } finally {
        relay?.stop();
        await egressSession?.close();
        // Only now: close() waits for calls in flight, and a call is in flight until its container is removed.
        this.#running.delete(onAbort);
      }
    }
    const result = build();
    if (egressSession?.limitHit) result.egressLimit = {...egressSession.limitHit};
    return result;
  }

  /**
   * Adds the engine's `oom` event and the kernel log to `evidence` for a failed exit (the
   * event waited for up to `waitMs` when no other witness has spoken yet).
   */
  async #witnesses(id: string, evidence: ExitEvidence, waitMs: number): Promise<ExitEvidence> {
    if (evidence.status === 0) return evidence;
    const spoken = () => evidence.engineOomKilled === true || (evidence.cgroup?.memory?.oomKills ?? 0) > 0;
    const oomEvent = await this.#oom.saw(id, spoken() ? 0 : waitMs);
    const kernelOomLogged = !spoken() && !oomEvent && evidence.status === 137 && kernelLoggedOom(id);
    return {...evidence, oomEvent, kernelOomLogged};
  }

  /** Result of a call whose tool ended by itself, attributed from `evidence` (exit-reason.ts). */
  #exitResult(collector: OutputCollector, evidence: ExitEvidence, elapsed: () => number): ExecutionResult {
    collector.finish();
    const stderr = collector.stderr.text();
    const why = attributeExit({...evidence, stderrTail: stderr.slice(-4096)});
    if (why.witnesses.length > 0) log.debug({witnesses: why.witnesses, status: evidence.status}, 'exit attributed');
    const result: ExecutionResult = {
      ...makeResult(0),
      failed: why.failed || collector.truncated,
      outOfMemory: why.outOfMemory,
      truncated: collector.truncated,
      stdout: collector.stdout.text(),
      stderr,
      pidsLimited: why.pidsLimited,
    };
    if (why.exitCode !== undefined) result.exitCode = why.exitCode;
    if (why.signal !== undefined) result.signal = why.signal;
    result.durationMs = elapsed();
    return result;
  }

  /** Result of a call that toolcell stopped (deadline, cancellation, output cap); built after its container's removal. */
  #stoppedResult(reason: StopReason, collector: OutputCollector | undefined, elapsed: () => number, pids?: ReturnType<typeof readPidsState>): ExecutionResult {
    const result: ExecutionResult = {
      ...makeResult(0),
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
      await this.#remover.close();
      try {
        const reaped = await reapContainers(this.docker, {owner: this.owner, provenance: this.provenance});
        if (reaped.failed.length === 0 && this.#remover.clean) this.#keeper.releaseAll();
      } catch (err) {
        if (!isUnreachable(err)) log.warn({err}, 'reap at close failed');
      }
      await this.#remover.reapShims();
      // uid leases of containers the reaper removed; those that may still exist keep theirs.
      await uidLeases.releaseGone((id) => this.docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(5_000)}).then(() => false, (e: unknown) => (e as {statusCode?: number})?.statusCode === 404));
      this.#oom.close();
      this.#keeper.close();
    })();
    return this.#closing;
  }
  #closing: Promise<void> = Promise.resolve();
}
