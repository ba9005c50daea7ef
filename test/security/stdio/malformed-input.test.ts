/**
 * A stdio client (or whatever writes to the server's stdin) sends what the SDK would drop or die
 * on: a line that is not JSON, a JSON-RPC batch, a JSON value that is no JSON-RPC message, and a
 * 12 MiB line (over the SDK's 10 MB read buffer, which used to close the transport for good).
 * Each must be answered as JSON-RPC 2.0 §5.1 says, and the server must keep serving `tools/list`
 * and tool calls on the same connection.
 */
// invariant: stdio:framing:bad-input-answered
import assert from 'node:assert/strict';
import {spawn, type ChildProcessWithoutNullStreams} from 'node:child_process';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {MAX_STDIO_MESSAGE_BYTES} from '../../../src/frontend/json-rpc-line-filter.ts';
import {PACKAGE_ROOT} from '../../../src/paths.ts';
import {CLI} from '../../support/mcp-stdio.ts';

type Message = {jsonrpc: string; id?: string | number | null; result?: Record<string, unknown>; error?: {code: number; message: string}; method?: string};

let child: ChildProcessWithoutNullStreams;
let exited: Promise<unknown>;
const received: Message[] = [];
let stderr = '';

before(async () => {
  child = spawn(process.execPath, ['--no-node-snapshot', CLI, 'serve', '--tools', join(PACKAGE_ROOT, 'tools'), '--no-containers', '--audit-log', 'off'], {
    stdio: ['pipe', 'pipe', 'pipe'], env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'},
  });
  exited = new Promise((resolve) => child.once('exit', resolve));
  let pending = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text: string) => {
    pending += text;
    let newline: number;
    while ((newline = pending.indexOf('\n')) !== -1) {
      received.push(JSON.parse(pending.slice(0, newline)) as Message);
      pending = pending.slice(newline + 1);
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => (stderr += text));
  child.stdin.on('error', () => {}); // a dead server is reported by the assertions, not by EPIPE
  send({jsonrpc: '2.0', id: 'init', method: 'initialize', params: {protocolVersion: '2025-11-25', capabilities: {}, clientInfo: {name: 'raw', version: '1'}}});
  await answer((m) => m.id === 'init');
  send({jsonrpc: '2.0', method: 'notifications/initialized'});
});

after(async () => {
  child.stdin.end();
  const gone = await Promise.race([exited.then(() => true), new Promise((resolve) => setTimeout(resolve, 10_000, false))]);
  if (!gone) child.kill('SIGKILL');
});

function send(message: unknown): void {
  child.stdin.write(typeof message === 'string' ? message : `${JSON.stringify(message)}\n`);
}

/** The first message received from now on that matches, within a hazard bound of 30 s. */
async function answer(match: (m: Message) => boolean, from = received.length): Promise<Message> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const found = received.slice(from).find(match);
    if (found) return found;
    if (child.exitCode !== null || child.signalCode !== null) assert.fail(`the server exited; stderr:\n${stderr}`);
    if (Date.now() > deadline) assert.fail(`no matching answer within 30 s; received ${JSON.stringify(received.slice(from)).slice(0, 500)}; stderr:\n${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits for the error answer with `id` sent after `from`. */
const errorAnswer = (id: string | number | null, from: number) => answer((m) => m.error !== undefined && m.id === id, from);

let next = 100;
async function stillServing(): Promise<void> {
  const listId = next++;
  send({jsonrpc: '2.0', id: listId, method: 'tools/list'});
  const list = await answer((m) => m.id === listId);
  assert.ok((list.result?.tools as Array<{name: string}>).some((t) => t.name === 'text__word_count'), JSON.stringify(list));
  const callId = next++;
  send({jsonrpc: '2.0', id: callId, method: 'tools/call', params: {name: 'text__word_count', arguments: {text: 'one two three'}}});
  const call = await answer((m) => m.id === callId);
  assert.equal(call.error, undefined, JSON.stringify(call));
  const code = ((call.result?._meta as Record<string, {code?: string}> | undefined)?.['toolcell/error'])?.code;
  // On a host too busy to run the isolate in time the server still answers, with TIMEOUT or BUSY.
  if (code === undefined) assert.match(JSON.stringify(call.result), /3/);
  else assert.match(code, /^(TIMEOUT|BUSY)$/);
}

test('a line that is not JSON is answered -32700 with id null, and the server keeps serving', async () => {
  const from = received.length;
  send('{"jsonrpc": "2.0", "id": 1, "method": \n');
  send('not json at all\n');
  await answer(() => received.slice(from).filter((m) => m.error?.code === -32700).length >= 2, from);
  const errors = received.slice(from).filter((m) => m.error !== undefined);
  assert.deepEqual(errors.map((m) => [m.id, m.error!.code]), [[null, -32700], [null, -32700]], 'one answer per line');
  await stillServing();
});

test('a JSON-RPC batch is answered -32600 (batches were removed in 2025-06-18) and none of its calls runs', async () => {
  const from = received.length;
  send([{jsonrpc: '2.0', id: 7, method: 'tools/list'}, {jsonrpc: '2.0', id: 8, method: 'tools/call', params: {name: 'text__word_count', arguments: {text: 'x'}}}]);
  const refused = await errorAnswer(null, from);
  assert.equal(refused.error!.code, -32600);
  assert.match(refused.error!.message, /batch/i);
  await stillServing();
  assert.ok(!received.slice(from).some((m) => m.id === 7 || m.id === 8), 'no member of the batch was answered on its own');
});

test('JSON that is no JSON-RPC message is answered -32600, with its id when it has one', async () => {
  const from = received.length;
  send({id: 9, method: 'tools/list'});
  const refused = await errorAnswer(9, from);
  assert.equal(refused.error!.code, -32600);
  send('42\n');
  assert.equal((await errorAnswer(null, from)).error!.code, -32600);
  await stillServing();
});

test('a malformed client response is never answered (not with the client\'s own id either), and the server keeps serving', async () => {
  const from = received.length;
  send('{"jsonrpc":"2.0","id":77,"result":"x"}\n');
  send('{"jsonrpc":"2.0","id":78,"error":"x"}\n');
  await stillServing();
  assert.ok(!received.slice(from).some((m) => m.id === 77 || m.id === 78), JSON.stringify(received.slice(from)));
});

test('a 12 MiB line is answered -32600 naming the limit (id null: which id JSON.parse would take is past the cap), discarded, and the server keeps serving', async () => {
  const from = received.length;
  const text = 'word '.repeat((12 * 1024 * 1024) / 5);
  send({jsonrpc: '2.0', id: 'huge', method: 'tools/call', params: {name: 'text__word_count', arguments: {text}}});
  const refused = await errorAnswer(null, from);
  assert.equal(refused.error!.code, -32600);
  assert.match(refused.error!.message, new RegExp(`${MAX_STDIO_MESSAGE_BYTES} bytes`));
  await stillServing();
  // Duplicate ids, the last past the cap: still id null, never the first.
  const from2 = received.length;
  send(`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"arguments":{"text":"${'z'.repeat(12 * 1024 * 1024)}"}},"id":5}\n`);
  assert.equal((await errorAnswer(null, from2)).error!.code, -32600);
  assert.ok(!received.slice(from2).some((m) => m.id === 4), 'never answered with the first of two ids');
  await stillServing();
  assert.ok(!received.slice(from).some((m) => m.id === 'huge' && m.result !== undefined), 'the oversized call never ran');
});
