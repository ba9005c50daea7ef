/**
 * The hosted-server backend: each call of a hosted MCP server's tool runs in a server process
 * nobody used before, in a fresh hardened container, removed after its one call.
 */
import {randomUUID} from 'node:crypto';
import {hostname} from 'node:os';
import Docker from 'dockerode';
import {outputScrubber} from '../../egress/output-scrub.ts';
import type {EgressProxy} from '../../egress/proxy.ts';
import {ToolcellError} from '../../errors.ts';
import {log as rootLog} from '../../log.ts';
import type {EgressLimitHit} from '../../egress/proxy.ts';
import {makeResult, type Backend, type BackendEvent, type ExecutionResult, type ServerJob} from '../backend.ts';
import {START_TIMEOUT_MS} from '../container/container-backend.ts';
import {DeadlineKeeper} from '../container/deadline-keeper.ts';
import {Provenance} from '../container/provenance.ts';
import {reapContainers} from '../container/reaper.ts';
import type {PoolOptions} from '../container/pool.ts';
import {ContainerRemover} from '../container/teardown.ts';
import {boundedScrubbedText, jsonDepth, jsonLine, MAX_RESULT_DEPTH} from './bounded-json.ts';
import type {SessionHandlers} from './mcp-stdio-session.ts';
import {DeferredRemovals, MAX_PENDING_REMOVALS} from './deferred-removals.ts';
import {poolable, ServerPool, serverPoolKey} from './server-pool.ts';
import {ServerFailure, ServerSandbox, startFailure, type ServerSandboxDeps} from './server-sandbox.ts';

const log = rootLog.child({component: 'server-backend'});

/**
 * How long a started server may take to answer `initialize` and `tools/list`, in ms. Over it
 * the call is `TOOL_FAILED` ("did not complete the MCP handshake"): the engine started the
 * server, the server did not talk.
 */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Most progress and log notifications relayed per call (each kind); the rest are dropped. */
export const MAX_RELAYED_EVENTS = 100;
/** Log levels MCP defines (2025-11-25 server/utilities/logging: the RFC 5424 severities); any other level is relayed as `info`. */
export const LOG_LEVELS: ReadonlySet<string> = new Set(['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency']);
/** A relayed log notification's `logger`: 1-64 of letters, digits and `._-/:@`; any other logger is dropped. */
export const SAFE_LOGGER = /^[A-Za-z0-9._\-/:@]{1,64}$/;
/** Log text with a line break or control character is relayed JSON-quoted (one line); plain text as it is. */
const oneLine = (text: string): string => (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(text) ? jsonLine(text) : text);
/** Removal after a cancellation, in ms. */
const CANCEL_REMOVE_TIMEOUT_MS = 1_500;
/** Removal otherwise, in ms (then the remover retries in the background). */
const REMOVE_TIMEOUT_MS = 5_000;
/** After the session closed, how long to wait for the engine to report the server's exit, in ms. */
const EXIT_WAIT_MS = 2_000;
/** Bound on the kill that must end a server before its result returns (see `#retire`), in ms; past it the removal is awaited instead. */
const KILL_TIMEOUT_MS = 5_000;

/** `result` with the call's first egress limit hit, if any (the frontend then answers `DENIED`, rule `egress`). */
function withEgressLimit(result: ExecutionResult, hit: EgressLimitHit | undefined): ExecutionResult {
  if (hit) result.egressLimit = hit;
  return result;
}

/** Options of a {@link ServerBackend}. */
export interface ServerBackendOptions {
  docker?: Docker;
  /** State directory of the reaper key and records (container/provenance.ts); default as the container backend. */
  stateDir?: string;
  /** Budget of the MCP handshake (initialize + tools/list), in ms; default {@link HANDSHAKE_TIMEOUT_MS}. */
  handshakeTimeoutMs?: number;
  /** Pre-initialized warm pool (server-pool.ts); absent or `false`: every call starts its server cold. */
  pool?: PoolOptions | false;
  /** Removals in flight after their calls returned, at most (deferred-removals.ts); default {@link MAX_PENDING_REMOVALS}. */
  maxPendingRemovals?: number;
  /**
   * The egress proxy for servers whose profile grants egress: each call gets its own proxy
   * session and relay (server-sandbox.ts `bindEgress`). Absent: such servers are refused
   * (`BACKEND_UNAVAILABLE`, `egress-unavailable`). Egress servers are never pre-initialized.
   */
  egress?: EgressProxy;
}

