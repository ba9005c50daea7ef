// The real `@modelcontextprotocol/server-everything` from npm (nobody here wrote it), added with `toolcell add`, served by `toolcell serve` over stdio to a real MCP client:
// echo and add relayed, progress relayed and bounded, structured content, the sampling tool never served, and each call in a container of its own (read from the engine's events).
// invariant: server:call:fresh-process
// invariant: server:client-requests:refused
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import {ProtocolError} from '@modelcontextprotocol/client';
import {watchCreated} from '../support/docker.ts';
import {connectStdio, errorCode, textOf} from '../support/mcp-stdio.ts';
import {addNpmServer, ADD_TIMEOUT_MS, realServerSkip, type RealServer} from '../support/real-server.ts';

const SPEC = '@modelcontextprotocol/server-everything@2026.8.31';
const skip = await realServerSkip(SPEC);
/** One call on a busy 2-CPU host: container start, node start, handshake, the tool. */
const CALL_MS = 90_000;

/** Polls `check` until it holds or `ms` passed (then fails naming `what`). */
async function until(check: () => Promise<boolean> | boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > end) assert.fail(`${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('real server-everything through toolcell serve (stdio)', {skip}, () => {
  const name = `e${process.pid}-everything`;
  const tool = (t: string) => `${name}__${t}`;
  let server: RealServer | undefined;
  let session: Awaited<ReturnType<typeof connectStdio>> | undefined;
  let before0: string[] = [];

  before(async () => {
    server = await addNpmServer({spec: SPEC, name});
    before0 = await server.containers();
    session = await connectStdio(['--tools', server.toolsDir, '--profiles', server.profilesDir, '--no-bundled-tools', '--audit-log', 'off']);
  }, {timeout: ADD_TIMEOUT_MS + 60_000});
  after(async () => {
    await session?.close();
    await server?.dispose();
  });
  /** No container of this test is left (removal may trail the answer by a moment), and a plain call still works. */
  const stillServingAndClean = async () => {
    const r = await session!.client.callTool({name: tool('echo'), arguments: {message: 'still here'}}, {timeout: CALL_MS});
    assert.equal(textOf(r), 'Echo: still here', session!.stderr().slice(-2000));
    await until(async () => (await server!.containers()).length === 0, 30_000, 'a container of this test is left');
  };

  test('add pinned the real tools; the client lists them with the pinned definitions', async () => {
    assert.deepEqual(before0, []);
    assert.equal(server!.manifest.version, '2026.8.31');
    const {tools} = await session!.client.listTools();
    const names = tools.map((t) => t.name);
    for (const t of ['echo', 'get-sum', 'trigger-long-running-operation', 'get-structured-content']) assert.ok(names.includes(tool(t)), `${t} in ${names.join(', ')}`);
    const pinned = server!.manifest.tools.find((t) => t.name === 'get-structured-content')!.definition as {outputSchema?: unknown};
    assert.deepEqual(tools.find((t) => t.name === tool('get-structured-content'))?.outputSchema, pinned.outputSchema);
  });

  test('echo and get-sum are answered by the real server, each call in a container of its own (engine create events)', {timeout: 4 * CALL_MS}, async () => {
    // The container's hostname cannot tell calls apart (toolcell names every sandbox "sandbox"), so the engine's
    // create events for this test's profile label are read: two calls, two containers, two different IDs.
    const watch = await watchCreated(`toolcell.profile=${server!.profile}`);
    try {
      const a = await session!.client.callTool({name: tool('echo'), arguments: {message: 'hello from a sandbox'}}, {timeout: CALL_MS});
      assert.equal(textOf(a), 'Echo: hello from a sandbox', session!.stderr().slice(-2000));
      const b = await session!.client.callTool({name: tool('get-sum'), arguments: {a: 2, b: 40}}, {timeout: CALL_MS});
      assert.match(textOf(b), /\b42\b/);
      assert.equal(b.isError ?? false, false);
      await until(() => watch.ids().length >= 2, 30_000, `two create events (seen: ${watch.ids().join(', ')})`);
      const ids = watch.ids();
      assert.equal(ids.length, 2, `one container per call: ${ids.join(', ')}`);
      assert.notEqual(ids[0], ids[1]);
      assert.match(ids[0]!, /^[0-9a-f]{64}$/);
    } finally {
      watch.stop();
    }
    const bad = await session!.client.callTool({name: tool('get-sum'), arguments: {a: 'two', b: 40}}, {timeout: CALL_MS});
    assert.equal(errorCode(bad), 'INVALID_ARGUMENTS', 'checked against the pinned inputSchema before any sandbox');
    await stillServingAndClean();
  });

  test('a long-running tool: its progress reaches the client with the client\'s progressToken, at most 100 relayed per call', {timeout: 4 * CALL_MS}, async () => {
    const seen: Array<{progress: number; total?: number; message?: string}> = [];
    // 150 steps: the server sends 150 progress notifications; toolcell relays at most 100 of the server's.
    const r = await session!.client.callTool({name: tool('trigger-long-running-operation'), arguments: {duration: 2, steps: 150}},
      {timeout: CALL_MS, onprogress: (p) => { seen.push(p); }});
    assert.match(textOf(r), /Long running operation completed/, session!.stderr().slice(-2000));
    // The SDK client routes a notification to onprogress only when it carries this request's progressToken.
    const fromServer = seen.filter((p) => p.total === 150);
    assert.ok(fromServer.length >= 10, `server progress relayed: ${JSON.stringify(seen.slice(0, 5))} (${seen.length})`);
    assert.ok(fromServer.length <= 100, `at most 100 of the server's progress notifications relayed, got ${fromServer.length}`);
    for (let i = 1; i < fromServer.length; i++) assert.ok(fromServer[i]!.progress > fromServer[i - 1]!.progress, 'progress increases');
    await stillServingAndClean();
  });

  test('structured content is relayed with the result', {timeout: 2 * CALL_MS}, async () => {
    const r = await session!.client.callTool({name: tool('get-structured-content'), arguments: {location: 'Chicago'}}, {timeout: CALL_MS});
    const sc = r.structuredContent as {temperature: unknown; conditions: unknown; humidity: unknown};
    assert.equal(typeof sc?.temperature, 'number', JSON.stringify(r));
    assert.equal(typeof sc.conditions, 'string');
    assert.equal(typeof sc.humidity, 'number');
    assert.deepEqual(JSON.parse(textOf(r)), sc);
  });

  test('the sampling tool: never listed nor served (toolcell declares no sampling to the server), a call is refused at once', {timeout: 2 * CALL_MS}, async () => {
    // server-everything registers trigger-sampling-request only for a client that declares the sampling
    // capability; toolcell's handshake with a sandboxed server declares none (no channel out of a sandbox),
    // so the tool is not in the server's listing, not pinned, and a call of it is an unknown tool.
    assert.ok(!server!.manifest.tools.some((t) => t.name.includes('sampling')), 'no sampling tool pinned');
    const {tools} = await session!.client.listTools();
    assert.ok(!tools.some((t) => t.name.includes('sampling')));
    const t0 = Date.now();
    await assert.rejects(session!.client.callTool({name: tool('trigger-sampling-request'), arguments: {prompt: 'hi', maxTokens: 10}}, {timeout: CALL_MS}),
      (e: unknown) => e instanceof ProtocolError && /Unknown tool/.test(e.message));
    assert.ok(Date.now() - t0 < 30_000, 'refused without waiting for a sandbox');
    // The tool that would ask the client for input (elicitation) answers with the server's own error, without hanging.
    const r = await session!.client.callTool({name: tool('simulate-research-query'), arguments: {topic: 'x', ambiguous: true}}, {timeout: CALL_MS});
    assert.equal(r.isError, true, JSON.stringify(r));
    await stillServingAndClean();
  });
});
