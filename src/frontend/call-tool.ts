/** The call spine: every tool call, from every transport, goes find → authorize → validate → admit → build job → dispatch → map → audit here. */
import {randomUUID} from 'node:crypto';
import type {CallToolResult} from '@modelcontextprotocol/server';
import {newAuditId, sha256Json, type AuditSink} from '../audit/audit-event.ts';
import type {BackendEvent, ContainerJob, ExecutionResult, Job, ServerJob} from '../backends/backend.ts';
import type {Dispatcher} from '../dispatch/dispatcher.ts';
import {ToolcellError} from '../errors.ts';
import {log} from '../log.ts';
import {assertValidArguments} from '../policy/json-schema.ts';
import type {Profile} from '../policy/profile-schema.ts';
import {mayUseTool, type Principal} from '../policy/principal.ts';
import {toJob, type ContainerGrants} from '../policy/to-job.ts';
import type {ToolDefinition} from '../policy/tool-definition.ts';
import {errorResult, failureOf, outcomeOf, successResult, withUsage, type Usage} from './to-tool-result.ts';
import type {HostedCatalog} from '../policy/hosted-content.ts';
import {isolateCallEgress, type EgressServices} from '../egress/call-egress.ts';
import {giveContainerSecrets} from '../egress/container-secrets.ts';
import {outputScrubber} from '../egress/output-scrub.ts';

/**
 * Per-principal admission (issue: quotas). `admit` either returns a release function, to be
 * called when the call ends, or throws ToolcellError `RATE_LIMITED` with `retryAfterMs`. A
 * shared store (Redis) answers asynchronously and may throw `BACKEND_UNAVAILABLE`.
 */
export interface Admission {
  admit(principal: Principal, tool: ToolDefinition): (() => void) | Promise<() => void>;
}

/** Everything the call spine needs; assembled once by the runtime. */
export interface ToolRuntime {
  /** Tools that can be called now: MCP name → tool. */
  readonly tools: ReadonlyMap<string, ToolDefinition>;
  readonly dispatcher: Dispatcher;
  readonly audit: AuditSink;
  /** Resolved command allowlists and mounts of container tools, by MCP tool name. */
  readonly containerGrants: ReadonlyMap<string, ContainerGrants>;
  readonly admission?: Admission;
  /** Prompts and resources of hosted servers whose server can run here (hosted-request.ts); absent when none. */
  readonly hostedContent?: HostedCatalog;
  /**
   * Observes each call that reached a tool (metrics), whatever its outcome. Not called for a
   * name that is unknown or not granted (those are audited only): a metric labelled with
   * client-chosen names would grow without bound.
   */
  readonly onCallFinished?: (event: {tool: ToolDefinition; outcome: string; durationMs: number}) => void;
  /**
   * Stops every call of this runtime when it aborts, as if each client had cancelled (the HTTP
   * service at its drain deadline). A `CANCELLED` ToolcellError as the abort reason becomes the
   * answer of calls that had not started yet.
   */
  readonly stopSignal?: AbortSignal;
  /** Secrets, upstream trust and the audit of egress decisions (egress/call-egress.ts); absent: no isolate gets a fetch. */
  readonly egress?: EgressServices;
}

/** The caller's side of one call. */
export interface CallContext {
  principal: Principal;
  transport: 'stdio' | 'http' | 'cli';
  /** Aborts when the client cancels. */
  signal: AbortSignal;
  /** Reports progress (MCP progress notifications) when the client asked for it; `total` absent when unknown. */
  progress?: (progress: number, total: number | undefined, message: string) => Promise<void>;
  /**
   * Receives what the tool wrote to its console (isolate) or stderr (container), already
   * bounded by the profile's `outputBytes`, before the result is returned; MCP transports
   * forward it as log notifications related to the request.
   */
  console?: (text: string) => Promise<void>;
}

/** The tool is unknown to this principal: not loaded, not available, or not granted. */
export class UnknownToolError extends Error {
  readonly toolName: string;
  constructor(toolName: string) {
    super(`Unknown tool: ${toolName}`);
    this.toolName = toolName;
    this.name = 'UnknownToolError';
  }
}

