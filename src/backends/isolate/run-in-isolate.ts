// Runs one tool call in one prepared isolate inside the worker: limits, output capture, result.
import {performance} from 'node:perf_hooks';
import ivm from 'isolated-vm';
import type {CodeCache} from './code-cache.ts';
import {CompileSlots} from './compile-slots.ts';
import {ERROR_TEXT_LIMITS, type DrainResult, type RunnerResult} from './prelude.ts';
import {watchDeadline} from './own-time-deadline.ts';
import {disposePrepared, prepareIsolate, type PreparedIsolate} from './prepared-isolate.ts';
import {LRUCache} from 'lru-cache';
import {importRefusal, THREAD_WRAP_BUDGET, TOOL_SPECIFIER, UNWRAPPED_SETTLE_SOURCE, WRAP_LINE_OFFSET, wrapperBreakRefusal, wrapToolModule, type NotWrapped, type WrapRefusal, type WrappedModule} from './module-wrap.ts';
import {wrapThread} from './module-wrap-thread.ts';
import {cutUtf8} from './utf8-cut.ts';
import type {WarmPool} from './warm-pool.ts';
import type {ResolvedRun, ToolError, WorkerOutcome} from './worker-protocol.ts';

/** What `runInIsolate` needs from the worker process. */
export interface RunDeps {
  /** Warm isolates; undefined when the pool is off. */
  pool: WarmPool | undefined;
  /** V8 code cache; undefined when off. */
  codeCache: CodeCache | undefined;
  removeWebAssembly: boolean;
  /** Given to every isolate as isolated-vm's `onCatastrophicError`. */
  onCatastrophicError: (message: string) => void;
  /** Called when an isolate's work did not stop within 1 s of its disposal (see `WorkerMessage` 'wedged'). */
  onWedged: () => void;
  /**
   * Optional: receives the disposal of an isolate whose call completed normally, so the
   * worker can send the reply first and dispose right after (the isolate is still never
   * reused; nothing can reach it meanwhile). The receiver must run `task` soon, in the
   * same turn after the reply. Without it the isolate is disposed before this resolves.
   * Calls that timed out, were cancelled or failed are always disposed at once.
   */
  afterReply?: (task: () => void) => void;
  /**
   * Present for a call with an egress grant: its isolate gets a global `fetch`. Each request
   * the tool makes is handed to `send` (the isolate's own id for it, and its JSON text,
   * unvalidated); `attach` receives the function that hands an answer back into the isolate,
   * which the worker calls once per request.
   */
  fetch?: {
    send(isolateFetchId: number, requestJson: string): void;
    attach(deliver: (isolateFetchId: number, responseJson: string) => void): void;
  };
}

/** How long a drain of the console may take after a timeout, in ms (from when it starts running). */
const DRAIN_WAIT_MS = 100;
/** After this long (ms) past its disposal, a call's work that has not settled is reported as wedged. */
const WEDGED_AFTER_MS = 1000;
/**
 * After a timeout, how long (ms) the drain may wait for the step the isolate is still
 * running to end, before its own `DRAIN_WAIT_MS` start. The deadline's timer usually fires
 * while the tool's step still runs; isolated-vm's own step `timeout` then ends that step
 * 12-250+ ms later on a loaded host (seen beside 2 CPU burners), and the drain, a task of
 * the same isolate, runs only after it: waiting only `DRAIN_WAIT_MS` lost the console text
 * the tool wrote before its deadline (3 calls in 30). A step that never ends (a wedged
 * native copy, a compile V8 cannot interrupt) never lets the drain run, hence this cap:
 * the time after which such work is taken for wedged (`WEDGED_AFTER_MS`). An idle
 * isolate runs the drain at once: the wait costs nothing then.
 * Does NOT guarantee the text: a step still running after this cap loses it (the call is
 * still `TIMEOUT`, with no console text).
 */
