/** The MCP server of one connection or request: tools/list shows a principal its granted tools, tools/call runs the call spine. */
import {ProtocolError, ProtocolErrorCode, Server, type CallToolResult, type Tool, type ToolAnnotations} from '@modelcontextprotocol/server';
import {log} from '../log.ts';
import type {Principal} from '../policy/principal.ts';
import type {ToolDefinition} from '../policy/tool-definition.ts';
import {callTool, UnknownToolError, visibleTools, type CallContext, type ToolRuntime} from './call-tool.ts';

/** Name and version this server reports (MCP `serverInfo`). */
export const SERVER_INFO = {name: 'toolcell', version: '0.1.0'} as const;

/**
 * Annotations derived from the tool's profile, never from the package (MCP 2025-11-25
 * schema.ts `ToolAnnotations`: hints, untrusted by clients). No profile grants egress yet,
 * so `openWorldHint` is false; `readOnlyHint` is true only when nothing on the host can be
 * written: isolates (no filesystem at all) and containers with a read-only root and only
 * read-only mounts (tmpfs writes vanish with the container). `destructiveHint` is left at its
 * default (true) for a tool that can write to the host: the profile cannot tell otherwise.
 */
export function annotationsOf(tool: ToolDefinition): ToolAnnotations {
  const p = tool.profile;
  const readOnly = p.backend === 'isolate' || (p.filesystem.readOnlyRoot && p.filesystem.mounts.every((m) => m.readOnly));
  return {
    ...(tool.title === undefined ? {} : {title: tool.title}),
    readOnlyHint: readOnly,
    openWorldHint: false,
  };
}

/** The MCP `Tool` entry of a loaded tool. */
export function toMcpTool(tool: ToolDefinition): Tool {
  return {
    name: tool.name,
    ...(tool.title === undefined ? {} : {title: tool.title}),
    description: tool.description,
    inputSchema: tool.inputSchema as Tool['inputSchema'],
    ...(tool.outputSchema === undefined ? {} : {outputSchema: tool.outputSchema as Tool['outputSchema']}),
    annotations: annotationsOf(tool),
    _meta: {'toolcell/profile': tool.profile.name, 'toolcell/backend': tool.profile.backend},
  };
}

/** Most console lines forwarded per call as log notifications (MCP logging §Security: rate-limit log messages). */
export const MAX_LOG_LINES = 100;
/** Longest forwarded line, in characters; longer lines are cut with an ellipsis. */
export const MAX_LOG_LINE = 4096;

/**
 * Splits a tool's console output into the lines forwarded as `notifications/message`
 * (at most MAX_LOG_LINES, each at most MAX_LOG_LINE characters, the last one saying how
 * many were left out).
 */
export function consoleLines(text: string): string[] {
  const lines = text.replace(/\n$/, '').split('\n');
  const kept = lines.slice(0, MAX_LOG_LINES).map((l) => (l.length > MAX_LOG_LINE ? `${l.slice(0, MAX_LOG_LINE)}…` : l));
  if (lines.length > MAX_LOG_LINES) kept.push(`… ${lines.length - MAX_LOG_LINES} more line(s) not forwarded`);
  return kept;
}

/**
 * Builds the MCP server for one connection (stdio) or one request (HTTP): `tools/list` shows
 * the principal its granted tools; `tools/call` runs the call spine. Uses the SDK's low-level
 * `Server` so that third-party JSON Schemas are published as they are and validated by ajv in
 * the spine, and so that cancellation (`ctx.mcpReq.signal`) reaches the sandbox.
 *
 * Unknown tools (and tools not granted, which look the same) are JSON-RPC errors -32602.
 * A tool's console/stderr output is forwarded as `notifications/message` (level info, logger =
 * tool name) related to the request, before its result, subject to the client's
 * `logging/setLevel` and bounded by `consoleLines`.
 */
export function createMcpServer(runtime: ToolRuntime, principal: Principal, transport: CallContext['transport']): Server {
  const server = new Server(SERVER_INFO, {
    capabilities: {tools: {listChanged: false}, logging: {}},
    instructions: 'Every tool runs in a fresh sandbox (V8 isolate or container) under a least-privilege profile. Failures come back as isError results with _meta["toolcell/error"].code.',
  });
  server.setRequestHandler('tools/list', async () => ({tools: visibleTools(runtime, principal).map(toMcpTool)}));
  server.setRequestHandler('tools/call', async (request, ctx) => {
    const {name, arguments: args, _meta} = request.params;
    const token = _meta?.progressToken;
    const progress = token === undefined ? undefined : async (value: number, total: number | undefined, message: string) => {
      if (ctx.mcpReq.signal.aborted) return;
      await ctx.mcpReq.notify({method: 'notifications/progress', params: {progressToken: token, progress: value, ...(total === undefined ? {} : {total}), message}})
        .catch((err: unknown) => log.debug({err}, 'progress notification not sent'));
    };
    const forwardConsole = async (text: string) => {
      for (const line of consoleLines(text)) {
        if (ctx.mcpReq.signal.aborted) return;
        try {
          await ctx.mcpReq.log('info', line, name);
        } catch (err) {
          log.debug({err}, 'log notification not sent');
          return;
        }
      }
    };
    let result: CallToolResult;
    try {
      result = await callTool(runtime, name, args, {principal, transport, signal: ctx.mcpReq.signal, console: forwardConsole, ...(progress ? {progress} : {})});
    } catch (err) {
      if (err instanceof UnknownToolError) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Unknown tool: ${name}`);
      throw err;
    }
    const tool = runtime.tools.get(name);
    return server.projectCallToolResult(result, tool?.outputSchema as Record<string, unknown> | undefined);
  });
  server.onerror = (err) => log.debug({err}, 'mcp protocol error');
  return server;
}
