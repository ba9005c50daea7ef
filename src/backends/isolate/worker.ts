/**
 * Entry point of the isolate worker process, forked by `IsolateBackend` with
 * `--no-node-snapshot` (required by isolated-vm 7) and an IPC channel. It runs each job
 * in a fresh V8 isolate (`runInIsolate`) and reports over IPC; it writes nothing to
 * stdout (the supervisor ignores it anyway) and logs through the supervisor.
 *
 * `argv[2]` is the JSON `WorkerConfig`. The process exits when the IPC channel closes
 * (its supervisor is gone), and kills itself when isolated-vm reports a catastrophic
 * error (isolated-vm README: V8 "has lost all control over the isolate").
 */
import {writeSync} from 'node:fs';
import {setFlagsFromString} from 'node:v8';
import {runInNewContext} from 'node:vm';
import {CodeCache} from './code-cache.ts';
import {MemoryHygiene} from './worker-memory.ts';
import {POOL_PREPARE_OPTIONS, prepareIsolateSteps} from './prepared-isolate.ts';
import {runInIsolate, type RunDeps} from './run-in-isolate.ts';
import {SourceCache} from './source-cache.ts';
import {WarmPool} from './warm-pool.ts';
import {
  parseSupervisorMessage, parseWorkerConfig, type LogLevel, type ResolvedRun, type RunRequest, type WorkerMessage,
} from './worker-protocol.ts';

function send(message: WorkerMessage): void {
  if (process.connected) process.send?.(message);
}

function log(level: LogLevel, msg: string, data?: Record<string, unknown>): void {
  send(data ? {type: 'log', level, msg, data} : {type: 'log', level, msg});
}

function onCatastrophicError(message: string): void {
  // Synchronous: the process ends on the next line, and IPC is asynchronous.
  try {
    writeSync(2, `toolcell isolate worker: isolated-vm catastrophic error: ${String(message).slice(0, 1000)}\n`);
  } finally {
    process.kill(process.pid, 'SIGKILL');
  }
}

/**
 * How long the worker's main thread sleeps (`Atomics.wait`) before it starts preparing a
 * pool isolate that is not needed at once (`WarmPoolOptions.beforePrepare`), in ms.
 * Measured on this 2-vCPU VM, sequential calls over MCP stdio with 2 workers: p50 about
 * 1.9-2.1 ms with the sleep, 2.2-2.4 ms without it (as with the former all-at-once
 * refill); lengths from 0.02 to 0.5 ms gave the same p50 (measured with that former
 * refill); the same sleep placed right after sending a reply made it worse. Why the
 * kernel then serves the next call faster is not established (it packs tasks onto
 * vCPUs). The sleep costs no CPU, and a call that arrives during it waits at most this
 * long. Does NOT guarantee any effect under another kernel or scheduler.
 */
const NAP_BEFORE_PREPARE_MS = 0.05;
const napCell = new Int32Array(new SharedArrayBuffer(4));

const config = parseWorkerConfig(process.argv[2]);
/** Calls in flight, by call id. */
const calls = new Map<string, AbortController>();

const pool = config.poolSize > 0
  ? new WarmPool({
    size: config.poolSize,
    maxKeys: config.poolMaxKeys,
    prepare: (memoryMb) => prepareIsolateSteps({...POOL_PREPARE_OPTIONS, memoryMb, removeWebAssembly: config.removeWebAssembly, onCatastrophicError}),
    onError: (error, memoryMb) => log('warn', 'warm pool refill failed', {memoryMb, err: String(error)}),
    busy: () => calls.size > 0,
    beforePrepare: () => {
      Atomics.wait(napCell, 0, 0, NAP_BEFORE_PREPARE_MS);
    },
  })
  : undefined;

const codeCache = config.codeCacheBytes > 0 ? new CodeCache(config.codeCacheBytes) : undefined;
const sourceCache = new SourceCache(config.sourceCacheBytes);

/** Growth of the worker's RSS (bytes) after which the end of a call runs a full GC. */
const GC_SLACK_BYTES = 32 * 2 ** 20;
/**
 * Node's `gc`, taken from a throw-away context made while `--expose-gc` is on, then the
 * flag is turned off again. Not `--expose-gc` on the command line: V8 flags are
 * process-wide, and that one would install `gc` in the global of every isolate context
 * too (seen: `gc` among an isolate's globals).
 */
function takeGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? gc as () => void : undefined;
  } catch {
    return undefined;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}

const hygiene = new MemoryHygiene({
  rss: () => process.memoryUsage.rss(),
  gc: takeGc(),
  slackBytes: GC_SLACK_BYTES,
});

