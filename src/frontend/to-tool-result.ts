/** Maps a sandbox execution (or a refusal) to the MCP CallToolResult the client sees, with toolcell/usage and toolcell/error. */
import {isCallToolResult, type CallToolResult} from '@modelcontextprotocol/server';
import {rebuildRelayedResult} from './relayed-result.ts';
import type {AuditOutcome} from '../audit/audit-event.ts';
import type {ExecutionResult} from '../backends/backend.ts';
import {ToolcellError, type ErrorCode} from '../errors.ts';
import {describeSchemaErrors} from '../policy/json-schema.ts';
import type {ToolDefinition} from '../policy/tool-definition.ts';

/**
 * The one place where results cross the wire (MCP 2025-11-25 server/tools §Error Handling):
 * execution failures become `isError: true` results carrying
 * `_meta["toolcell/error"] = {code, ...}`; every result carries `_meta["toolcell/usage"]`.
 * Messages name the cause and what the profile allows; internal details never appear.
 */

/** What every result reports about its execution. */
export interface Usage {
  backend: 'isolate' | 'container';
  profile: string;
  /** Time from receipt of the call to its result, in ms. */
  durationMs: number;
  /** Time spent inside the sandbox backend, in ms (absent when the call never reached it). */
  sandboxMs?: number;
}

/** Bytes of stderr (or console output) quoted in a failure message. */
export const STDERR_TAIL_BYTES = 2048;

/**
 * Turns a backend result into a ToolcellError when the call did not succeed, picking the
 * reason in a fixed order: cancelled, timed out, out of memory, output limit, pids limit,
 * tool failure. `name` starts each message (a hosted server's prompt or resource names itself).
 * @returns undefined when the call succeeded.
 */
export function failureOf(tool: Pick<ToolDefinition, 'name' | 'profile'>, result: ExecutionResult, name = `The tool "${tool.name}"`): ToolcellError | undefined {
  const p = tool.profile;
  const limits = p.limits;
  if (result.isCanceled) return new ToolcellError('CANCELLED', `${name} was cancelled.`);
  if (result.timedOut) {
    return new ToolcellError('TIMEOUT', `${name} exceeded its time limit of ${limits.timeoutMs} ms (profile "${p.name}") and was stopped.`,
      {timeoutMs: limits.timeoutMs, profile: p.name});
  }
  if (result.outOfMemory) {
    return new ToolcellError('MEMORY_LIMIT', `${name} exceeded its memory limit of ${limits.memoryMb} MB (profile "${p.name}") and was stopped.`,
      {memoryMb: limits.memoryMb, profile: p.name});
  }
  if (result.truncated) {
    return new ToolcellError('OUTPUT_LIMIT', `${name} produced more than ${limits.outputBytes} bytes of output, the limit of profile "${p.name}", and was stopped.`,
      {outputBytes: limits.outputBytes, profile: p.name});
  }
  if (result.egressLimit) {
    return new ToolcellError('DENIED', `${name} was stopped by its egress limit: ${result.egressLimit.message}.`,
      {rule: 'egress', limit: result.egressLimit.limit, profile: p.name});
  }
  if (result.pidsLimited && p.backend === 'container') {
    return new ToolcellError('PIDS_LIMIT', `${name} tried to run more than ${p.limits.pids} processes, the limit of profile "${p.name}".`,
      {pids: p.limits.pids, profile: p.name});
  }
  if (result.error) {
    return new ToolcellError('TOOL_FAILED', `${name} failed: ${result.error.name}: ${result.error.message}${tail(result.stderr, 'Console output')}`,
      {error: result.error.name});
  }
  if (result.failed) {
    const exit = result.signal !== undefined ? `was killed by signal ${result.signal}` : result.exitCode === undefined ? 'was terminated' : `exited with code ${result.exitCode}`;
    return new ToolcellError('TOOL_FAILED', `${name} ${exit}.${tail(result.stderr, 'stderr')}`,
      {exitCode: result.exitCode});
  }
  return undefined;
}

function tail(text: string, label: string): string {
  const trimmed = text.trimEnd();
  if (trimmed === '') return '';
  const cut = trimmed.length > STDERR_TAIL_BYTES ? `…${trimmed.slice(-STDERR_TAIL_BYTES)}` : trimmed;
  return `\n${label} (last ${STDERR_TAIL_BYTES} bytes at most):\n${cut}`;
}

/**
 * Maps a successful execution to a CallToolResult (ARCHITECTURE.md, "Isolate entry"):
 * a string → one text item; an object with a `content` array → taken as a CallToolResult
 * after validation; any other JSON value → `structuredContent` plus its JSON as text.
 * Isolate results and container tools with `output: "json"` are parsed as JSON; other
 * container tools' stdout is text.
 * @throws ToolcellError `TOOL_FAILED` when the output is not what the tool promised
 *   (invalid JSON, an invalid CallToolResult, or structured content that breaks `outputSchema`).
 */