const STEP_END_WAIT_MS = WEDGED_AFTER_MS;
/** isolated-vm `timeout` of an idle probe (it runs no tool code), in ms. */
const PROBE_TIMEOUT_MS = 100;
/** Poll interval (ms) of `isolate.cpuTime` when the CPU limit is below the wall-clock limit. */
const CPU_POLL_MS = 10;
const TIMED_OUT_MESSAGE = 'Script execution timed out.';
const NOT_AN_ERROR_MESSAGE = 'An object was thrown from supplied code within isolated-vm, but that object was not an instance of `Error`.';
const ARRAY_BUFFER_FAILED = 'Array buffer allocation failed';

/**
 * Sources up to this many UTF-16 units are compiled with the synchronous `compileModuleSync`
 * (no thread hop); larger ones compile with `compileModule` on the isolate's thread, *with
 * or without* cached code data, so the worker's main thread stays free for other calls'
 * replies, deadlines and cancels. Why 64 Ki: V8 parses (or deserialises) a module in time
 * roughly linear in its size, about 0.1 s per MB on this host (a 10.9 MB module took
 * 1.1-1.3 s *from the code cache*); 64 Ki units stay far below a millisecond, where the
 * thread hop (also about a millisecond on a loaded host) would cost more than it saves.
 * Seen (red team F2): compiling a 10 MB module synchronously from the cache blocked every
 * other call of the worker for over a second per call.
 */
export const SYNC_COMPILE_MAX_CHARS = 64 * 1024;

/**
 * Large compiles of this worker, one at a time (see `CompileSlots`): with 8 at once on a
 * 2-CPU host the worker's main thread got so little CPU that trivial calls beside them
 * still waited seconds. A call waits for its turn once its source is rewritten (the
 * parse holds no turn) and before its compile starts; the wait is not its own time (its
 * isolate is not entered); its backstop or a cancel ends the wait.
 */
const largeCompiles = new CompileSlots(1);

/**
 * Total UTF-16 length of the wrapped texts a worker keeps (`wrapped`): one whole largest
 * entry (16 MiB, `MAX_ENTRY_BYTES` in policy/load-packages.ts) with its wrapper (about 150
 * units) fits. At 16 Mi it did not (lru-cache keeps no item over its `maxSize`), so every
 * call of a maximal module was parsed again, up to its CPU budget on the rewrite thread.
 */
export const WRAPPED_CACHE_CHARS = 16 * 2 ** 20 + 64 * 1024;

/**
 * Wrapped tool modules (module-wrap.ts) by the sha256 of their source, so a source is
 * parsed once per worker, not per call. Bounded by the UTF-16 length of the wrapped
 * texts (a refusal counts 1); least recently used first out. The wrap is a function of
 * the source text only (and of this process's code), so an entry can never be stale; a
 * refusal, whose message names the file, is keyed by source hash and filename.
 */
const wrapped = new LRUCache<string, WrappedModule | WrapRefusal | NotWrapped>({
  maxSize: WRAPPED_CACHE_CHARS,
  sizeCalculation: (w) => ('source' in w ? Math.max(1, w.source.length) : 1),
});

/**
 * The wrapped module of `request`'s source (see `wrapToolModule`), parsed on first sight
 * in this worker: on this thread up to `SYNC_COMPILE_MAX_CHARS`, else on the rewrite
 * thread (module-wrap-thread.ts), so a large parse does not hold other calls' replies.
 */
async function wrappedSource(request: ResolvedRun): Promise<WrappedModule | WrapRefusal | NotWrapped> {
  // A refusal names the file it was made for, so it is kept under source and filename.
  const refusalKey = `${request.sourceHash}\0${request.filename}`;
  const known = wrapped.get(request.sourceHash) ?? wrapped.get(refusalKey);
  if (known !== undefined) return known;
  if (request.source.length <= SYNC_COMPILE_MAX_CHARS) {
    // The thread's budget here too: within 64 Ki characters only its count of nested `var` records can be reached.
    return remember(wrapToolModule(request.source, request.filename, THREAD_WRAP_BUDGET), request.sourceHash, refusalKey);
  }
  // Calls of a large source that arrive while it is being parsed wait for that one parse
  // (a flood of one 15 MB module made 16 parses and 16 copies of its source on the thread).
  let parse = wrapping.get(refusalKey);
  if (parse === undefined) {
    parse = wrapThread.wrap(request.source, request.filename)
      .then((fresh) => remember(fresh, request.sourceHash, refusalKey))
      .finally(() => wrapping.delete(refusalKey));
    wrapping.set(refusalKey, parse);
  }
  return parse;
}

