import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {ISOLATE_WAIT_SLACK_MS} from '../../src/backends/isolate/isolate-backend.ts';
import {BUNDLED_PROFILES, PACKAGE_ROOT} from '../../src/paths.ts';
import {CLI, childPids, connectStdio, errorCode, textOf} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

/**
 * A real MCP client (SDK) spawns `node dist/cli.js serve` over stdio and uses the bundled
 * tools; a hostile third-party package, written as a tool author would, tries to take the
 * server down. After each attack the server must still answer a normal call.
 */

const HOSTILE_TIMEOUT_MS = 1000;
const hostile: Record<string, string> = {
  spin: 'export default () => { for (;;) {} }',
  microtasks: 'export default () => new Promise(() => { const f = () => { Promise.resolve().then(f); }; f(); })',
  heap: 'export default () => { const a = []; for (;;) a.push(new Array(1e6).fill(1.5)); }',
  flood: 'export default () => { for (let i = 0; i < 1e6; i++) console.log("x".repeat(1000)); return 1; }',
  bigresult: 'export default () => "y".repeat(10 * 1024 * 1024)',
  escape: 'export default () => [typeof process, typeof require, (() => { try { return typeof globalThis.constructor.constructor("return process")(); } catch (e) { return "threw"; } })()]',
  pollute: 'export default () => JSON.parse(\'{"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}\')',
  stdout: 'export default () => { console.log("{\\"jsonrpc\\":\\"2.0\\",\\"id\\":999,\\"result\\":{}}"); return "done"; }',
  slow: 'export default async () => { await new Promise(() => {}); }',
  double: 'export default (a) => ({value: a.n * 2})',
};

let dir: Awaited<ReturnType<typeof tempDir>>;
let auditFile: string;
let server: Awaited<ReturnType<typeof connectStdio>>;

before(async () => {
  dir = await tempDir();
  await dir.write('profiles/hostile-test.json', {name: 'hostile-test', backend: 'isolate', limits: {timeoutMs: HOSTILE_TIMEOUT_MS, memoryMb: 32, outputBytes: 65536}});
  const tools = Object.keys(hostile).map((name) => ({
    name, description: `hostile fixture ${name}`, profile: 'hostile-test', isolate: {entry: `${name}.js`},
    inputSchema: {type: 'object', properties: {n: {type: 'number'}}, additionalProperties: false},
  }));
  await dir.write('tools/hostile/toolcell.json', {name: 'hostile', version: '1.0.0', tools});
  for (const [name, source] of Object.entries(hostile)) await dir.write(`tools/hostile/${name}.js`, source);
  auditFile = join(dir.path, 'audit.jsonl');
  server = await connectStdio([
    '--tools', join(PACKAGE_ROOT, 'tools'), '--tools', join(dir.path, 'tools'),
    '--profiles', BUNDLED_PROFILES, '--profiles', join(dir.path, 'profiles'),
    '--audit-log', auditFile,
  ]);
});

after(async () => {
  await server?.close();
  await dir?.dispose();
});

async function assertStillServing() {
  const result = await server.client.callTool({name: 'hostile__double', arguments: {n: 21}});
  assert.equal(result.isError, undefined, textOf(result));
  assert.deepEqual(result.structuredContent, {value: 42});
}

