/**
 * The contract between dispatch and the sandboxes. Backends know nothing of MCP,
 * principals or profile files: they receive a fully resolved job and report what
 * happened with execa-style flags (execa's result shape: the same fields whether the
 * code succeeded or not).
 *
 * A backend **resolves** for anything the tool code did (throw, loop forever, allocate
 * without bound, print too much, exit non-zero) and **rejects** only when the sandbox
 * itself failed (Docker unreachable, the isolate worker died): then with a
 * `ToolcellError` whose code is `BACKEND_UNAVAILABLE` or `INTERNAL`.
 */

import type {EgressGrant} from '../egress/policy.ts';
import type {EgressCallContext, EgressLimitHit} from '../egress/proxy.ts';

/** Limits shared by every backend. */
export interface BaseLimits {
  /** Wall-clock limit for the call, in ms, measured inside the backend from the start of execution. */
  timeoutMs: number;
  /** Memory ceiling in MB (2^20 bytes). */
  memoryMb: number;
  /** Cap on each captured stream (result/stdout, console/stderr), in bytes. Over it: `truncated: true`. */
  outputBytes: number;
}

/** Limits of an isolate call. */
export interface IsolateLimits extends BaseLimits {
  /** CPU time the isolate may use, in ms (isolated-vm `cpuTime`); defaults to `timeoutMs`. */
  cpuTimeMs?: number;
}

/** One call of a JavaScript tool in a fresh V8 isolate. */
export interface IsolateJob {
  kind: 'isolate';
  /** Unique id of this call; joins log lines and audit events. */
  id: string;
  /** Source text of the tool's self-contained ES module; its default export is called. */
  source: string;
  /** A name for stack traces and code-cache keys, e.g. `text/word_count.js`; never a host path. */
  filename: string;
  /** The validated arguments; only a JSON copy crosses into the isolate. */
  args: unknown;
  limits: IsolateLimits;
  /** Present when the profile grants egress: the isolate gets a global `fetch` and `context.secrets`. */
  egress?: IsolateEgress;
}

/**
 * The network of one isolate call, a host-side service the backend is handed (built by the
 * call spine from the profile's egress grant and secrets; src/egress/isolate-fetch.ts). The
 * backend only relays: it never sees a secret's value.
 */
export interface IsolateEgress {
  /** `context.secrets` of the tool: secret name → this call's placeholder. */
  secrets: Readonly<Record<string, string>>;
  /**
   * Performs one request the tool made (its JSON text as the isolate sent it, unvalidated)
   * under the call's policy and limits; resolves the JSON text the isolate's `fetch` reads
   * (`{ok: true, status, statusText, url, headers, body64}`, the body in base64, or `{ok: false, message}`). Never
   * rejects. `signal` aborts when the call is over.
   */
  fetch(requestJson: string, signal: AbortSignal): Promise<string>;
}

/** Limits of a container call. */
export interface ContainerLimits extends BaseLimits {
  /** CPU quota in cores (e.g. 0.5); becomes `NanoCpus`. */
  cpus: number;
  /** Maximum number of processes/threads in the container (`PidsLimit`). */
  pids: number;
}

/** A host directory mounted into a container; `source` is already canonical and checked against the mount roots. */
export interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
}

/** One call of a tool in a fresh container. */
export interface ContainerJob {
  kind: 'container';
  id: string;
  /** Local image reference, e.g. `toolcell/python`. */
  image: string;
  /** Exact argv; argv[0] is already the absolute path resolved from the profile's allowlist. Never a shell string. */
  argv: string[];
  /** Bytes written to the container's stdin, then stdin is closed; undefined: stdin is closed at once. */
  stdin?: string;
  limits: ContainerLimits;
  /**
   * `none`: no network namespace interface but loopback. `{egress}`: still no interface but
   * loopback; the only way out is toolcell's egress proxy, enforcing the grant.
   */
  network: 'none' | {egress: EgressGrant};
  readOnlyRoot: boolean;
  /** tmpfs mounts: container path → size such as `64m`. Always mounted `noexec,nosuid,nodev`. */
  tmpfs: Record<string, string>;
  mounts: Mount[];
  /** OCI runtime: `runc` (Docker's default) or `runsc` (gVisor); never silently downgraded. */
  runtime: 'runc' | 'runsc';
  /** Working directory inside the container. */
  workdir?: string;
  /** Environment of the tool process; nothing of the host's environment is passed. */
  env?: Record<string, string>;
  /** The profile name, for labels and pool keys. */
  profile: string;
  /** With an egress grant: who the call's egress belongs to (audit, metrics); the backend opens the proxy session. */
  egress?: EgressCallContext;
}

/**
 * policy's verdict on the `tools/list` a fresh server answered (policy/pins.ts decides; the
 * backend enforces it before `tools/call`): `ok: false` makes the call `DENIED` with `rule: "pin"`;
 * `drift` names changes of other tools (logged, not refused).
 */
export type ListingVerdict =
  | {ok: true; drift?: string[]}
  | {ok: false; message: string; changes: string[]; drift?: string[]};

/**
 * One call of a tool of a hosted MCP server, in a fresh server process in a container
 * (backends/server/). `sandbox` carries the container's settings exactly as for a container
 * job (the same floor and limits): `argv` is the server's command and `image` its pinned image
 * ID; `stdin` is unused (the MCP session owns stdin).
 */