/** Rewrites on the rewrite thread not yet answered, by source hash and filename (see `wrappedSource`). */
const wrapping = new Map<string, Promise<WrappedModule | WrapRefusal | NotWrapped>>();

/** Keeps `fresh` in `wrapped` (a refusal under its filename too) and returns it. */
function remember(fresh: WrappedModule | WrapRefusal | NotWrapped, sourceHash: string, refusalKey: string): WrappedModule | WrapRefusal | NotWrapped {
  wrapped.set('error' in fresh ? refusalKey : sourceHash, fresh);
  return fresh;
}

/**
 * The resolver of the settle wrapper of an unwrapped module: gives it the call's tool
 * module and nothing else. Made by a module-level factory so the closure holds only
 * `tool`, never the scope of `execute` (see `refuseImport` on why that matters).
 */
function resolveToolOnly(tool: ivm.Module): (specifier: string) => ivm.Module {
  return (specifier: string): ivm.Module => {
    if (specifier === TOOL_SPECIFIER) return tool;
    throw new Error(importRefusal(specifier));
  };
}

/**
 * Key of a wrapped module's V8 code cache data: the source's sha256 under the wrapper's
 * name, so data compiled from a wrapped text is never taken for the tool's own text.
 */
const codeCacheKey = (sourceHash: string): string => `wrapped:${sourceHash}`;

/**
 * The module resolver of every call: refuses every specifier. Defined once, at module
 * level, on purpose: isolated-vm keeps the resolver given to `instantiate` in a
 * persistent handle after the call (seen with 7.0.1), and a closure made inside a call
 * would keep that call's whole scope alive (its isolate, and the copy of a value its
 * module threw: hundreds of MB left resident in the worker).
 */
function refuseImport(specifier: unknown): never {
  throw new Error(importRefusal(String(specifier)));
}

/**
 * A copy of the first `max` UTF-16 units of `text` that does not refer to `text`: V8
 * makes a slice of a long string a view that keeps the whole parent alive (a 150 MB
 * thrown message would stay resident as long as its 4 KB head is referenced).
 */
function detachedHead(text: string, max: number): string {
  return Buffer.from(text.slice(0, max), 'utf16le').toString('utf16le');
}

function boundedError(name: string, message: string): ToolError {
  return {name: detachedHead(name, ERROR_TEXT_LIMITS.nameChars) || 'Error', message: detachedHead(message, ERROR_TEXT_LIMITS.messageChars)};
}

/**
 * Name and message of an error that isolated-vm raised on the host side for the tool
 * (a SyntaxError at compile time, a throw during module evaluation, an unhandled
 * rejection): only `name` and `message`, never the host stack.
 */
function describeHostError(error: unknown): ToolError {
  if (error instanceof Error) {
    const message = error.message === NOT_AN_ERROR_MESSAGE ? 'A value that is not an Error was thrown.' : error.message;
    return boundedError(typeof error.name === 'string' ? error.name : 'Error', message);
  }
  if (error === null || error === undefined || typeof error === 'object' || typeof error === 'function') {
    return boundedError('Error', 'A value that is not an Error was thrown.');
  }
  return boundedError('Error', String(error));
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : '';
}

const base = (pooled: boolean, codeCacheHit: boolean): WorkerOutcome => ({
  failed: true, timedOut: false, outOfMemory: false, truncated: false, stdout: '', stderr: '', pooled, codeCacheHit,
});