type StopReason = 'timeout' | 'cancel' | 'truncated' | 'start-timeout' | 'handshake-timeout';

/** A principal's kept server sandbox (`lifetime: "principal"`), and the chain its calls wait on. */
interface Sticky {
  chain: Promise<void>;
  member: {server: ServerSandbox; listed: Record<string, unknown>[]; handlers: SessionHandlers} | undefined;
  idle: NodeJS.Timeout | undefined;
}

/**
 * Runs {@link ServerJob}s: per call, a fresh container from the pinned image ID (so a re-tagged
 * image is never used) with the container tier's floor and the profile's limits
 * (host-config.ts; uid lease, mount checks, provenance label, deadline keeper and removal as for
 * container tools), then MCP over stdio (mcp-stdio-session.ts): `initialize`, `tools/list`
 * compared with the pins (`job.verifyListing`), `tools/call`, and the container is removed.
 *
 * Removal off the call's path: the result returns as soon as the server answered; the container
 * (which served its one call and is never used again) is then removed in the background, in a
 * bounded set (deferred-removals.ts: over `maxPendingRemovals` the next call waits before it
 * takes or starts a server; the warm pool counts these containers against its `maxTotal` and
 * `maxMemoryMb`; `close()` awaits them all). A server is *killed* (stopped, confirmed by the
 * engine) before its result returns when its profile grants anything outside the sandbox (a
 * read-write mount or network: not {@link poolable}) or when toolcell stopped the call (deadline,
 * output cap, handshake budget); a cancelled call's container is removed before it returns, as
 * for container tools. Where the kill cannot be confirmed within {@link KILL_TIMEOUT_MS} the
 * removal is awaited.
 *
 * Time: creating and starting the container has {@link START_TIMEOUT_MS} (over it:
 * `BACKEND_UNAVAILABLE` `start-timeout`); the handshake has `handshakeTimeoutMs` (over it:
 * failed, `TOOL_FAILED`); the tool's `timeoutMs` starts when `tools/call` is sent (over it:
 * `timedOut`, the container is killed). Output: the bytes the server writes (stdout and stderr)
 * count against `outputBytes` during its handshake, and again from `tools/call` on; past it
 * `truncated`, killed. Memory, pids,
 * CPU: the container's cgroups, as for container tools; `outOfMemory` and `pidsLimited` are
 * attributed by the container tier's witnesses (exit-reason.ts).
 * Result: `stdout` is the JSON of the server's `tools/call` result (shape checked by the
 * frontend); `stderr` is always empty: the server's stderr goes to the log, bounded, never to
 * the client. A server that writes anything on stdout that is not MCP, ends early, or answers
 * `tools/call` with a JSON-RPC error gives `failed` with `error` naming why.
 * Throws ToolcellError `DENIED` (`rule: "pin"`, `changes`) when the listing breaks the pins,
 * `BACKEND_UNAVAILABLE` when the engine, image or runtime fails.
 * Warm pool (`options.pool`, server-pool.ts): a call may take a member started, initialized and
 * listed ahead of demand instead of a cold server; the member serves that one call. Jobs with
 * `affinity` (`lifetime: "principal"`) keep one sandbox per (affinity key, settings): see `run`.
 * Does NOT guarantee: anything about what the server does inside its sandbox within its limits
 * (it runs unmodified third-party code); that a pinned description stays harmless (a pin
 * detects change, not intent).
 */
export class ServerBackend implements Backend<ServerJob> {
  readonly kind = 'server' as const;
  readonly owner: string;
  readonly docker: Docker;
  readonly #deps: ServerSandboxDeps;
  readonly #handshakeMs: number;
  readonly #pool: ServerPool | undefined;
  readonly #running = new Set<() => void>();
  /** `lifetime: "principal"` sandboxes by (affinity key, settings key), and the chain that runs their calls one at a time. */
  readonly #sticky = new Map<string, Sticky>();
  #closed = false;
  #closing: Promise<void> | undefined;

  readonly #removals: DeferredRemovals;

