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
import {CodeCache} from './code-cache.ts';
import {prepareIsolate} from './prepared-isolate.ts';
import {runInIsolate, type RunDeps} from './run-in-isolate.ts';
import {WarmPool} from './warm-pool.ts';
import {parseSupervisorMessage, parseWorkerConfig, type LogLevel, type RunRequest, type WorkerMessage} from './worker-protocol.ts';

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

const config = parseWorkerConfig(process.argv[2]);
/** Calls in flight, by call id. */
const calls = new Map<string, AbortController>();

const pool = config.poolSize > 0
  ? new WarmPool({
    size: config.poolSize,
    maxKeys: config.poolMaxKeys,
    create: (memoryMb) => prepareIsolate({memoryMb, removeWebAssembly: config.removeWebAssembly, onCatastrophicError}),
    onError: (error, memoryMb) => log('warn', 'warm pool refill failed', {memoryMb, err: String(error)}),
    busy: () => calls.size > 0,
  })
  : undefined;

const codeCache = config.codeCacheBytes > 0 ? new CodeCache(config.codeCacheBytes) : undefined;

let wedgedReported = false;

function runDeps(id: string): RunDeps {
  return {
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

function startRun(request: RunRequest): void {
  if (calls.has(request.id)) return;
  const controller = new AbortController();
  calls.set(request.id, controller);
  runInIsolate(request, controller.signal, runDeps(request.id)).then(
    (outcome) => send({type: 'result', id: request.id, outcome}),
    (error: unknown) => {
      log('error', 'isolate call could not run', {jobId: request.jobId, err: error instanceof Error ? error.stack : String(error)});
      send({type: 'failure', id: request.id, message: 'The isolate could not be created.'});
    },
  ).finally(() => {
    calls.delete(request.id);
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
  else startRun(message);
});

process.on('disconnect', () => {
  pool?.close();
  process.exit(0);
});

for (const memoryMb of config.poolMemoryMb) pool?.warm(memoryMb);
send({type: 'ready'});