/**
 * Runs one job in a fresh isolate (from the warm pool, else newly created) and disposes
 * it. Resolves a `WorkerOutcome` for anything the tool did; rejects only when no
 * isolate could be created.
 *
 * Order: `init` the prelude with the output cap → the source wrapped by `wrapToolModule`
 * (module-wrap.ts; parsed once per worker and source; a refused module, a SyntaxError or
 * an import, ends the call here with its error) → `compileModule` of the wrapped text
 * (with cached code data when its key is in the code cache; off the main thread above
 * `SYNC_COMPILE_MAX_CHARS`) → `instantiate` with a resolver that refuses every specifier
 * → `evaluate({timeout})` (defines the wrapper only) → the prelude's `run` with the
 * module's namespace and the argument JSON, `{timeout, result: {copy: true, promise:
 * true}}`: `run` calls the wrapper (the tool's top level, top-level await included) and
 * the default export inside one try/catch, so nothing the tool throws is copied out. Code data produced by the compile
 * enters the code cache only after the call ended normally.
 *
 * Time: `watchDeadline` (own-time-deadline.ts) ends the call when the isolate's own
 * running time (`isolate.wallTime` since it was ready) reaches `timeoutMs`, when it is idle
 * with the tool's promise pending after `timeoutMs` of wall clock (a `probe` task), or at
 * `limits.backstopMs` of wall clock, even when isolated-vm's own `timeout` (given what is
 * left of the own time, per step) does not apply (microtasks, a promise that never
 * settles) or does not fire; the console text is then drained (a task queued behind the
 * step still running, which may take up to `STEP_END_WAIT_MS` to end, then ≤ 100 ms) and
 * the isolate disposed. CPU time (`isolate.cpuTime`) is polled every 10 ms when `cpuTimeMs` is below
 * `timeoutMs`. Aborting `signal` disposes the isolate at once.
 *
 * Does NOT guarantee: that the isolate's thread stops when disposed (isolated-vm can
 * hang copying a hostile thrown value out); that case is reported via `deps.onWedged`.
 */
export async function runInIsolate(request: ResolvedRun, signal: AbortSignal, deps: RunDeps): Promise<WorkerOutcome> {
  const {limits} = request;
  let prepared = deps.pool?.take(limits.memoryMb);
  const pooled = prepared !== undefined;
  prepared ??= prepareIsolate({
    memoryMb: limits.memoryMb, removeWebAssembly: deps.removeWebAssembly, onCatastrophicError: deps.onCatastrophicError,
  });
  if (signal.aborted) {
    disposePrepared(prepared);
    return base(pooled, false);
  }
  return await execute(request, signal, deps, prepared, pooled);
}

