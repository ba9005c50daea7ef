// The MCP stdio client over a fake attach stream: framing, bounds, protocol violations, server→client requests.
import assert from 'node:assert/strict';
import {Duplex} from 'node:stream';
import {test} from 'node:test';
import {JsonRpcError, MAX_SERVER_REQUESTS, McpStdioSession, SessionError} from '../../../../src/backends/server/mcp-stdio-session.ts';

/** A fake attach socket: `server(stream, text)` feeds framed output; `written` collects what the client sent. */
function fakeSocket() {
  const written: string[] = [];
  const socket = new Duplex({read() {}, write(chunk, _enc, cb) { written.push(String(chunk)); cb(); }});
  const frame = (stream: 1 | 2, text: string | Buffer) => {
    const payload = Buffer.isBuffer(text) ? text : Buffer.from(text);
    const header = Buffer.alloc(8);
    header[0] = stream;
    header.writeUInt32BE(payload.length, 4);
    return Buffer.concat([header, payload]);
  };
  return {socket, written, server: (stream: 1 | 2, text: string | Buffer) => socket.push(frame(stream, text)), raw: (b: Buffer) => socket.push(b), frame};
}
const tick = () => new Promise((r) => setImmediate(r));
const sent = (w: string[]) => w.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

test('a request is answered by its id; a line split across frames and frame headers split across chunks still parse', async () => {
  const f = fakeSocket();
  const s = new McpStdioSession(f.socket, {outputBytes: 1 << 20});
  const p = s.request('tools/list', {});
  await tick();
  assert.deepEqual(sent(f.written)[0], {jsonrpc: '2.0', id: 1, method: 'tools/list', params: {}});
  const whole = f.frame(1, '{"jsonrpc":"2.0","id":1,"res');
  f.raw(whole.subarray(0, 3));
  f.raw(whole.subarray(3));
  f.server(1, 'ult":{"tools":[]}}\n');
  assert.deepEqual(await p, {tools: []});
});

test('an error answer rejects with JsonRpcError; stderr is kept apart for the log', async () => {
  const f = fakeSocket();
  const s = new McpStdioSession(f.socket, {outputBytes: 1 << 20});
  const p = s.request('tools/call', {name: 'x'});
  f.server(2, 'debug: something\n');
  f.server(1, '{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"unknown tool"}}\n');
  await assert.rejects(p, (e: unknown) => e instanceof JsonRpcError && e.code === -32602 && e.message === 'unknown tool');
  assert.equal(s.stderrText(), 'debug: something\n');
});

for (const [what, line, expected] of [
  ['a line that is not JSON', 'Server listening on stdio\n', /not JSON/],
  ['JSON that is not JSON-RPC 2.0', '{"id":1,"result":{}}\n', /not a JSON-RPC 2\.0 message/],
  ['a batch', '[{"jsonrpc":"2.0","id":1,"result":{}}]\n', /not a JSON-RPC 2\.0 message/],
  ['an answer to an id never sent', '{"jsonrpc":"2.0","id":99,"result":{}}\n', /never sent/],
] as const) {
  test(`${what} on stdout fails the session (protocol) and the waiting request`, async () => {
    const f = fakeSocket();
    const s = new McpStdioSession(f.socket, {outputBytes: 1 << 20});
    const p = s.request('initialize', {});
    f.server(1, line);
    await assert.rejects(p, (e: unknown) => e instanceof SessionError && e.failure.kind === 'protocol' && expected.test(e.message));
  });
}

test('output past outputBytes (stdout and stderr together) fails the session with output-limit; so does an over-long line', async () => {
  const f = fakeSocket();
  const s = new McpStdioSession(f.socket, {outputBytes: 1000});
  const p = s.request('initialize', {});
  f.server(2, 'e'.repeat(600));
  f.server(1, 'x'.repeat(500));
  await assert.rejects(p, (e: unknown) => e instanceof SessionError && e.failure.kind === 'output-limit');
  const g = fakeSocket();
  const t = new McpStdioSession(g.socket, {outputBytes: 10_000});
  const q = t.request('initialize', {});
  g.server(1, 'y'.repeat(20_000));
  await assert.rejects(q, (e: unknown) => e instanceof SessionError && e.failure.kind === 'output-limit');
});

test('server→client requests get an error at once (ping an empty result); past the limit the session fails', async () => {
  const f = fakeSocket();
  const asked: string[] = [];
  const s = new McpStdioSession(f.socket, {outputBytes: 1 << 22}, {onServerRequest: (m) => asked.push(m)});
  const p = s.request('tools/call', {});
  f.server(1, '{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}\n{"jsonrpc":"2.0","id":"s2","method":"ping"}\n');
  await tick();
  const out = sent(f.written);
  assert.deepEqual(out[1], {jsonrpc: '2.0', id: 's1', error: {code: -32601, message: 'sampling/createMessage: not available inside a toolcell sandbox'}});
  assert.deepEqual(out[2], {jsonrpc: '2.0', id: 's2', result: {}});
  assert.deepEqual(asked, ['sampling/createMessage', 'ping']);
  let flood = '';
  for (let i = 0; i < MAX_SERVER_REQUESTS; i++) flood += `{"jsonrpc":"2.0","id":${i},"method":"roots/list"}\n`;
  f.server(1, flood);
  await assert.rejects(p, (e: unknown) => e instanceof SessionError && /more than 256 requests/.test(e.message));
});

test('progress and log notifications reach the handlers; the stream closing fails waiting requests (closed)', async () => {
  const f = fakeSocket();
  const seen: unknown[] = [];
  const s = new McpStdioSession(f.socket, {outputBytes: 1 << 20}, {onProgress: (p) => seen.push(p), onLog: (p) => seen.push(p)});
  const p = s.request('tools/call', {});
  f.server(1, '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}\n{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}\n');
  await tick();
  assert.deepEqual(seen, [{progressToken: 't', progress: 1}, {level: 'info', data: 'x'}]);
  f.socket.push(null);
  await assert.rejects(p, (e: unknown) => e instanceof SessionError && e.failure.kind === 'closed');
});

test('a handler that throws on what the server sent fails the session (protocol), never the process', async () => {
  const f = fakeSocket();
  const s = new McpStdioSession(f.socket, {outputBytes: 1 << 20}, {
    onLog: () => { throw new RangeError('Maximum call stack size exceeded'); },
    onFailure: () => { throw new Error('a failing onFailure is swallowed too'); },
  });
  const p = s.request('tools/call', {name: 'x'});
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  try {
    f.server(1, '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}\n');
    await assert.rejects(p, (e: unknown) => e instanceof SessionError && e.failure.kind === 'protocol' && /log notification/.test(e.message));
    assert.doesNotMatch(s.failure!.message, /call stack/, 'the handler\'s error is not relayed');
  } finally {
    process.off('uncaughtException', onUncaught);
  }
  assert.deepEqual(uncaught, []);
});
