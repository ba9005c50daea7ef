/**
 * The messages exchanged over the IPC channel between the isolate backend (the
 * supervisor, in the server process) and the isolate worker process. Node's `fork`
 * channel with JSON serialisation carries them.
 *
 * Both sides validate what they receive: the supervisor treats the worker as a process
 * that runs hostile code, so a malformed or oversized message from it is dropped (and
 * logged), never trusted.
 */

/** Limits of one call as the worker applies them; all are already resolved (no defaults left). */
export interface WorkerLimits {
  /**
   * Limit on the isolate's own running time, in ms: isolated-vm's `isolate.wallTime`
   * (time the isolate was entered on a thread) from the moment the worker starts the call.
   */
  timeoutMs: number;
  /**
   * Absolute wall-clock bound, in ms from the moment the worker starts the call (at least
   * `timeoutMs`): a call whose own time has not reached `timeoutMs` by then (it waited
   * for a CPU, a thread or the worker's main thread) ends `timedOut` anyway.
   */
  backstopMs: number;
  /** CPU time the isolate may use, in ms (isolated-vm `isolate.cpuTime`). */
  cpuTimeMs: number;
  /** isolated-vm `memoryLimit`, in MB (a soft limit, see isolated-vm.d.ts). */
  memoryMb: number;
  /** Cap on the result JSON and on the captured console text, each, in UTF-8 bytes. */
  outputBytes: number;
}

/** Supervisor → worker: run one job in a fresh isolate. */
export interface RunRequest {
  type: 'run';
  /** Call id on this channel (the supervisor's sequence number, not the job id). */
  id: string;
  /** Job id, only for the worker's log lines. */
  jobId: string;
  /** Lower-case hex sha256 of the UTF-8 source text; the key of the worker's source and code caches. */
  sourceHash: string;
  /**
   * The module's source text. Omitted when the supervisor believes the worker still has
   * it (sent for an earlier call); a worker without it answers `need-source` and the
   * supervisor sends the request again with it. A worker recomputes the sha256 of every
   * source it receives and refuses one that does not match `sourceHash`.
   */
  source?: string;
  filename: string;
  /** JSON text of the arguments, or null when the arguments are undefined. */
  argsJson: string | null;
  limits: WorkerLimits;
  /** JSON text of the tool's second argument, `{"secrets": {NAME: placeholder}}`; absent means `{"secrets": {}}`. */
  contextJson?: string;
  /** The call has an egress grant: the isolate gets a global `fetch`, whose requests come back as `fetch` messages. */
  fetch?: boolean;
}

/** Supervisor → worker: the answer to a `fetch` of call `id` (JSON text the isolate's fetch reads: `{ok: true, status, ...}` or `{ok: false, message}`). */
export interface FetchResultMessage {
  type: 'fetch-result';
  id: string;
  fetchId: number;
  responseJson: string;
}

/** Supervisor → worker: stop a call at once (its isolate is disposed). */
export interface CancelRequest {
  type: 'cancel';
  id: string;
}

/**
 * Supervisor → worker: answer `pong` with the same id. The supervisor asks when a call is
 * late (its backstop), to tell a worker whose main thread still runs (its own deadline
 * timer will end the call) from a frozen one.
 */
export interface PingRequest {
  type: 'ping';
  id: string;
}

export type SupervisorMessage = RunRequest | CancelRequest | PingRequest | FetchResultMessage;