async function execute(
  request: ResolvedRun, signal: AbortSignal, deps: RunDeps, prepared: PreparedIsolate, pooled: boolean,
): Promise<WorkerOutcome> {
  const {limits} = request;
  const {isolate, context, entry} = prepared;
  let stop: 'timeout' | 'cancel' | undefined;
  /** The isolate's own running time when the call ended (its deadline, a cancel, or its work settled first), in ms. */
  let endOwnMs: number | undefined;
  let disposedByUs = false;
  let codeCacheHit = false;
  /**
   * Code data this call's compile produced, and the key it was looked up by (wrapped or
   * not): stored in the code cache only once the call succeeded (not timed out, cancelled, failed, at its top level or after, or out of memory), so a
   * call that failed does not make every later call of its source cheaper to start.
   */
  let produced: {key: string; data: ivm.ExternalCopy<ArrayBuffer>} | undefined;
  /**
   * A large compile is running on the isolate's thread: V8 does not interrupt it, but it
   * ends by itself (in time bounded by the source size), so a call stopped during one is
   * not reported wedged until it has ended.
   */
  let compiling = false;
  const dispose = (): void => {
    if (!isolate.isDisposed) disposedByUs = true;
    disposePrepared(prepared);
  };

  let onStop: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    onStop = resolve;
  });
  const halt = (reason: 'timeout' | 'cancel'): void => {
    if (stop !== undefined) return;
    stop = reason;
    endOwnMs ??= ownMs();
    if (reason === 'cancel') dispose();
    onStop();
  };
  // The deadline measures the tool's own execution from the moment its isolate is ready:
  // the isolate's running time (`isolate.wallTime`), not the time it waits for a CPU, a
  // thread or this process's main thread; see `watchDeadline`.
  const readyAt = performance.now();
  const wallAtReady = isolate.wallTime;
  /** The isolate's own running time since it was ready, in ms (Infinity once disposed). */
  const ownMs = (): number => {
    try {
      return Number(isolate.wallTime - wallAtReady) / 1e6;
    } catch {
      return Infinity;
    }
  };
  const deadline = watchDeadline({
    timeoutMs: limits.timeoutMs, backstopMs: limits.backstopMs, readyAt, ownMs,
    probe: () => entry.apply(undefined, ['probe'], {timeout: PROBE_TIMEOUT_MS, result: {copy: true}}),
    onTimeout: () => halt('timeout'),
  });
  let cpuTimer: NodeJS.Timeout | undefined;
  if (limits.cpuTimeMs < limits.timeoutMs) {
    const cpuLimitNs = BigInt(Math.ceil(limits.cpuTimeMs)) * 1_000_000n;
    cpuTimer = setInterval(() => {
      try {
        if (isolate.cpuTime - prepared.cpuTimeAtReady > cpuLimitNs) halt('timeout');
      } catch {
        // Disposed meanwhile.
      }
    }, CPU_POLL_MS);
  }
  const onAbort = (): void => halt('cancel');
  signal.addEventListener('abort', onAbort, {once: true});

  // isolated-vm's own `timeout` of a step starts when the step starts running on the
  // isolate's thread: give it what is left of the tool's own time.
  const remaining = (): number => Math.max(1, Math.ceil(limits.timeoutMs - ownMs()));
  const work = (async (): Promise<unknown> => {
    // Steps that run no tool code and are short (the prelude's `init`, compilation of a
    // small source, instantiation) are synchronous: no hop to the isolate's thread.
    // Evaluation and the call itself run tool code and stay asynchronous, so a slow tool
    // never blocks the worker's main thread (other calls, deadlines, cancellation).
    entry.applySync(undefined, ['init', limits.outputBytes], {timeout: remaining()});
    // A large source is parsed on the rewrite thread (once per worker: calls of one source
    // share the parse), then compiled in its turn of `largeCompiles`. Nothing of the call
    // runs during the parse, so a stop ends the wait at once (the parse goes on, for the
    // next call of the source), and the call holds no compile slot meanwhile: a slow parse
    // delays only the parses queued behind it, not the compile of a source already parsed.
    const large = request.source.length > SYNC_COMPILE_MAX_CHARS;
    const wrap = large
      ? await Promise.race([wrappedSource(request), stopped.then(() => undefined)])
      : await wrappedSource(request);
    if (wrap === undefined || stop !== undefined) return undefined;
    if ('error' in wrap) return {refused: wrap.error};
    const turn = large ? largeCompiles.take() : undefined;
    if (turn) {
      await Promise.race([turn.ready, stopped]);
      if (stop !== undefined) {
        turn.leave();
        return undefined;
      }
    }
    const cache = deps.codeCache;
    const unwrapped = 'unwrapped' in wrap;
    const text = 'source' in wrap ? wrap.source : request.source;
    const key = unwrapped ? request.sourceHash : codeCacheKey(request.sourceHash);
    const cached = cache?.get(key);
    const origin = unwrapped ? {filename: request.filename} : {filename: request.filename, lineOffset: WRAP_LINE_OFFSET};
    const compileOptions = cached ? {...origin, cachedData: cached} : {...origin, produceCachedData: cache !== undefined};
    // A large source compiles off the main thread even from cached data (see
    // SYNC_COMPILE_MAX_CHARS); the compile counts in the isolate's own time and the
    // deadline ends the call while it runs.
    let module: ivm.Module;
    // V8 refuses a wrapped module whose wrapper the tool's text closed early (WRAP_LABEL).
    const refusedByV8 = (error: unknown): {refused: ToolError} => {
      const refusal = unwrapped ? undefined : wrapperBreakRefusal(error, request.filename);
      if (refusal === undefined) throw error;
      return {refused: refusal};
    };
    if (turn === undefined) {
      try {
        module = isolate.compileModuleSync(text, compileOptions);
      } catch (error) {
        return refusedByV8(error);
      }
    } else {
      try {
        if (stop !== undefined) return undefined;
        compiling = true;
        module = await isolate.compileModule(text, compileOptions);
      } catch (error) {
        return refusedByV8(error);
      } finally {
        compiling = false;
        // Only once the compile has ended: a compile that outlived its call's deadline
        // still burns its CPU, so it keeps the slot.
        turn.leave();
      }
    }
    // isolated-vm sets these on the returned object (README, CachedDataOptions); its .d.ts omits them on Module.
    const cacheInfo = module as unknown as {cachedData?: ivm.ExternalCopy<ArrayBuffer>; cachedDataRejected?: boolean};
    if (cache && cached) {
      if (cacheInfo.cachedDataRejected === true) cache.delete(key);
      else codeCacheHit = true;
    } else if (cache && cacheInfo.cachedData) {
      // A call that ended while it compiled has already run its `finally`, which releases
      // `produced`: its data is released here, not left to the main heap's GC.
      if (stop !== undefined) cacheInfo.cachedData.release();
      else produced = {key, data: cacheInfo.cachedData}; // the key it was looked up by
    }
    if (stop !== undefined) return undefined;
    // The wrapped module's own top level only defines the wrapper function: no tool code
    // runs until the prelude's `run` calls it.
    module.instantiateSync(context, refuseImport);
    let top = module;
    if (unwrapped) {
      top = isolate.compileModuleSync(UNWRAPPED_SETTLE_SOURCE, {filename: 'toolcell:settle'});
      top.instantiateSync(context, resolveToolOnly(module));
    }
    await top.evaluate({timeout: remaining()});
    // With an egress grant: a fire-and-forget host callback (a plain function inside the
    // isolate, held only by the prelude's closure); answers come back through `deliver`.
    const fetchCallback = deps.fetch === undefined ? undefined : new ivm.Callback((id: unknown, json: unknown) => {
      if (typeof id === 'number' && typeof json === 'string') deps.fetch!.send(id, json);
    }, {ignored: true});
    deps.fetch?.attach((id, json) => {
      if (stop !== undefined || isolate.isDisposed) return;
      // The tool's continuation runs in this task: under what is left of its own time.
      entry.apply(undefined, ['deliver', id, json], {timeout: remaining()}).catch((error: unknown) => {
        if (messageOf(error) === TIMED_OUT_MESSAGE) halt('timeout');
      });
    });
    return await entry.apply(undefined, ['run', top.namespace.derefInto(), request.argsJson, request.contextJson ?? null, fetchCallback], {
      timeout: remaining(), result: {copy: true, promise: true},
    });
  })();

  /** The call returned a result that is not a failure: only then is its compiled code kept. */
  let succeeded = false;
  type First = {kind: 'done'; value: unknown} | {kind: 'error'; error: unknown} | {kind: 'stop'};
  const first = await Promise.race<First>([
    work.then((value) => ({kind: 'done', value}), (error: unknown) => ({kind: 'error', error})),
    stopped.then(() => ({kind: 'stop'})),
  ]);
  endOwnMs ??= ownMs();
  deadline.stop();
  if (cpuTimer) clearInterval(cpuTimer);
  signal.removeEventListener('abort', onAbort);

  // After a timeout the drain is queued behind the step the isolate may still be running
  // (see STEP_END_WAIT_MS); during a compile no tool code has run yet, so nothing is lost.
  const drainWaitMs = stop === 'timeout' && !compiling ? STEP_END_WAIT_MS + DRAIN_WAIT_MS : DRAIN_WAIT_MS;
  const drain = async (): Promise<DrainResult | undefined> => {
    if (isolate.isDisposed) return undefined;
    const drained = entry.apply(undefined, ['drain'], {timeout: DRAIN_WAIT_MS, result: {copy: true}})
      .then((value) => value as DrainResult, () => undefined);
    // The timer is cleared once the drain settles: a pending timer would keep this
    // call's scope (its isolate, a thrown value's copy) alive for its whole delay.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), drainWaitMs + 20);
    });
    try {
      return await Promise.race([drained, late]);
    } finally {
      clearTimeout(timer);
    }
  };
  const withConsole = async (outcome: WorkerOutcome): Promise<WorkerOutcome> => {
    const drained = await drain();
    if (drained && typeof drained.stderr === 'string') {
      const {text, cut} = cutUtf8(drained.stderr, limits.outputBytes);
      outcome.stderr = text;
      outcome.truncated ||= cut || drained.truncated === true;
    }
    return outcome;
  };

  /** Adds the call's own time (`WorkerOutcome.ownTimeMs`) when it could be read. */
  const timed = (outcome: WorkerOutcome): WorkerOutcome => {
    if (endOwnMs !== undefined && Number.isFinite(endOwnMs)) outcome.ownTimeMs = Math.round(endOwnMs * 10) / 10;
    return outcome;
  };

  try {
    if (stop === 'cancel') return timed(base(pooled, codeCacheHit));
    if (stop === 'timeout') return timed(await withConsole({...base(pooled, codeCacheHit), timedOut: true}));
    if (first.kind === 'done' && isRefusal(first.value)) return timed({...base(pooled, codeCacheHit), error: boundedError(first.value.refused.name, first.value.refused.message)});
    if (first.kind === 'done') {
      const outcome = fromRunner(first.value, limits.outputBytes, pooled, codeCacheHit);
      // A failure (its top level threw, inside the wrapper) leaves no compiled code behind.
      succeeded = !outcome.failed;
      return timed(outcome);
    }
    const error = first.kind === 'error' ? first.error : undefined;
    const message = messageOf(error);
    if ((isolate.isDisposed && !disposedByUs) || message.includes('due to memory limit')) {
      return timed({...base(pooled, codeCacheHit), outOfMemory: true});
    }
    if (message === TIMED_OUT_MESSAGE) return timed(await withConsole({...base(pooled, codeCacheHit), timedOut: true}));
    const toolError = describeHostError(error);
    return timed(await withConsole({
      ...base(pooled, codeCacheHit),
      outOfMemory: toolError.name === 'RangeError' && toolError.message === ARRAY_BUFFER_FAILED,
      error: toolError,
    }));
  } finally {
    if (produced !== undefined) {
      if (succeeded && stop === undefined && deps.codeCache) deps.codeCache.set(produced.key, produced.data);
      else produced.data.release();
    }
    if (first.kind === 'done' && stop === undefined && deps.afterReply) deps.afterReply(dispose);
    else dispose();
    if (first.kind === 'stop') {
      let settled = false;
      work.then(() => { settled = true; }, () => { settled = true; });
      const check = (): void => {
        if (settled) return;
        if (compiling) setTimeout(check, WEDGED_AFTER_MS).unref();
        else deps.onWedged();
      };
      setTimeout(check, WEDGED_AFTER_MS).unref();
    }
  }
}