describe('bundled tools over stdio', () => {
  test('tools/list shows the bundled isolate tools with profile-derived annotations', async () => {
    const {tools} = await server.client.listTools();
    const names = tools.map((t) => t.name);
    for (const name of ['js__eval', 'markdown__to_html', 'math__evaluate', 'text__diff', 'text__word_count']) {
      assert.ok(names.includes(name), `${name} listed`);
    }
    const wc = tools.find((t) => t.name === 'text__word_count')!;
    assert.equal(wc.annotations?.openWorldHint, false);
    assert.equal(wc.annotations?.readOnlyHint, true);
    assert.equal(wc._meta?.['toolcell/profile'], 'isolate-strict');
    for (const t of tools) assert.match(t.name, /^[A-Za-z0-9_-]{1,128}$/);
  });

  test('markdown__to_html renders this project\'s README', async () => {
    const markdown = await readFile(join(PACKAGE_ROOT, 'README.md'), 'utf8');
    const result = await server.client.callTool({name: 'markdown__to_html', arguments: {markdown}});
    assert.equal(result.isError, undefined, textOf(result));
    assert.match(textOf(result), /<h1[^>]*>toolcell<\/h1>/);
    const usage = result._meta?.['toolcell/usage'] as {backend: string; profile: string; durationMs: number};
    assert.equal(usage.backend, 'isolate');
    assert.equal(typeof usage.durationMs, 'number');
  });

  test('math__evaluate converts units: 2 inch to cm', async () => {
    const result = await server.client.callTool({name: 'math__evaluate', arguments: {expression: '2 inch to cm'}});
    assert.equal(result.isError, undefined, textOf(result));
    assert.match(textOf(result), /5\.08 cm/);
  });

  test('text__diff and text__word_count work on real text', async () => {
    const diff = await server.client.callTool({name: 'text__diff', arguments: {a: 'one\ntwo\nthree\n', b: 'one\n2\nthree\n'}});
    assert.match(textOf(diff), /-two\n\+2/);
    const wc = await server.client.callTool({name: 'text__word_count', arguments: {text: 'the quick brown fox\njumps'}});
    assert.match(JSON.stringify(wc.structuredContent ?? textOf(wc)), /5/);
  });

  test('js__eval runs caller code and returns its result and console output', async () => {
    const result = await server.client.callTool({name: 'js__eval', arguments: {code: 'console.log("hi"); [1,2,3].map(x => x * 2)'}});
    assert.equal(result.isError, undefined, textOf(result));
    const text = textOf(result);
    assert.match(text, /\[2,4,6\]|2,\s*4,\s*6/);
    assert.match(text, /hi/);
  });

  test('invalid arguments are INVALID_ARGUMENTS naming the field; unknown tools are protocol errors', async () => {
    const bad = await server.client.callTool({name: 'text__word_count', arguments: {text: 5}});
    assert.equal(bad.isError, true);
    assert.equal(errorCode(bad), 'INVALID_ARGUMENTS');
    assert.match(textOf(bad), /\/text: must be string/);
    await assert.rejects(server.client.callTool({name: 'nope__nothing', arguments: {}}), /Unknown tool/);
    await assertStillServing();
  });
});