  constructor(options: ServerBackendOptions = {}) {
    this.docker = options.docker ?? new Docker();
    this.owner = `${hostname()}/${process.pid}/${randomUUID()}`;
    const provenance = Provenance.of(options.stateDir);
    const keeper = new DeadlineKeeper(this.docker);
    this.#deps = {docker: this.docker, owner: this.owner, provenance, keeper, remover: new ContainerRemover(this.docker, provenance, keeper),
      ...(options.egress ? {egress: options.egress} : {})};
    this.#handshakeMs = options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    this.#removals = new DeferredRemovals(options.maxPendingRemovals ?? MAX_PENDING_REMOVALS);
    const removals = this.#removals;
    this.#pool = options.pool ? new ServerPool(this.#deps, {...options.pool, handshakeTimeoutMs: this.#handshakeMs, alsoLive: () => removals.live()}) : undefined;
    // A removal that settles may make room for a member the pool's bounds held back.
    if (this.#pool) removals.onSettled = () => this.#pool?.refillAll();
  }

  /** Keeps pre-initialized members ready for jobs like `template` (no-op without a pool). */
  prewarm(template: ServerJob): void {
    if (!this.#closed) this.#pool?.register(template);
  }

  /** Members ready and being created, members started in all (zeros without a pool); `removing`: calls' containers still being removed. */
  poolStats(): {ready: number; creating: number; keys: number; started: number; removing: number} {
    return {...(this.#pool?.stats() ?? {ready: 0, creating: 0, keys: 0, started: 0}), removing: this.#removals.live().count};
  }

  /**
   * Runs one call; see the class comment. A job with `affinity` (`lifetime: "principal"`) runs in
   * the sandbox kept for its (key, settings), one call at a time: started (and pinned) at its
   * first call, kept after each successful call until `idleMs` pass without one, removed after
   * any failed, stopped or refused call (its state is then lost) and at close.
   * @throws ToolcellError `BACKEND_UNAVAILABLE` (`secrets-kept-server`) for a job with `affinity`
   *   whose sandbox carries secrets (hosted-tools.ts leaves such tools out; this is the backstop).
   */
  async run(job: ServerJob, options: {signal: AbortSignal; onEvent?: (event: BackendEvent) => void}): Promise<ExecutionResult> {
    if (job.affinity === undefined) return this.#runOnce(job, options, undefined);
    // A kept server's environment is fixed at its start: it would carry one call's secret placeholders into the next calls.
    if (job.sandbox.egress?.secrets !== undefined) {
      throw new ToolcellError('BACKEND_UNAVAILABLE', 'A hosted server kept per principal cannot receive secrets (they are given per call); the call was not run.', {reason: 'secrets-kept-server'});
    }
    const key = `${job.affinity.key}\0${serverPoolKey(job.sandbox)}`;
    let sticky = this.#sticky.get(key);
    if (!sticky) {
      sticky = {chain: Promise.resolve(), member: undefined, idle: undefined};
      this.#sticky.set(key, sticky);
    }
    const entry = sticky;
    const t0 = performance.now();
    const turn = entry.chain.then(async () => {
      if (options.signal.aborted) return makeResult(performance.now() - t0, {isCanceled: true});
      return this.#runOnce(job, options, entry);
    });
    entry.chain = turn.then(() => undefined, () => undefined);
    return turn;
  }

  async #runOnce(job: ServerJob, options: {signal: AbortSignal; onEvent?: (event: BackendEvent) => void}, sticky: Sticky | undefined): Promise<ExecutionResult> {
    const t0 = performance.now();
    const elapsed = () => performance.now() - t0;
    const {signal} = options;
    if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The hosted-server backend is shutting down.', {reason: 'closed'});
    if (signal.aborted) return makeResult(elapsed(), {isCanceled: true});
    // Too many earlier servers still being removed: wait for one (this call holds its dispatch slot meanwhile).
    try {
      await this.#removals.room(signal);
    } catch {
      return makeResult(elapsed(), {isCanceled: true});
    }
    if (this.#closed) throw new ToolcellError('BACKEND_UNAVAILABLE', 'The hosted-server backend is shutting down.', {reason: 'closed'});
    const callLog = log.child({jobId: job.id, package: job.packageName, tool: job.tool});

    const stop = new AbortController();
    let reason: StopReason | undefined;
    const terminate = (r: StopReason) => {
      if (reason) return;
      reason = r;
      stop.abort(new Error(r));
    };
    const onAbort = () => terminate('cancel');
    signal.addEventListener('abort', onAbort, {once: true});
    this.#running.add(onAbort);
    let timer = setTimeout(() => terminate('start-timeout'), START_TIMEOUT_MS);

    // Notifications are relayed only once tools/call was sent, bounded, progress strictly increasing.
    const progressToken = `toolcell-${job.id}`;
    let relaying = false;
    let progressCount = 0;
    let logCount = 0;
    let lastProgress = 0;
    // A call with secrets: a notification's text is scrubbed before it is cut, so no value straddling the cut leaves as a prefix.
    const scrubText = outputScrubber(job)?.text;
    const handlers: SessionHandlers = {
      onProgress: (p: Record<string, unknown>) => {
        if (!relaying || p.progressToken !== progressToken || typeof p.progress !== 'number' || !Number.isFinite(p.progress)) return;
        if (p.progress <= lastProgress || ++progressCount > MAX_RELAYED_EVENTS) return;
        lastProgress = p.progress;
        options.onEvent?.({type: 'progress', progress: p.progress,
          ...(typeof p.total === 'number' && Number.isFinite(p.total) ? {total: p.total} : {}),
          ...(typeof p.message === 'string' ? {message: (scrubText ? scrubText(p.message) : p.message).slice(0, 1024)} : {})});
      },
      onLog: (p: Record<string, unknown>) => {
        if (!relaying || ++logCount > MAX_RELAYED_EVENTS) return;
        // data is untrusted JSON of any depth: relayed as bounded one-line text (bounded-json.ts), never as the value;
        // level is one of MCP's names, logger a safe name, so neither can forge a line of ours.
        options.onEvent?.({type: 'log', level: typeof p.level === 'string' && LOG_LEVELS.has(p.level) ? p.level : 'info',
          ...(typeof p.logger === 'string' && SAFE_LOGGER.test(p.logger) ? {logger: p.logger} : {}), data: oneLine(boundedScrubbedText(p.data, scrubText))});
      },
      onServerRequest: (method: string) => callLog.debug({method: method.slice(0, 100)}, 'server→client request refused'),
      onFailure: (f: {kind: string}) => {
        if (f.kind === 'output-limit') terminate('truncated');
      },
    };

    let server: ServerSandbox | undefined;
    let keep = false;
    let egressLimit: EgressLimitHit | undefined;
    try {
      // The principal's kept sandbox, a pre-initialized member (handshake done, tools/list answered), or a cold server.
      if (sticky?.idle) clearTimeout(sticky.idle);
      let kept = sticky?.member;
      if (sticky) sticky.member = undefined;
      if (kept && kept.server.session.failure !== undefined) {
        // The kept server ended or broke while idle: a fresh one serves this call.
        await kept.server.remove(REMOVE_TIMEOUT_MS);
        kept = undefined;
      }
      // A prompt or resource request (job.operation) never takes a member: members listed tools/list only.
      // No member ready: wait for one being created (within the start budget) rather than start another server.
      const member = kept ?? (sticky || job.operation !== undefined ? undefined : await this.#pool?.take(job, stop.signal));
      // Stopped while waiting and no member came (one that came is owned below, and removed on the way out).
      if (!member) stop.signal.throwIfAborted();
      const sessionHandlers = member ? member.handlers : handlers;
      let listed: Record<string, unknown>[];
      if (member) {
        server = member.server;
        Object.assign(member.handlers, handlers);
        listed = member.listed;
        clearTimeout(timer);
        if (server.session.failure !== undefined) throw new ServerFailure(server.session.failure.kind === 'closed' ? 'exited' : server.session.failure.kind, server.session.failure.message);
      } else {
        listed = await this.#coldStart(job, handlers, stop.signal, (t) => {
          clearTimeout(timer);
          timer = t;
        }, terminate, (s) => {
          server = s;
        });
      }
      const active: ServerSandbox | undefined = server;
      if (active === undefined) throw new ToolcellError('INTERNAL', 'The hosted server was not started.');
      const verdict = job.verifyListing(listed);
      if (verdict.drift && verdict.drift.length > 0) callLog.warn({drift: verdict.drift}, 'hosted server lists tools that differ from their pins');
      if (!verdict.ok) {
        callLog.warn({changes: verdict.changes}, 'hosted tool refused: its definition differs from its pin');
        throw new ToolcellError('DENIED', verdict.message, {rule: 'pin', changes: verdict.changes});
      }

      // Egress (lifetime "principal"): the kept server gets this call's own session and relay
      // (fresh limits, audited under this call's id); a cold server got them at its start.
      if (kept !== undefined && active.hasEgress) {
        try {
          await active.bindEgress(job.sandbox.egress);
        } catch (err) {
          // E.g. the kept server took 127.0.0.1:3128 itself while idle: it only loses its route; the call fails and the server is removed.
          callLog.warn({err}, 'the kept hosted server\'s egress relay could not be bound to this call');
          return makeResult(elapsed(), {error: {name: 'EgressUnavailable', message: 'the hosted server\'s egress relay could not be started for this call (is the server holding 127.0.0.1:3128?); the call was not sent'}});
        }
      }

      // The call: the tool's own time starts now.
      clearTimeout(timer);
      this.#deps.keeper.watch(active.id, Date.now() + job.limits.timeoutMs);
      timer = setTimeout(() => terminate('timeout'), job.limits.timeoutMs);
      relaying = true;
      active.session.resetOutputBudget();
      const operation = job.operation;
      const result = operation
        ? await active.guard(active.session.request(operation.method, {...operation.params, _meta: {progressToken}}), stop.signal, operation.method)
        : await active.guard(active.session.request('tools/call', {name: job.tool, arguments: job.args, _meta: {progressToken}}), stop.signal, 'tools/call');
      relaying = false;
      const pidsLimited = active.pidsLimited();
      egressLimit = active.egressLimit;
      // The server's fault, not toolcell's: a result nested deeper than any tool needs is refused before anything serializes it.
      if (jsonDepth(result, MAX_RESULT_DEPTH) > MAX_RESULT_DEPTH) {
        return makeResult(elapsed(), {pidsLimited, error: {name: 'ResultTooDeep',
          message: `the hosted server's result is nested more than ${MAX_RESULT_DEPTH} levels deep (arrays/objects); toolcell relays at most ${MAX_RESULT_DEPTH}`}});
      }
      if (sticky && !pidsLimited && egressLimit === undefined && !this.#closed && active.session.failure === undefined) {
        // Kept for the principal's next call: removed after idleMs without one (or by the keeper if this process dies).
        keep = true;
        const idleMs = job.affinity!.idleMs;
        // The handlers object the session holds: the one it was started with.
        // Between calls the kept server has no route at all: its session and relay end with this call.
        await active.releaseEgress();
        sticky.member = {server: active, listed, handlers: sessionHandlers};
        this.#deps.keeper.watch(active.id, Date.now() + idleMs + job.limits.timeoutMs);
        sticky.idle = setTimeout(() => {
          if (sticky.member?.server !== active) return;
          sticky.member = undefined;
          void active.remove(REMOVE_TIMEOUT_MS);
        }, idleMs);
        sticky.idle.unref();
      }
      return withEgressLimit(makeResult(elapsed(), {stdout: JSON.stringify(result), pidsLimited}), egressLimit);
    } catch (err) {
      egressLimit ??= server?.egressLimit;
      relaying = false;
      if (reason === 'start-timeout' && server === undefined) {
        throw new ToolcellError('BACKEND_UNAVAILABLE',
          `The hosted server's sandbox could not be started within ${START_TIMEOUT_MS / 1000} s (the container engine is overloaded); the tool did not run.`,
          {reason: 'start-timeout', startTimeoutMs: START_TIMEOUT_MS});
      }
      if (reason) return withEgressLimit(this.#stopped(reason, elapsed, server), egressLimit);
      if (server === undefined && !(err instanceof ToolcellError)) throw startFailure(err);
      if (err instanceof ServerFailure) return withEgressLimit(await this.#failed(err, elapsed, server), egressLimit);
      throw err;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      // A member was taken (or none was ready): its replacement starts once the call is done and its result was
      // handed on (next turn of the event loop), so that creating it competes with neither for the engine or the CPUs.
      if (!sticky && job.operation === undefined && this.#pool) {
        const pool = this.#pool;
        setImmediate(() => pool.refill(job));
      }
      if (server && !keep) {
        server.logStderr({jobId: job.id, package: job.packageName});
        await this.#retire(server, job, reason);
      }
      this.#running.delete(onAbort);
    }
  }

  /**
   * Ends the server of a finished call (see the class comment): a cancelled call's container is
   * removed now; a server whose profile grants anything outside the sandbox, or whose call
   * toolcell stopped, is killed now (removed now if the kill is not confirmed); the removal
   * itself then goes to the bounded background set. Never throws.
   */
  async #retire(server: ServerSandbox, job: ServerJob, reason: StopReason | undefined): Promise<void> {
    if (reason === 'cancel') {
      await server.remove(CANCEL_REMOVE_TIMEOUT_MS);
      return;
    }
    if ((reason !== undefined || !poolable(job.sandbox)) && !(await server.kill(KILL_TIMEOUT_MS))) {
      await server.remove(REMOVE_TIMEOUT_MS);
      return;
    }
    this.#removals.add(() => server.remove(REMOVE_TIMEOUT_MS), job.sandbox.limits.memoryMb);
  }

  /**
   * Starts a cold server for `job` (within the start budget already running), hands it to
   * `own` as soon as it exists (the caller removes it), then performs the handshake and the
   * listing within the handshake budget (`setTimer` replaces the call's timer).
   * @returns the server's `tools/list`.
   */
  async #coldStart(job: ServerJob, handlers: SessionHandlers, signal: AbortSignal,
    setTimer: (t: NodeJS.Timeout) => void, terminate: (r: StopReason) => void, own: (s: ServerSandbox) => void): Promise<Record<string, unknown>[]> {
    const deadlineAt = Date.now() + START_TIMEOUT_MS + this.#handshakeMs + job.limits.timeoutMs;
    const server = await ServerSandbox.start(this.#deps, job.sandbox, {signal, deadlineAt, handlers});
    own(server);
    setTimer(setTimeout(() => terminate('handshake-timeout'), this.#handshakeMs));
    await server.initialize(signal);
    return server.list(job.operation?.list.method ?? 'tools/list', job.operation?.list.key ?? 'tools', signal);
  }

  /** A call toolcell stopped: deadline, cancellation, output cap, handshake budget. */
  #stopped(reason: StopReason, elapsed: () => number, server?: ServerSandbox): ExecutionResult {
    const pidsLimited = server?.pidsLimited() ?? false;
    switch (reason) {
      case 'cancel': return makeResult(elapsed(), {isCanceled: true});
      case 'timeout': return makeResult(elapsed(), {timedOut: true, pidsLimited});
      case 'truncated': return makeResult(elapsed(), {truncated: true, pidsLimited});
      case 'handshake-timeout':
      case 'start-timeout':
        return makeResult(elapsed(), {pidsLimited, error: {name: 'HandshakeTimeout',
          message: `the hosted server did not complete the MCP handshake (initialize, tools/list) within ${this.#handshakeMs} ms`}});
    }
  }

  /** A server that broke the protocol, or ended by itself, before answering. */
  async #failed(failure: ServerFailure, elapsed: () => number, server?: ServerSandbox): Promise<ExecutionResult> {
    if (failure.kind === 'output-limit') return makeResult(elapsed(), {truncated: true, pidsLimited: server?.pidsLimited() ?? false});
    if (failure.kind === 'exited' && server) {
      const why = await server.exitAttribution(EXIT_WAIT_MS);
      return makeResult(elapsed(), {
        failed: true,
        outOfMemory: why.outOfMemory,
        pidsLimited: why.pidsLimited,
        ...(why.signal !== undefined ? {signal: why.signal} : {}),
        error: {name: 'ServerExited', message: `the hosted server ended before it answered${why.exitCode !== undefined ? ` (exit code ${why.exitCode})` : why.signal !== undefined ? ` (killed by signal ${why.signal})` : ''}`},
      });
    }
    const name = failure.kind === 'refused' ? 'JsonRpcError' : 'ProtocolError';
    return makeResult(elapsed(), {pidsLimited: server?.pidsLimited() ?? false, error: {name, message: failure.message}});
  }

  /**
   * Cancels calls in flight (each removes its container), then removes whatever this instance
   * still tracks and reaps its own leftovers. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      for (const cancel of this.#running) cancel();
      for (let i = 0; i < 40 && this.#running.size > 0; i++) await new Promise((r) => setTimeout(r, 50));
      await this.#removals.drain();
      await this.#pool?.close();
      for (const sticky of this.#sticky.values()) {
        if (sticky.idle) clearTimeout(sticky.idle);
        const kept = sticky.member;
        sticky.member = undefined;
        if (kept) await kept.server.remove(REMOVE_TIMEOUT_MS);
      }
      await this.#deps.remover.close();
      try {
        const reaped = await reapContainers(this.docker, {owner: this.owner, provenance: this.#deps.provenance});
        if (reaped.failed.length === 0 && this.#deps.remover.clean) this.#deps.keeper.releaseAll();
      } catch (err) {
        log.debug({err}, 'reap at close failed');
      }
      await this.#deps.remover.reapShims();
      this.#deps.keeper.close();
    })();
    return this.#closing;
  }

  /** The container-tier parts of this backend (for probeServer and the warm pool). */
  get deps(): ServerSandboxDeps {
    return this.#deps;
  }
}