/** A `RunRequest` whose source is known (received with it, or found in the worker's source cache). */
export interface ResolvedRun extends RunRequest {
  source: string;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** What the tool threw: name and message only, never a stack or a host path. */
export interface ToolError {
  name: string;
  message: string;
}

/** The worker's report of one call; the supervisor turns it into an `ExecutionResult`. */
export interface WorkerOutcome {
  failed: boolean;
  timedOut: boolean;
  outOfMemory: boolean;
  truncated: boolean;
  /** JSON text of the returned value ('' for undefined), at most `outputBytes` UTF-8 bytes. */
  stdout: string;
  /** Captured console lines, at most `outputBytes` UTF-8 bytes. */
  stderr: string;
  error?: ToolError;
  /** The isolate came from the warm pool. */
  pooled: boolean;
  /** The module was compiled from cached V8 code data. */
  codeCacheHit: boolean;
  /** See `ExecutionResult.ownTimeMs` (ms); absent when the isolate's time could not be read. */
  ownTimeMs?: number;
}

/** Worker → supervisor: messages. */
export type WorkerMessage =
  | {type: 'ready'}
  | {type: 'result'; id: string; outcome: WorkerOutcome}
  /** The worker could not run the call at all (e.g. creating an isolate failed). */
  | {type: 'failure'; id: string; message: string}
  /** The worker does not have the source of call `id` (never received, or evicted): send the request again with it. */
  | {type: 'need-source'; id: string}
  /** A log line for the supervisor's logger (the worker has no logger of its own). */
  | {type: 'log'; level: LogLevel; msg: string; data?: Record<string, unknown>}
  /**
   * An isolate thread did not stop after its isolate was disposed (isolated-vm can hang
   * while copying a hostile thrown value out of an isolate). The worker keeps serving,
   * but it burns a CPU thread; the supervisor replaces it.
   */
  | {type: 'wedged'; id: string}
  /** The answer to a `ping`: the worker's main thread runs. */
  | {type: 'pong'; id: string}
  /**
   * The tool of call `id` called `fetch`: `requestJson` is what its isolate sent (untrusted;
   * the supervisor validates it). Answered by one `fetch-result` with the same `fetchId`.
   */
  | {type: 'fetch'; id: string; fetchId: number; requestJson: string};

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Settings of the worker process, passed as JSON in `argv[2]`. */
export interface WorkerConfig {
  /** Warm isolates kept per `memoryMb` value; 0 turns the pool off. */
  poolSize: number;
  /** How many distinct `memoryMb` values the pool keeps warm at most (least recently used evicted). */
  poolMaxKeys: number;
  /** `memoryMb` values to warm at start-up. */
  poolMemoryMb: number[];
  /** Byte budget of the V8 code cache (compiled code data keyed by sha256 of the source); 0 turns it off. */
  codeCacheBytes: number;
  /**
   * Budget of the worker's source cache (module source texts keyed by their sha256, so a
   * source crosses the channel once rather than with every call), in UTF-8 bytes. 0 keeps
   * no source: every request then carries it.
   */
  sourceCacheBytes: number;
  /** Remove `WebAssembly` from each isolate's global (its memory is not counted by `memoryLimit`). */
  removeWebAssembly: boolean;
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const isFiniteNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);

const isLimits = (value: unknown): value is WorkerLimits =>
  isRecord(value)
  && isFiniteNumber(value.timeoutMs) && value.timeoutMs > 0
  && isFiniteNumber(value.backstopMs) && value.backstopMs >= value.timeoutMs
  && isFiniteNumber(value.cpuTimeMs) && value.cpuTimeMs > 0
  && isFiniteNumber(value.memoryMb) && value.memoryMb >= 8
  && isFiniteNumber(value.outputBytes) && value.outputBytes >= 0;

/** Validates a message received by the worker; returns undefined for anything malformed. */
export function parseSupervisorMessage(raw: unknown): SupervisorMessage | undefined {
  if (!isRecord(raw) || typeof raw.id !== 'string') return undefined;
  if (raw.type === 'cancel') return {type: 'cancel', id: raw.id};
  if (raw.type === 'ping') return {type: 'ping', id: raw.id};
  if (raw.type === 'fetch-result') {
    return Number.isSafeInteger(raw.fetchId) && typeof raw.responseJson === 'string'
      ? {type: 'fetch-result', id: raw.id, fetchId: raw.fetchId as number, responseJson: raw.responseJson} : undefined;
  }
  if (raw.type !== 'run') return undefined;
  if (typeof raw.jobId !== 'string' || typeof raw.filename !== 'string') return undefined;
  if (typeof raw.sourceHash !== 'string' || !SHA256_HEX.test(raw.sourceHash)) return undefined;
  if (raw.source !== undefined && typeof raw.source !== 'string') return undefined;
  if (raw.argsJson !== null && typeof raw.argsJson !== 'string') return undefined;
  if (!isLimits(raw.limits)) return undefined;
  const {timeoutMs, backstopMs, cpuTimeMs, memoryMb, outputBytes} = raw.limits;
  const request: RunRequest = {
    type: 'run', id: raw.id, jobId: raw.jobId, sourceHash: raw.sourceHash, filename: raw.filename,
    argsJson: raw.argsJson, limits: {timeoutMs, backstopMs, cpuTimeMs, memoryMb, outputBytes},
  };
  if (raw.source !== undefined) request.source = raw.source;
  if (typeof raw.contextJson === 'string') request.contextJson = raw.contextJson;
  if (raw.fetch === true) request.fetch = true;
  return request;
}

const isToolError = (value: unknown): value is ToolError =>
  isRecord(value) && typeof value.name === 'string' && typeof value.message === 'string';

const isOutcome = (value: unknown): value is WorkerOutcome =>
  isRecord(value)
  && typeof value.failed === 'boolean' && typeof value.timedOut === 'boolean'
  && typeof value.outOfMemory === 'boolean' && typeof value.truncated === 'boolean'
  && typeof value.stdout === 'string' && typeof value.stderr === 'string'
  && (value.error === undefined || isToolError(value.error))
  && typeof value.pooled === 'boolean' && typeof value.codeCacheHit === 'boolean';

const LOG_LEVELS: readonly string[] = ['debug', 'info', 'warn', 'error'];

/**
 * Validates a message received by the supervisor; returns undefined for anything
 * malformed. Only the shape is checked here; sizes are enforced where the outcome is
 * turned into a result (the worker runs hostile code and is not trusted).
 */
export function parseWorkerMessage(raw: unknown): WorkerMessage | undefined {
  if (!isRecord(raw)) return undefined;
  switch (raw.type) {
    case 'ready':
      return {type: 'ready'};
    case 'result': {
      if (typeof raw.id !== 'string' || !isOutcome(raw.outcome)) return undefined;
      const o = raw.outcome;
      const outcome: WorkerOutcome = {
        failed: o.failed, timedOut: o.timedOut, outOfMemory: o.outOfMemory, truncated: o.truncated,
        stdout: o.stdout, stderr: o.stderr, pooled: o.pooled, codeCacheHit: o.codeCacheHit,
      };
      if (o.error) outcome.error = {name: o.error.name, message: o.error.message};
      // Reported by the untrusted worker: kept only as a plain number, for logs and tests.
      if (typeof o.ownTimeMs === 'number' && Number.isFinite(o.ownTimeMs) && o.ownTimeMs >= 0) outcome.ownTimeMs = o.ownTimeMs;
      return {type: 'result', id: raw.id, outcome};
    }
    case 'failure':
      return typeof raw.id === 'string' && typeof raw.message === 'string'
        ? {type: 'failure', id: raw.id, message: raw.message} : undefined;
    case 'wedged':
      return typeof raw.id === 'string' ? {type: 'wedged', id: raw.id} : undefined;
    case 'pong':
      return typeof raw.id === 'string' ? {type: 'pong', id: raw.id} : undefined;
    case 'need-source':
      return typeof raw.id === 'string' ? {type: 'need-source', id: raw.id} : undefined;
    case 'fetch':
      return typeof raw.id === 'string' && Number.isSafeInteger(raw.fetchId) && typeof raw.requestJson === 'string'
        ? {type: 'fetch', id: raw.id, fetchId: raw.fetchId as number, requestJson: raw.requestJson} : undefined;
    case 'log': {
      if (typeof raw.level !== 'string' || !LOG_LEVELS.includes(raw.level) || typeof raw.msg !== 'string') return undefined;
      const message: WorkerMessage = {type: 'log', level: raw.level as LogLevel, msg: raw.msg};
      if (isRecord(raw.data)) message.data = raw.data;
      return message;
    }
    default:
      return undefined;
  }
}

/** Parses the worker's `argv[2]`; throws on anything malformed (the worker then exits). */
export function parseWorkerConfig(text: string | undefined): WorkerConfig {
  const raw: unknown = JSON.parse(text ?? '');
  if (!isRecord(raw)) throw new TypeError('worker config must be an object');
  const int = (key: string, min: number): number => {
    const v = raw[key];
    if (!Number.isInteger(v) || (v as number) < min) throw new TypeError(`worker config ${key} must be an integer >= ${min}`);
    return v as number;
  };
  const memoryList = raw.poolMemoryMb;
  if (!Array.isArray(memoryList) || !memoryList.every((v) => Number.isInteger(v) && v >= 8)) {
    throw new TypeError('worker config poolMemoryMb must be an array of integers >= 8');
  }
  if (typeof raw.removeWebAssembly !== 'boolean') throw new TypeError('worker config removeWebAssembly must be a boolean');
  return {
    poolSize: int('poolSize', 0),
    poolMaxKeys: int('poolMaxKeys', 1),
    poolMemoryMb: memoryList as number[],
    codeCacheBytes: int('codeCacheBytes', 0),
    sourceCacheBytes: int('sourceCacheBytes', 0),
    removeWebAssembly: raw.removeWebAssembly,
  };
}
