/**
 * Prompts and resources of hosted MCP servers for one principal: listed from their pins, and each
 * `prompts/get` / `resources/read` run on the call spine (call-tool.ts runOnSpine) in a fresh server.
 */
import {randomUUID} from 'node:crypto';
import {isSpecType, ProtocolError, ProtocolErrorCode, type GetPromptResult, type Prompt, type ReadResourceResult, type Resource} from '@modelcontextprotocol/server';
import {ToolcellError} from '../errors.ts';
import type {ServerJob} from '../backends/backend.ts';
import {toContentJob, type HostedContent} from '../policy/hosted-content.ts';
import {MAX_URI_CHARS} from '../policy/manifest-schema.ts';
import {mayUseTool, type Principal} from '../policy/principal.ts';
import {auditRefusedName, grantContainerSecrets, runOnSpine, type CallContext, type SpineRequest, type ToolRuntime} from './call-tool.ts';
import {errorResult, failureOf, type Usage} from './to-tool-result.ts';

/** Longest value of one prompt argument, in characters. */
export const MAX_PROMPT_ARGUMENT_CHARS = 65_536;

const granted = (principal: Principal, content: HostedContent) => mayUseTool(principal, content);

/**
 * The request's own secrets, as for a call of one of the server's tools (`grantContainerSecrets`);
 * `holder.release` then ends the placeholders. A content request always runs in a server of its
 * own (never pooled or kept), so the placeholders are per container. Returns `job`.
 */
function withSecrets(runtime: ToolRuntime, content: HostedContent, job: ServerJob, holder: {release?: () => void}): ServerJob {
  holder.release = grantContainerSecrets(runtime, content.profile, job);
  return job;
}

/**
 * The prompts a principal may see: those of hosted packages it is granted (a package's grant
 * covers its tools, prompts and resources alike), each as pinned, under its MCP name
 * (`<package>__<prompt>`). Nothing the server lists beyond its pin is shown.
 */
export function visiblePrompts(runtime: ToolRuntime, principal: Principal): Prompt[] {
  return (runtime.hostedContent?.packages ?? []).filter((c) => granted(principal, c))
    .flatMap((c) => c.prompts.map((p) => ({...p.pin.definition, name: p.name}) as Prompt));
}

/** The resources a principal may see (URIs unchanged, as pinned). */
export function visibleResources(runtime: ToolRuntime, principal: Principal): Resource[] {
  return (runtime.hostedContent?.packages ?? []).filter((c) => granted(principal, c))
    .flatMap((c) => c.resources.map((r) => ({...r.pin.definition}) as Resource));
}

/** The resource templates a principal may see (as pinned). */
export function visibleResourceTemplates(runtime: ToolRuntime, principal: Principal): Array<Record<string, unknown> & {uriTemplate: string; name: string}> {
  return (runtime.hostedContent?.packages ?? []).filter((c) => granted(principal, c))
    .flatMap((c) => c.templates.map((r) => ({...r.pin.definition, uriTemplate: r.key})));
}

/**
 * A failure as the JSON-RPC error a `prompts/get` or `resources/read` answers (these results have
 * no `isError`): the ToolcellError's message, and `data["toolcell/error"]` with its code (and
 * rule/changes for a pin), `data["toolcell/usage"]`; `INVALID_ARGUMENTS` is -32602, everything
 * else -32603. Nothing of the host reaches it (errorResult's mapping).
 */
function asProtocolError(error: unknown, usage: Usage): ProtocolError {
  const result = errorResult(error, usage);
  const text = result.content[0]?.type === 'text' ? result.content[0].text : 'failed';
  const code = error instanceof ToolcellError && error.code === 'INVALID_ARGUMENTS' ? ProtocolErrorCode.InvalidParams : ProtocolErrorCode.InternalError;
  return new ProtocolError(code, text, result._meta);
}

/** Reads a hosted server's answer (its JSON in `stdout`) as `kind`, or throws `TOOL_FAILED`. */
function parsed<T>(what: string, execution: {stdout: string}, check: (v: unknown) => boolean, label: string): T {
  let value: unknown;
  try {
    value = JSON.parse(execution.stdout);
  } catch {
    value = undefined;
  }
  if (!check(value)) throw new ToolcellError('TOOL_FAILED', `The hosted server of ${label} answered ${what} with something that is not a valid result.`);
  const {_meta: _ignored, ...rest} = value as Record<string, unknown>;
  return rest as T;
}

/**
 * `prompts/get` of a hosted server's prompt, on the call spine: find → authorize (package grant)
 * → validate the arguments against the pinned prompt (known names, required ones present, each
 * a string of at most {@link MAX_PROMPT_ARGUMENT_CHARS}) → admit → job (fresh server, pinned
 * image ID) → dispatch (`prompts/list` compared with the pin: `DENIED` rule `pin` on drift,
 * then `prompts/get`) → audit (`method: "prompts/get"`). The server's `_meta` is dropped.
 * @throws ProtocolError -32602 for an unknown or ungranted prompt (indistinguishable; audited
 *   `rule: "unknown-tool"` / `"grants"`) or invalid arguments; -32603 with
 *   `data["toolcell/error"].code` for a failure in the sandbox or a pin refusal.
 */
