import {serveStdio} from '@modelcontextprotocol/server/stdio';
import {log} from '../log.ts';
import {localPrincipal} from '../policy/principal.ts';
import type {ToolRuntime} from './call-tool.ts';
import {createMcpServer} from './mcp-server.ts';

/**
 * Serves MCP over stdio (MCP transports §stdio): newline-delimited JSON-RPC on stdin/stdout,
 * logs on stderr only. One principal, the local user. Both protocol eras are served: a
 * 2025-era `initialize` pins a 2025 instance; a 2026-07-28 opening pins a modern one (SDK
 * `serveStdio`).
 *
 * @returns a promise that settles when the client closes stdin (or `stop` is called).
 */
export function serveStdioTransport(runtime: ToolRuntime): {done: Promise<void>; stop: () => Promise<void>} {
  const handle = serveStdio(() => createMcpServer(runtime, localPrincipal, 'stdio'), {
    onerror: (err) => log.debug({err}, 'stdio transport error'),
  });
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  process.stdin.once('end', finish);
  process.stdin.once('close', finish);
  return {
    done,
    stop: async () => {
      await handle.close().catch(() => {});
      finish();
    },
  };
}
