// The in-process floor: an MCP server over stdio, built with the same SDK entry toolcell uses
// (serveStdio + low-level Server), whose one tool runs in-process with no sandbox at all.
import {Server} from '@modelcontextprotocol/server';
import {serveStdio} from '@modelcontextprotocol/server/stdio';

const double = (args) => args.n * 2;
serveStdio(() => {
  const server = new Server({name: 'floor', version: '1.0.0'}, {capabilities: {tools: {}}});
  server.setRequestHandler('tools/list', async () => ({
    tools: [{name: 'bench__double', description: 'n * 2', inputSchema: {type: 'object', properties: {n: {type: 'number'}}}}],
  }));
  server.setRequestHandler('tools/call', async (request) => {
    const value = double(request.params.arguments ?? {});
    return {content: [{type: 'text', text: JSON.stringify(value)}], structuredContent: {value}};
  });
  return server;
});