let wedgedReported = false;

/**
 * Fetches in flight, per call: worker fetch id → the isolate's own id for the request. The
 * answer (`fetch-result`) is handed back into the isolate by the call's `deliver`.
 */
const fetches = new Map<string, {deliver?: (isolateFetchId: number, responseJson: string) => void; ids: Map<number, number>}>();
let fetchSeq = 0;
/** Longest request (JSON text) a tool may hand to fetch, in UTF-16 units; the supervisor applies the call's maxBytesOut. */
const MAX_FETCH_REQUEST_CHARS = 64 * 2 ** 20;

function fetchDeps(id: string): RunDeps['fetch'] {
  const entry: {deliver?: (isolateFetchId: number, responseJson: string) => void; ids: Map<number, number>} = {ids: new Map()};
  fetches.set(id, entry);
  return {
    send: (isolateFetchId, requestJson) => {
      if (!fetches.has(id)) return;
      if (requestJson.length > MAX_FETCH_REQUEST_CHARS) {
        entry.deliver?.(isolateFetchId, JSON.stringify({ok: false, message: 'toolcell egress: the request is too large.'}));
        return;
      }
      const fetchId = ++fetchSeq;
      entry.ids.set(fetchId, isolateFetchId);
      send({type: 'fetch', id, fetchId, requestJson});
    },
    attach: (deliver) => {
      entry.deliver = deliver;
    },
  };
}

function runDeps(id: string, afterReply: (task: () => void) => void, fetch: boolean): RunDeps {
  return {
    ...(fetch ? {fetch: fetchDeps(id)} : {}),
    afterReply,
    pool,
    codeCache,
    removeWebAssembly: config.removeWebAssembly,
    onCatastrophicError,
    onWedged: () => {
      if (wedgedReported) return;
      wedgedReported = true;
      send({type: 'wedged', id});
    },
  };
}

/**
 * The request with its source: the one it carries (checked against its sha256 and kept
 * for later calls), else the cached one. Undefined after answering `need-source` or
 * `failure`.
 */
function resolveSource(request: RunRequest): ResolvedRun | undefined {
  if (request.source !== undefined) {
    if (!sourceCache.put(request.sourceHash, request.source)) {
      log('warn', 'isolate worker refused a source whose sha256 does not match its key', {jobId: request.jobId});
      send({type: 'failure', id: request.id, message: 'The source does not match its digest.'});
      return undefined;
    }
    return request as ResolvedRun;
  }
  const source = sourceCache.get(request.sourceHash);
  if (source === undefined) {
    send({type: 'need-source', id: request.id});
    return undefined;
  }
  return {...request, source};
}

function startRun(received: RunRequest): void {
  if (calls.has(received.id)) return;
  const request = resolveSource(received);
  if (request === undefined) return;
  const controller = new AbortController();
  calls.set(request.id, controller);
  // Disposal of a completed call's isolate waits until its reply is on its way.
  let cleanup: (() => void) | undefined;
  const runCleanup = (): void => {
    const task = cleanup;
    cleanup = undefined;
    task?.();
  };
  runInIsolate(request, controller.signal, runDeps(request.id, (task) => {
    cleanup = task;
  }, request.fetch === true)).then(
    (outcome) => {
      send({type: 'result', id: request.id, outcome});
      runCleanup();
    },
    (error: unknown) => {
      log('error', 'isolate call could not run', {jobId: request.jobId, err: error instanceof Error ? error.stack : String(error)});
      send({type: 'failure', id: request.id, message: 'The isolate could not be created.'});
    },
  ).finally(() => {
    runCleanup();
    calls.delete(request.id);
    fetches.delete(request.id);
    hygiene.afterCall();
    if (calls.size === 0) pool?.resume();
  });
}

process.on('message', (raw: unknown) => {
  const message = parseSupervisorMessage(raw);
  if (message === undefined) {
    log('warn', 'isolate worker dropped a malformed message');
    return;
  }
  if (message.type === 'cancel') calls.get(message.id)?.abort();
  else if (message.type === 'ping') send({type: 'pong', id: message.id});
  else if (message.type === 'fetch-result') {
    const entry = fetches.get(message.id);
    const isolateFetchId = entry?.ids.get(message.fetchId);
    if (entry === undefined || isolateFetchId === undefined) return;
    entry.ids.delete(message.fetchId);
    entry.deliver?.(isolateFetchId, message.responseJson);
  }
  else startRun(message);
});

process.on('disconnect', () => {
  pool?.close();
  process.exit(0);
});

for (const memoryMb of config.poolMemoryMb) pool?.warm(memoryMb);
send({type: 'ready'});