describe('a hostile package cannot hurt the server', () => {
  // Every code that contains the attack is accepted: on a busy host the heap bomb can use up its
  // own time (TIMEOUT) before its heap (MEMORY_LIMIT). The time bound is what the backend
  // promises whatever the load: the isolate's absolute backstop, timeoutMs + ISOLATE_WAIT_SLACK_MS
  // (a deadline measures the tool's own running time, not time spent waiting for a CPU).
  const cases = [['spin', ['TIMEOUT']], ['microtasks', ['TIMEOUT']], ['slow', ['TIMEOUT']], ['heap', ['MEMORY_LIMIT', 'TIMEOUT']],
    ['flood', ['OUTPUT_LIMIT']], ['bigresult', ['OUTPUT_LIMIT']]] as const;
  for (const [tool, codes] of cases) {
    test(`${tool}: ends with ${codes.join(' or ')} by its backstop, and the server keeps serving`, async () => {
      const started = performance.now();
      const result = await server.client.callTool({name: `hostile__${tool}`, arguments: {}});
      const elapsed = performance.now() - started;
      assert.equal(result.isError, true);
      assert.ok((codes as readonly string[]).includes(errorCode(result) ?? ''), `${errorCode(result)}: ${textOf(result)}`);
      assert.ok(elapsed < HOSTILE_TIMEOUT_MS + ISOLATE_WAIT_SLACK_MS, `ended after ${Math.round(elapsed)} ms`);
      assert.doesNotMatch(textOf(result), /\/work\/|\/home\/|at .*\.ts:\d+/, 'no host paths or stacks in the result');
      await assertStillServing();
    });
  }

  test('escape: process, require and the Function-constructor trick find nothing', async () => {
    const result = await server.client.callTool({name: 'hostile__escape', arguments: {}});
    const [proc, req, viaFunction] = JSON.parse(textOf(result));
    assert.equal(proc, 'undefined');
    assert.equal(req, 'undefined');
    assert.ok(viaFunction === 'threw' || viaFunction === 'undefined', `Function("return process")() gave ${viaFunction}`);
    await assertStillServing();
  });

  test('pollute: a returned __proto__ payload does not pollute the server', async () => {
    const result = await server.client.callTool({name: 'hostile__pollute', arguments: {}});
    assert.equal(result.isError, undefined);
    await assertStillServing();
    const again = await server.client.callTool({name: 'text__word_count', arguments: {text: 'a b'}});
    assert.doesNotMatch(JSON.stringify(again), /polluted/);
  });

  test('killing the isolate worker mid-call ends that call with an error of its own (re-run alone, or BACKEND_UNAVAILABLE), never a leak; the next call works', async () => {
    const pending = server.client.callTool({name: 'hostile__slow', arguments: {}});
    await new Promise((r) => setTimeout(r, 200));
    const workers = childPids(server.pid()!);
    assert.ok(workers.length > 0, 'the server has an isolate worker process');
    for (const pid of workers) process.kill(pid, 'SIGKILL');
    const result = await pending;
    assert.equal(result.isError, true);
    // The call did not kill its worker, so it is run again alone in a quarantine worker
    // (issue 11 item 7), where this tool, which never resolves, reaches its deadline; a
    // worker that cannot be replaced ends it with BACKEND_UNAVAILABLE instead.
    assert.ok(['TIMEOUT', 'BACKEND_UNAVAILABLE'].includes(errorCode(result) ?? ''), `code ${errorCode(result)}`);
    assert.doesNotMatch(textOf(result), /pid|\/work\//);
    await assertStillServing();
  });
});

describe('cancellation and load', () => {
  test('a cancelled call stops its isolate, sends no result, and is audited as canceled', async () => {
    const controller = new AbortController();
    const pending = server.client.callTool({name: 'hostile__slow', arguments: {}}, {signal: controller.signal});
    setTimeout(() => controller.abort(), 150);
    await assert.rejects(pending, /abort/i);
    await assertStillServing();
    await new Promise((r) => setTimeout(r, 200));
    const events = (await readFile(auditFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    const canceled = events.filter((e) => e.tool === 'hostile__slow' && e.outcome === 'canceled');
    assert.ok(canceled.length >= 1, 'the cancellation is audited');
    assert.ok(canceled.at(-1).durationMs < HOSTILE_TIMEOUT_MS, 'the isolate was stopped before its timeout');
    for (const e of events) {
      assert.equal(e.v, 2);
      assert.match(e.inputSha256, /^[0-9a-f]{64}$/);
      assert.equal('arguments' in e || 'input' in e, false, 'raw arguments never reach the audit log');
    }
  });

  test('200 concurrent calls on one connection: every one is answered (result or BUSY), none lost', async () => {
    const calls = Array.from({length: 200}, (_, i) => server.client.callTool({name: 'hostile__double', arguments: {n: i}}));
    const results = await Promise.all(calls);
    let ok = 0;
    let busy = 0;
    results.forEach((r, i) => {
      if (r.isError) {
        assert.equal(errorCode(r), 'BUSY');
        busy++;
      } else {
        assert.deepEqual(r.structuredContent, {value: i * 2}, 'each call gets its own result');
        ok++;
      }
    });
    assert.equal(ok + busy, 200);
    assert.ok(ok > 0);
  });

  test('progress notifications report the call\'s stages; console output arrives as log notifications before the result', async () => {
    // Read the wire itself: the SDK client drops a progress notification it processes after the
    // response it belongs to, so only the raw stream shows what the server sent, and in what order.
    const child = spawn(process.execPath, [CLI, 'serve', '--no-bundled-tools', '--tools', join(dir.path, 'tools'), '--profiles', join(dir.path, 'profiles'), '--audit-log', 'off'],
      {stdio: ['pipe', 'pipe', 'ignore']});
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    const send = (m: object) => child.stdin.write(`${JSON.stringify(m)}\n`);
    send({jsonrpc: '2.0', id: 1, method: 'initialize', params: {protocolVersion: '2025-11-25', capabilities: {}, clientInfo: {name: 'raw', version: '1'}}});
    send({jsonrpc: '2.0', method: 'notifications/initialized'});
    send({jsonrpc: '2.0', id: 2, method: 'tools/call', params: {name: 'hostile__stdout', arguments: {}, _meta: {progressToken: 'p1'}}});
    const deadline = Date.now() + 10_000;
    while (!stdout.includes('"id":2') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    child.stdin.end();
    await new Promise((r) => child.once('exit', r));
    const messages = stdout.trim().split('\n').map((l) => JSON.parse(l) as {id?: number; method?: string; params?: {progress?: number; progressToken?: string; data?: unknown}});
    const answer = messages.findIndex((m) => m.id === 2);
    assert.ok(answer > 0, 'the call was answered');
    const before = messages.slice(0, answer);
    assert.deepEqual(before.filter((m) => m.method === 'notifications/progress').map((m) => [m.params!.progressToken, m.params!.progress]),
      [['p1', 0], ['p1', 1], ['p1', 2]], 'queued, running, finished — all before the result');
    const logs = before.filter((m) => m.method === 'notifications/message').map((m) => String(m.params!.data));
    assert.ok(logs.some((l) => l.includes('"id":999')), `the tool's console line, as a log notification: ${JSON.stringify(logs)}`);
    assert.equal(messages.filter((m) => m.method === 'notifications/progress').length, 3, 'nothing after the result');
  });

  test('a 2026-07-28 client is served too', async () => {
    const modern = await connectStdio([], {era: 'modern'});
    try {
      const result = await modern.client.callTool({name: 'text__word_count', arguments: {text: 'one two three'}});
      assert.equal(result.isError, undefined, textOf(result));
      assert.match(JSON.stringify(result.structuredContent), /3/);
    } finally {
      await modern.close();
    }
  });
});

test('stdout carries nothing but protocol messages, even when a tool prints JSON-RPC-looking text', async () => {
  const child = spawn(process.execPath, [CLI, 'serve', '--no-bundled-tools', '--tools', join(dir.path, 'tools'), '--profiles', join(dir.path, 'profiles'), '--audit-log', 'off'],
    {stdio: ['pipe', 'pipe', 'pipe'], env: {...process.env, TOOLCELL_LOG_LEVEL: 'debug'}});
  let stdout = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  const send = (m: object) => child.stdin.write(`${JSON.stringify(m)}\n`);
  send({jsonrpc: '2.0', id: 1, method: 'initialize', params: {protocolVersion: '2025-11-25', capabilities: {}, clientInfo: {name: 'raw', version: '1'}}});
  send({jsonrpc: '2.0', method: 'notifications/initialized'});
  send({jsonrpc: '2.0', id: 2, method: 'tools/call', params: {name: 'hostile__stdout', arguments: {}}});
  send({jsonrpc: '2.0', id: 3, method: 'tools/call', params: {name: 'hostile__flood', arguments: {}}});
  const deadline = Date.now() + 10_000;
  while (!(stdout.includes('"id":3')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  child.stdin.end();
  await new Promise((r) => child.once('exit', r));
  const lines = stdout.trim().split('\n');
  assert.ok(lines.length >= 3);
  for (const line of lines) {
    const message = JSON.parse(line);
    assert.equal(message.jsonrpc, '2.0');
    assert.notEqual(message.id, 999, 'a tool cannot forge a protocol message');
  }
});