export function successResult(tool: ToolDefinition, result: ExecutionResult): CallToolResult {
  if (tool.server !== undefined) return hostedResult(tool, result);
  const json = tool.isolate !== undefined || tool.container?.output === 'json';
  if (!json) return checkOutput(tool, {content: [{type: 'text', text: result.stdout}]});
  if (result.stdout.trim() === '') return checkOutput(tool, {content: []});
  let value: unknown;
  try {
    value = JSON.parse(result.stdout);
  } catch {
    throw new ToolcellError('TOOL_FAILED', `The tool "${tool.name}" returned output that is not valid JSON.`);
  }
  if (typeof value === 'string') return checkOutput(tool, {content: [{type: 'text', text: value}]});
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Array.isArray((value as {content?: unknown}).content)) {
    if (!isCallToolResult(value)) {
      throw new ToolcellError('TOOL_FAILED', `The tool "${tool.name}" returned an object with "content" that is not a valid CallToolResult.`);
    }
    const {_meta: _ignored, ...rest} = value as CallToolResult;
    return checkOutput(tool, rest as CallToolResult);
  }
  return checkOutput(tool, {
    content: [{type: 'text', text: JSON.stringify(value)}],
    structuredContent: value as Record<string, unknown>,
  });
}

/**
 * A hosted server's `tools/call` result (its JSON in `stdout`), relayed as the server answered
 * it once it is a valid CallToolResult (MCP 2025-11-25 server/tools §Tool Result), rebuilt from
 * content (spec fields of each block), structuredContent and isError only (relayed-result.ts:
 * the server's own top-level `_meta` and unknown keys are dropped, `toolcell/` keys stripped from
 * every `_meta`); structured content must match the pinned outputSchema, also in an error result
 * that sends it (an error result may omit it).
 * @throws ToolcellError `TOOL_FAILED` for anything else.
 */
function hostedResult(tool: ToolDefinition, result: ExecutionResult): CallToolResult {
  let value: unknown;
  try {
    value = JSON.parse(result.stdout);
  } catch {
    value = undefined;
  }
  if (!isCallToolResult(value)) {
    throw new ToolcellError('TOOL_FAILED', `The hosted server of tool "${tool.name}" answered tools/call with something that is not a valid CallToolResult.`);
  }
  const relayed = rebuildRelayedResult(value);
  // MCP 2025-11-25 server/tools §Output Schema: structured results MUST conform to the schema; an
  // error result may omit them, but structured content it does send is checked too.
  if (relayed.isError === true && relayed.structuredContent !== undefined) checkOutput(tool, {...relayed, isError: false});
  return checkOutput(tool, relayed);
}

function checkOutput(tool: ToolDefinition, result: CallToolResult): CallToolResult {
  if (tool.validateOutput === undefined || result.isError === true) return result;
  if (result.structuredContent === undefined || !tool.validateOutput(result.structuredContent)) {
    const problems = result.structuredContent === undefined ? ['no structuredContent'] : describeSchemaErrors(tool.validateOutput.errors);
    throw new ToolcellError('TOOL_FAILED', `The tool "${tool.name}" returned a result that does not match its outputSchema: ${problems.join('; ')}.`);
  }
  return result;
}

/**
 * Maps any error to an `isError` result. A ToolcellError keeps its code, message and data;
 * anything else becomes `INTERNAL` with a generic message (the cause goes to the log, not here).
 */
export function errorResult(error: unknown, usage?: Usage): CallToolResult {
  const e = error instanceof ToolcellError ? error : new ToolcellError('INTERNAL', 'Internal error in toolcell; the call did not complete. The server log has the details.');
  return {
    isError: true,
    content: [{type: 'text', text: e.message}],
    _meta: {
      'toolcell/error': {code: e.code, ...e.data},
      'toolcell/usage': usage,
    },
  };
}

/** Adds `_meta["toolcell/usage"]` to a result. */
export function withUsage(result: CallToolResult, usage: Usage): CallToolResult {
  return {...result, _meta: {...result._meta, 'toolcell/usage': usage}};
}

/**
 * The audit outcome for an error code (or, without one, `ok`; `tool-error` when `toolError`:
 * the tool ran and answered with `isError: true`, its own failure, which toolcell relays).
 */
export function outcomeOf(code: ErrorCode | undefined, toolError = false): AuditOutcome {
  switch (code) {
    case undefined: return toolError ? 'tool-error' : 'ok';
    case 'TIMEOUT': return 'timed-out';
    case 'CANCELLED': return 'canceled';
    case 'MEMORY_LIMIT': return 'oom';
    case 'OUTPUT_LIMIT': return 'output-limit';
    case 'DENIED': return 'denied';
    case 'RATE_LIMITED': return 'rate-limited';
    case 'BUSY': return 'busy';
    case 'INVALID_ARGUMENTS': return 'invalid-arguments';
    case 'BACKEND_UNAVAILABLE': return 'unavailable';
    case 'TOOL_FAILED': case 'PIDS_LIMIT': return 'failed';
    case 'INTERNAL': return 'error';
  }
}
