/** MCP over stdio: the SDK's stdio transport behind the JSON-RPC line filter, serving the local principal. */
import {serveStdio, StdioServerTransport} from '@modelcontextprotocol/server/stdio';
import {log} from '../log.ts';
import {localPrincipal} from '../policy/principal.ts';
import type {ToolRuntime} from './call-tool.ts';
import {JsonRpcLineFilter, MAX_STDIO_MESSAGE_BYTES} from './json-rpc-line-filter.ts';
import {createMcpServer} from './mcp-server.ts';

/**
 * Serves MCP over stdio (MCP transports §stdio): newline-delimited JSON-RPC on stdin/stdout,
 * logs on stderr only. One principal, the local user. Both protocol eras are served: a
 * 2025-era `initialize` pins a 2025 instance; a 2026-07-28 opening pins a modern one (SDK
 * `serveStdio`).
 *
 * stdin passes through `JsonRpcLineFilter` first: invalid JSON is answered `-32700`, batches
 * and non-messages `-32600`, and a line over `MAX_STDIO_MESSAGE_BYTES` (4 MiB) `-32600` and
 * discarded without being buffered, and the server keeps serving. A malformed client response is
 * dropped unanswered. stdin is not read while more than `MAX_PENDING_OUTPUT_BYTES` (64 KiB) of
 * answers wait to be written to stdout (a client that never reads stalls itself). Without it, the SDK drops the
 * first two silently and closes the whole transport on a message over its 10 MB buffer.
 *
 * @returns a promise that settles when the client closes stdin (or `stop` is called).
 */
export function serveStdioTransport(runtime: ToolRuntime, options: {maxMessageBytes?: number} = {}): {done: Promise<void>; stop: () => Promise<void>} {
  const maxBytes = options.maxMessageBytes ?? MAX_STDIO_MESSAGE_BYTES;
  let wire: StdioServerTransport | undefined;
  const filter = new JsonRpcLineFilter(async (reply) => {
    log.debug({code: reply.error.code}, 'stdio: message refused');
    await wire?.send(reply).catch((err: unknown) => log.debug({err}, 'stdio: refusal not sent'));
  }, {maxBytes, output: process.stdout});
  // The SDK's own read buffer never sees more than one line of at most maxBytes (plus its newline).
  wire = new StdioServerTransport(filter, process.stdout, {maxBufferSize: maxBytes + 2});
  process.stdin.pipe(filter);
  const handle = serveStdio(() => createMcpServer(runtime, localPrincipal, 'stdio'), {
    transport: wire,
    onerror: (err) => log.debug({err}, 'stdio transport error'),
  });
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve)).then(() => {
    process.stdin.unpipe(filter);
    process.stdin.pause();
  });
  process.stdin.once('end', () => finish());
  process.stdin.once('close', () => finish());
  return {
    done,
    stop: async () => {
      await handle.close().catch(() => {});
      finish();
      await done;
    },
  };
}