export interface ServerJob {
  kind: 'server';
  id: string;
  sandbox: ContainerJob;
  /** The tool's name as the server lists it (not the `<package>__` MCP name). */
  tool: string;
  /** The validated arguments, sent in `tools/call`. */
  args: Record<string, unknown>;
  /** Compares the server's `tools/list` with the pins (pure; built by policy). */
  verifyListing: (listed: ReadonlyArray<Readonly<Record<string, unknown>>>) => ListingVerdict;
  /** Same object as `sandbox.limits` (dispatch reads `job.limits.timeoutMs`). */
  limits: ContainerLimits;
  /** The package name, for logs. */
  packageName: string;
  /**
   * `lifetime: "principal"`: calls with the same `key` (an opaque principal id) and the same
   * sandbox settings share one server sandbox, kept until `idleMs` without a call; never shared
   * between keys. Absent: a fresh server per call.
   */
  affinity?: {key: string; idleMs: number};
  /**
   * A request other than `tools/call` (a prompt or a resource; policy/hosted-content.ts): the
   * listing `verifyListing` judges is `operation.list`, and `operation.method` with `params` is
   * sent instead of `tools/call` (then `tool` and `args` are for logs only). Absent: a tool call.
   */
  operation?: ServerOperation;
}

/** A hosted server's request other than `tools/call`, with the listing that is checked against the pins first. */
export interface ServerOperation {
  list: {method: 'prompts/list' | 'resources/list' | 'resources/templates/list'; key: string};
  method: 'prompts/get' | 'resources/read';
  params: Record<string, unknown>;
}

export type Job = IsolateJob | ContainerJob | ServerJob;

/** What a backend reports while a call runs (hosted servers: their progress and log notifications, untrusted). */
export type BackendEvent =
  | {type: 'progress'; progress: number; total?: number; message?: string}
  | {type: 'log'; level: string; logger?: string; data: unknown};

/**
 * What a sandboxed call did. Booleans name each way it can end; several may be true
 * (e.g. `timedOut` and `truncated`); dispatch decides which reason wins.
 */
export interface ExecutionResult {
  /** True when the code did not complete normally: exception, non-zero exit or any termination. */
  failed: boolean;
  /** Container exit code; undefined when the process was terminated or for isolates. */
  exitCode?: number;
  timedOut: boolean;
  isCanceled: boolean;
  outOfMemory: boolean;
  /** A stream exceeded `limits.outputBytes`; the call was stopped. */
  truncated: boolean;
  /** The container hit its pids limit (fork failed); best effort, see the backend. */
  pidsLimited?: boolean;
  /** Container: the signal that killed the tool (e.g. 9), when its exit status says so and it was not an OOM kill. */
  signal?: number;
  /**
   * Isolate: the JSON text of the tool's return value (empty when it returned undefined).
   * Container: the process's stdout. At most `limits.outputBytes` bytes.
   */
  stdout: string;
  /** Isolate: captured `console.*` lines. Container: stderr. At most `limits.outputBytes` bytes. */
  stderr: string;
  /** Isolate: what the tool threw (name and message only, never a host stack). */
  error?: {name: string; message: string};
  /** Wall-clock time inside the backend, in ms. */
  durationMs: number;
  /**
   * Isolate: the isolate's own running time (isolated-vm `isolate.wallTime`, the time the
   * `timeoutMs` deadline counts) from when it was ready until the call ended (its deadline,
   * a cancel, or its last step settled), in ms, as the worker reported it. For logs and
   * tests only: not sent to clients, and not trusted for any decision (the worker runs
   * hostile code). Does NOT include the queue, the worker hop, the compile-slot wait, the
   * console drain, nor the time a step still runs after the deadline until isolated-vm's
   * step timeout or the disposal stops it. Absent for containers, for calls that never
   * reached a worker's isolate, and when the worker died.
   */
  ownTimeMs?: number;
  /** Egress: the first per-call limit of the grant that was reached (the call's result is then `DENIED`, rule `egress`). */
  egressLimit?: EgressLimitHit;
}

/**
 * The one result factory of the backends: no flag set, no output, then `fields` on top.
 * `failed` is derived unless `fields` gives it: true when a termination flag (`timedOut`,
 * `isCanceled`, `outOfMemory`, `truncated`), an `error` or a non-zero `exitCode` is given.
 * @param durationMs wall-clock time inside the backend, in ms (rounded).
 */
export function makeResult(durationMs: number, fields: Partial<ExecutionResult> = {}): ExecutionResult {
  const failed = fields.timedOut === true || fields.isCanceled === true || fields.outOfMemory === true || fields.truncated === true
    || fields.error !== undefined || (fields.exitCode !== undefined && fields.exitCode !== 0);
  return {
    failed, timedOut: false, isCanceled: false, outOfMemory: false, truncated: false,
    stdout: '', stderr: '', ...fields, durationMs: Math.round(durationMs),
  };
}

/** A sandbox backend. */
export interface Backend<J extends Job = Job> {
  readonly kind: J['kind'];
  /**
   * Runs one job in a fresh sandbox. Aborting `options.signal` stops and destroys the
   * sandbox; the promise then resolves with `isCanceled: true`.
   * @throws ToolcellError `BACKEND_UNAVAILABLE` when the sandbox could not be created or died.
   */
  run(job: J, options: {signal: AbortSignal; onEvent?: (event: BackendEvent) => void}): Promise<ExecutionResult>;
  /** Stops everything this backend started; idempotent. */
  close(): Promise<void>;
}