export async function getPrompt(runtime: ToolRuntime, name: string, args: unknown, context: CallContext): Promise<GetPromptResult> {
  const started = performance.now();
  const jobId = randomUUID();
  const found = runtime.hostedContent?.prompt(name);
  if (found === undefined || !granted(context.principal, found.content)) {
    auditRefusedName(runtime, name, args, context, jobId, found?.content, started, 'prompts/get');
    throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Unknown prompt: ${name.slice(0, 128)}`);
  }
  const {content, prompt} = found;
  const input = (args ?? {}) as Record<string, unknown>;
  const subject = {name, packageName: content.packageName, profile: content.profile};
  const secrets: {release?: () => void} = {};
  const request: SpineRequest<GetPromptResult> = {
    subject,
    method: 'prompts/get',
    args,
    validate: () => validatePromptArguments(name, prompt.pin.definition, input),
    job: (id) => withSecrets(runtime, content, toContentJob(content, {kind: 'prompt', prompt, arguments: input as Record<string, string>}, id, runtime.containerGrants.get(contentGrantKey(content)), context.principal.id), secrets),
    release: () => secrets.release?.(),
    answer: (execution) => {
      const failure = failureOf(subject, execution, `The prompt "${name}"`);
      if (failure) throw failure;
      return parsed<GetPromptResult>('prompts/get', execution, (v) => isSpecType.GetPromptResult(v), `prompt "${name}"`);
    },
  };
  const outcome = await runOnSpine(runtime, request, context, jobId, started);
  if (!outcome.ok) throw asProtocolError(outcome.error, outcome.usage);
  return {...outcome.value, _meta: {'toolcell/usage': outcome.usage}};
}

/**
 * `resources/read` of a hosted server's resource, on the call spine as {@link getPrompt}: the
 * URI (at most {@link MAX_URI_CHARS} characters) is routed by the table of pinned URIs and
 * templates (HostedCatalog); the listing checked against the pin is `resources/list` for a pinned
 * URI, `resources/templates/list` for a template. Audited with `tool` = the pinned URI or template.
 * @throws ProtocolError -32002 (resource not found) for a URI no granted package serves (unknown
 *   and ungranted look the same); -32603 with `data["toolcell/error"]` for a failure.
 */
export async function readResource(runtime: ToolRuntime, uri: string, context: CallContext): Promise<ReadResourceResult> {
  const started = performance.now();
  const jobId = randomUUID();
  const found = typeof uri === 'string' && uri.length <= MAX_URI_CHARS ? runtime.hostedContent?.resource(uri) : undefined;
  if (found === undefined || !granted(context.principal, found.content)) {
    auditRefusedName(runtime, String(uri), {uri}, context, jobId, found?.content, started, 'resources/read');
    throw new ProtocolError(ProtocolErrorCode.ResourceNotFound, 'Resource not found', {uri: String(uri).slice(0, 256)});
  }
  const {content, resource} = found;
  const subject = {name: resource.key, packageName: content.packageName, profile: content.profile};
  const secrets: {release?: () => void} = {};
  const request: SpineRequest<ReadResourceResult> = {
    subject,
    method: 'resources/read',
    args: {uri},
    validate: () => undefined,
    job: (id) => withSecrets(runtime, content, toContentJob(content, {kind: 'resource', resource, uri}, id, runtime.containerGrants.get(contentGrantKey(content)), context.principal.id), secrets),
    release: () => secrets.release?.(),
    answer: (execution) => {
      const failure = failureOf(subject, execution, `The read of resource "${resource.key}"`);
      if (failure) throw failure;
      return parsed<ReadResourceResult>('resources/read', execution, (v) => isSpecType.ReadResourceResult(v), `resource "${resource.key}"`);
    },
  };
  const outcome = await runOnSpine(runtime, request, context, jobId, started);
  if (!outcome.ok) throw asProtocolError(outcome.error, outcome.usage);
  return {...outcome.value, _meta: {'toolcell/usage': outcome.usage}};
}

/** The key under which the runtime keeps a hosted package's resolved grants for its prompts and resources (runtime.containerGrants). */
export const contentGrantKey = (content: Pick<HostedContent, 'packageName'>): string => `${content.packageName}/`;

/**
 * Checks `prompts/get` arguments against the pinned prompt: an object whose keys are argument
 * names the prompt declares, each a string of at most {@link MAX_PROMPT_ARGUMENT_CHARS}
 * characters, every `required` one present (MCP 2025-11-25 server/prompts §Getting a Prompt).
 * @throws ToolcellError `INVALID_ARGUMENTS` naming the first problem and what is allowed.
 */
export function validatePromptArguments(name: string, definition: Readonly<Record<string, unknown>>, input: Record<string, unknown>): void {
  const declared = Array.isArray(definition.arguments) ? definition.arguments as Array<{name: string; required?: boolean}> : [];
  const names = new Set(declared.map((a) => a.name));
  const fail = (why: string) => new ToolcellError('INVALID_ARGUMENTS', `Invalid arguments for prompt "${name}": ${why}.`);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw fail('arguments must be an object of strings');
  for (const [key, value] of Object.entries(input)) {
    if (!names.has(key)) throw fail(`"${key.slice(0, 64)}" is not an argument of this prompt (allowed: ${[...names].join(', ') || 'none'})`);
    if (typeof value !== 'string') throw fail(`"${key}" must be a string`);
    if (value.length > MAX_PROMPT_ARGUMENT_CHARS) throw fail(`"${key}" is longer than ${MAX_PROMPT_ARGUMENT_CHARS} characters`);
  }
  for (const a of declared) if (a.required === true && !Object.hasOwn(input, a.name)) throw fail(`"${a.name}" is required`);
}