function isRefusal(value: unknown): value is {refused: ToolError} {
  return typeof value === 'object' && value !== null && 'refused' in value;
}

/** Turns the prelude's `run` result into an outcome, re-checking its shape and sizes. */
function fromRunner(value: unknown, outputBytes: number, pooled: boolean, codeCacheHit: boolean): WorkerOutcome {
  const r = value as Partial<RunnerResult> | null;
  if (typeof r !== 'object' || r === null || typeof r.stdout !== 'string' || typeof r.stderr !== 'string') {
    return {...base(pooled, codeCacheHit), error: {name: 'Error', message: 'The isolate returned no result.'}};
  }
  const stdout = cutUtf8(r.stdout, outputBytes);
  const stderr = cutUtf8(r.stderr, outputBytes);
  const truncated = r.truncated === true || stdout.cut || stderr.cut;
  const outcome: WorkerOutcome = {
    ...base(pooled, codeCacheHit),
    failed: truncated,
    truncated,
    stdout: stdout.text,
    stderr: stderr.text,
  };
  const e = r.error;
  if (e !== undefined) {
    const error = typeof e === 'object' && e !== null && typeof e.name === 'string' && typeof e.message === 'string'
      ? boundedError(e.name, e.message)
      : {name: 'Error', message: 'A value that could not be described was thrown.'};
    outcome.error = error;
    outcome.failed = true;
    outcome.outOfMemory = error.name === 'RangeError' && error.message === ARRAY_BUFFER_FAILED;
  }
  return outcome;
}