/**
 * Tools a principal may see, in a stable order (for `tools/list`).
 */
export function visibleTools(runtime: ToolRuntime, principal: Principal): ToolDefinition[] {
  return [...runtime.tools.values()].filter((tool) => mayUseTool(principal, tool));
}

/** Longest tool name an audit event records, in characters (the SDK's limit for a tool name); a longer, client-chosen name is cut. */
export const MAX_AUDITED_NAME = 128;

/**
 * A client-chosen tool name as an audit event records it: well-formed (a lone UTF-16 surrogate
 * becomes U+FFFD) and cut at `MAX_AUDITED_NAME` UTF-16 code units, never inside a surrogate pair,
 * marked with `…` when cut.
 */
export function auditedName(name: string): string {
  if (name.length <= MAX_AUDITED_NAME) return name.toWellFormed();
  let end = MAX_AUDITED_NAME;
  const last = name.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${name.slice(0, end).toWellFormed()}…`;
}

/**
 * Audits a call refused before it had a tool (ARCHITECTURE.md: every refusal on the spine is
 * audited): `tool.call.denied`, outcome `denied`, code `DENIED`, with `rule: "grants"` when the
 * tool is loaded but not granted to the principal (its profile and backend are recorded: the
 * audit stream is the operator's) and `rule: "unknown-tool"` when no such tool is served. The
 * arguments are recorded only as their SHA-256; a client-chosen name is recorded as
 * `auditedName` makes it (well-formed, cut at `MAX_AUDITED_NAME`); `method` is set for a prompt or
 * resource (hosted-request.ts). Not counted in metrics (`onCallFinished`): a
 * metric labelled with names a client made up would grow without bound.
 */
export function auditRefusedName(runtime: ToolRuntime, name: string, args: unknown, context: CallContext, jobId: string, tool: Pick<ToolDefinition, 'profile'> | undefined, started: number,
  method?: 'prompts/get' | 'resources/read'): void {
  runtime.audit.write({
    v: 2,
    type: 'tool.call.denied',
    at: new Date().toISOString(),
    auditId: newAuditId(),
    jobId,
    principal: context.principal.id,
    transport: context.transport,
    tool: auditedName(name),
    method,
    profile: tool?.profile.name,
    backend: tool?.profile.backend,
    outcome: 'denied',
    code: 'DENIED',
    rule: tool === undefined ? 'unknown-tool' : 'grants',
    durationMs: Math.round((performance.now() - started) * 100) / 100,
    inputSha256: sha256Json(args),
  });
}

/**
 * One request on the spine, whatever it asks for: a tool call, or a hosted server's prompt or
 * resource (hosted-request.ts). The spine owns find-independent steps (admit, dispatch, audit,
 * metrics); the request says how to validate, build its job and read the execution.
 */
export interface SpineRequest<R> {
  /** What is audited and counted: the tool, or a prompt/resource under its pinned MCP name and its package's profile. */
  readonly subject: Pick<ToolDefinition, 'name' | 'packageName' | 'profile'> & Partial<ToolDefinition>;
  /** The MCP method, recorded in the audit event when it is not `tools/call`. */
  readonly method?: 'prompts/get' | 'resources/read';
  /** The client's arguments (audited as their SHA-256). */
  readonly args: unknown;
  /** Validates the arguments before admission; throws ToolcellError `INVALID_ARGUMENTS`. */
  validate(): void;
  /** Builds the job (after admission); throws ToolcellError `DENIED` for a broken pin or argv. */
  job(jobId: string): Job;
  /** Reads a finished execution; throws the ToolcellError that describes a failure. */
  answer(execution: ExecutionResult): R;
  /** Releases what `job` acquired for the call (its secrets' placeholders), once the call is over, whatever happened. */
  release?(): void;
}

/** How a request on the spine ended: its answer or the error that replaced it, and its usage. */
export type SpineOutcome<R> = {usage: Usage} & ({ok: true; value: R} | {ok: false; error: unknown});

/**
 * The one spine every tool call goes through (ARCHITECTURE.md, "frontend"):
 * find → authorize → validate input → admit (quota) → build job (argv allowlist) → dispatch
 * → map result → audit. Execution failures come back as `isError` results; nothing of the
 * host (paths, stacks) reaches the result.
 *
 * @throws UnknownToolError when the tool does not exist or is not granted to the principal
 *   (the two are indistinguishable to the caller); the transport maps it to a JSON-RPC error.
 *   The refusal is audited first (`tool.call.denied`, rule `grants` or `unknown-tool`).
 */
export async function callTool(runtime: ToolRuntime, name: string, args: unknown, context: CallContext): Promise<CallToolResult> {
  const started = performance.now();
  const jobId = randomUUID();
  const tool = runtime.tools.get(name);
  if (tool === undefined || !mayUseTool(context.principal, tool)) {
    auditRefusedName(runtime, name, args, context, jobId, tool, started);
    throw new UnknownToolError(name);
  }
  const input = (args ?? {}) as Record<string, unknown>;
  let releaseEgress: (() => void) | undefined;
  const outcome = await runOnSpine<CallToolResult>(runtime, {
    subject: tool,
    args,
    validate: () => assertValidArguments(name, tool.validateInput, input),
    job: (id) => {
      const job = toJob(tool, input, id, runtime.containerGrants.get(name), context.principal.id);
      // An isolate with an egress grant gets its fetch and this call's placeholders (context.secrets).
      if (job.kind === 'isolate' && tool.profile.backend === 'isolate' && tool.profile.network !== 'none' && runtime.egress) {
        const egress = isolateCallEgress(runtime.egress, tool.profile.network.egress, tool.profile.secrets ?? [],
          {jobId: id, principal: context.principal.id, tool: name, profile: tool.profile.name}, job.limits.memoryMb);
        job.egress = egress.egress;
        releaseEgress = egress.close;
      }
      // A container, or a hosted server's sandbox (it serves this one call: egress servers are never
      // pooled, kept ones get no secrets), gets this call's placeholders, the CA and the trust variables.
      if (job.kind === 'container' || job.kind === 'server') releaseEgress = grantContainerSecrets(runtime, tool.profile, job);
      return job;
    },
    release: () => releaseEgress?.(),
    answer: (execution) => {
      const failure = failureOf(tool, execution);
      if (failure) throw failure;
      return successResult(tool, execution);
    },
  }, context, jobId, started);
  return withUsage(outcome.ok ? outcome.value : errorResult(outcome.error), outcome.usage);
}

/**
 * Gives a container job, or a hosted server job's sandbox, the secrets `profile` grants: fresh
 * placeholders, the egress CA (certificate only) and the trust variables
 * (egress/container-secrets.ts `giveContainerSecrets`). Returns the function that ends the
 * placeholders (call it when the request ends), or undefined when the profile grants no secret,
 * is not a container profile, or the runtime has no egress CA (then `serve` left such tools out).
 * Used by tool calls and by hosted prompts and resources alike.
 * @throws ConfigError for a secret the store does not declare (checked at load).
 */
export function grantContainerSecrets(runtime: ToolRuntime, profile: Profile, job: ContainerJob | ServerJob): (() => void) | undefined {
  const names = profile.backend === 'container' ? profile.secrets ?? [] : [];
  if (names.length === 0 || !runtime.egress?.ca) return undefined;
  return giveContainerSecrets(job.kind === 'server' ? job.sandbox : job, names, runtime.egress.secrets, runtime.egress.ca);
}

/**
 * The steps every request shares once its target is found and granted: validate → admit
 * (quota) → build job → dispatch (queues, deadlines; a hosted server's progress and log relayed)
 * → read the execution → audit (`tool.call.*` events; `method` set for prompts and resources)
 * → metrics. Never throws for what happened in the sandbox or policy: the outcome carries the
 * error (a ToolcellError, or anything else, logged and audited as `INTERNAL`).
 */
export async function runOnSpine<R>(runtime: ToolRuntime, request: SpineRequest<R>, context: CallContext, jobId: string, started: number): Promise<SpineOutcome<R>> {
  const tool = request.subject;
  const name = tool.name;
  const callLog = log.child({component: 'call-tool', jobId, tool: name, principal: context.principal.id});
  const backend = tool.profile.backend;
  let sandboxMs: number | undefined;
  let release: (() => void) | undefined;
  let outcomeValue: {ok: true; value: R} | {ok: false; error: unknown};
  let code: ToolcellError['code'] | undefined;
  let rule: string | undefined;
  let changes: string[] | undefined;
  try {
    request.validate();
    release = await runtime.admission?.admit(context.principal, tool as ToolDefinition);
    const job = request.job(jobId);
    callLog.debug({backend}, 'job queued');
    void context.progress?.(0, 2, 'queued');
    const signal = runtime.stopSignal ? AbortSignal.any([context.signal, runtime.stopSignal]) : context.signal;
    // A hosted server reports its own progress (relayed, bounded by the backend) and log messages.
    const hosted = job.kind === 'server';
    // A call given secrets: a real value its sandbox came by anyway is replaced by the placeholder in all it hands back.
    const scrub = outputScrubber(job);
    const onEvent = hosted ? (relayed: BackendEvent) => {
      // Runs inside the backend's stream listener: it must not throw (the backend bounds data; this guards the rest).
      try {
        const event = scrub ? scrub.event(relayed) : relayed;
        if (event.type === 'progress') void context.progress?.(event.progress, event.total, event.message ?? '');
        else void context.console?.(`[${event.level}]${event.logger === undefined ? '' : ` ${event.logger}:`} ${typeof event.data === 'string' ? event.data : JSON.stringify(event.data) ?? ''}`);
      } catch (err) {
        callLog.debug({err}, 'a relayed notification could not be delivered');
      }
    } : undefined;
    const ran = await runtime.dispatcher.run(job, signal, hosted ? undefined : () => void context.progress?.(1, 2, 'running in a fresh sandbox'), onEvent, context.principal.id);
    const execution = scrub ? scrub.execution(ran) : ran;
    sandboxMs = execution.durationMs;
    if (!hosted) await context.progress?.(2, 2, 'finished');
    if (execution.stderr !== '' && !execution.isCanceled) await context.console?.(execution.stderr);
    outcomeValue = {ok: true, value: request.answer(execution)};
    if (execution.stderr !== '') callLog.debug({consoleBytes: execution.stderr.length}, 'tool wrote to console/stderr');
  } catch (err) {
    if (err instanceof ToolcellError) {
      code = err.code;
      rule = typeof err.data.rule === 'string' ? err.data.rule : undefined;
      if (rule === 'pin' && Array.isArray(err.data.changes)) changes = (err.data.changes as unknown[]).map(String).slice(0, 20);
      if (code === 'BACKEND_UNAVAILABLE' || code === 'INTERNAL') callLog.warn({err}, 'call failed in the backend');
    } else {
      code = 'INTERNAL';
      callLog.error({err}, 'call failed with an unexpected error');
    }
    outcomeValue = {ok: false, error: err};
  } finally {
    release?.();
    request.release?.();
  }
  const durationMs = Math.round((performance.now() - started) * 100) / 100;
  const usage: Usage = {backend, profile: tool.profile.name, durationMs, sandboxMs};
  // A result the tool itself marked isError (e.g. a hosted server's) is not "ok"; prompts and
  // resources have no isError.
  const toolError = outcomeValue.ok && typeof outcomeValue.value === 'object' && outcomeValue.value !== null
    && (outcomeValue.value as {isError?: unknown}).isError === true;
  const outcome = outcomeOf(code, code === undefined && toolError);
  runtime.audit.write({
    v: 2,
    type: code === 'DENIED' ? 'tool.call.denied' : code === 'RATE_LIMITED' ? 'tool.call.rate-limited' : code === 'INVALID_ARGUMENTS' ? 'tool.call.rejected' : 'tool.call.completed',
    at: new Date().toISOString(),
    auditId: newAuditId(),
    jobId,
    principal: context.principal.id,
    transport: context.transport,
    tool: name,
    method: request.method,
    profile: tool.profile.name,
    backend,
    outcome,
    code,
    rule,
    changes,
    durationMs,
    inputSha256: sha256Json(request.args),
  });
  runtime.onCallFinished?.({tool: tool as ToolDefinition, outcome, durationMs});
  return {...outcomeValue, usage};
}
