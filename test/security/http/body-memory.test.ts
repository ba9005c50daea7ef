/**
 * Request bodies under the cap must not exhaust the service's memory. Two attacks by an
 * authenticated principal granted nothing:
 * - bodies sent as 1-byte HTTP chunks, never finished (each chunk is its own Buffer in Node:
 *   kept one per chunk, a 1 MiB body cost ~45 MB of heap and 16 of them killed the service);
 * - many connections each sending a body just under the cap and then stalling (slowloris: 1500
 *   of them held 1.5 GB).
 * The first runs against a `toolcell serve` child with a 64 MB heap; the second against an
 * in-process service with small body bounds. Both then check the service still answers.
 */
// invariant: http:body:memory-bounded
import assert from 'node:assert/strict';
import {writeFile} from 'node:fs/promises';
import {connect, type Socket} from 'node:net';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {fakeRuntime, KEYS, messagesOf, modernCall, post, spawnCli, startService, writeFixtures} from '../../e2e/http/support.ts';

const CAROL = 'carol-key-0123456789abcdef0123456789abcdef';
const KEY_CONFIG = {
  apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}, {name: 'carol', sha256: hashApiKey(CAROL)}],
  grants: [{principal: 'key:alice', packages: ['fixture']}],
};
const MIB = 1024 * 1024;

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
const sockets: Socket[] = [];

before(async () => {
  fixtures = await writeFixtures();
});

after(async () => {
  for (const socket of sockets) socket.destroy();
  await fixtures?.dispose();
});

/** Opens a connection and sends a POST /mcp head; collects what the server answers. */
function openPost(port: number, token: string, framing: {chunked: true} | {contentLength: number}): {socket: Socket; received: () => string; closed: Promise<void>} {
  const socket = connect({host: '127.0.0.1', port});
  sockets.push(socket);
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => (received += text));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const length = 'chunked' in framing ? 'Transfer-Encoding: chunked' : `Content-Length: ${framing.contentLength}`;
  socket.write(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n`
    + `Authorization: Bearer ${token}\r\n${length}\r\n\r\n`);
  return {socket, received: () => received, closed};
}

/** Resolves when `socket` has handed everything written so far to the kernel (or failed). */
const flushed = (socket: Socket) => new Promise<void>((resolve) => socket.write('', () => resolve()));

/** Waits until `check` holds, polling every 50 ms, for at most `ms`. */
async function until(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return check();
}

test('bodies of 1-byte chunks just under the cap, from a principal granted nothing, do not exhaust a 64 MB heap; the service still answers', async () => {
  const configFile = `${fixtures.dir}/service.json`;
  await writeFile(configFile, JSON.stringify(KEY_CONFIG));
  const server = await spawnCli(['--http', '127.0.0.1:0', '--config', configFile, '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers', '--audit-log', 'off'],
    {env: {NODE_OPTIONS: '--max-old-space-size=64'}});
  const deadline = setTimeout(() => server.child.kill('SIGKILL'), 120_000);
  let exit: {code: number | null; signal: NodeJS.Signals | null} | undefined;
  void server.exited.then((e) => (exit = e));
  try {
    const url = new URL(server.url);
    const port = Number(url.port);
    // 3 bodies of 512 KiB of JSON whitespace, one byte per HTTP chunk (1.5 MiB of payload, ~9 MB on
    // the wire); kept one Buffer per chunk this was ~70 MB of heap. The service itself holds
    // 30-35 MB once started (its tools, SDK and schemas: it grew past what a 48 MB heap left
    // room for, and died of the attack's ordinary transient garbage), so 64 MB leaves ~30 MB.
    const one = Buffer.from('1\r\n \r\n');
    const body = Buffer.concat(Array.from({length: MIB / 2}, () => one));
    const posts = Array.from({length: 3}, () => openPost(port, KEYS.bob, {chunked: true}));
    for (const p of posts) {
      p.socket.write(body);
      await flushed(p.socket);
    }
    // Finish each body (still under the cap, not JSON): the answer comes only once the server read it all.
    for (const p of posts) p.socket.write('0\r\n\r\n');
    const answered = await until(() => exit !== undefined || posts.every((p) => /^HTTP\/1\.1 \d{3}/.test(p.received())), 90_000);
    assert.equal(exit, undefined, `the service died: ${JSON.stringify(exit)}; stderr tail: ${server.stderr().slice(-400)}`);
    assert.ok(answered, 'every body was read and answered');
    for (const p of posts) assert.match(p.received(), /^HTTP\/1\.1 400 /, 'whitespace is not JSON: 400 -32700');
    const health = await fetch(`${url.origin}/healthz`);
    assert.equal(health.status, 200);
    await health.text();
    const c = modernCall('fixture__double', {x: 4});
    const call = await post(server.url, c.body, {...c.headers, Authorization: `Bearer ${KEYS.alice}`});
    assert.equal(call.status, 200);
    assert.equal(((await messagesOf(call))[0]!.result as {content: Array<{text: string}>}).content[0]!.text, '8');
  } finally {
    clearTimeout(deadline);
    server.child.kill('SIGTERM');
    const exited = await Promise.race([server.exited, new Promise((resolve) => setTimeout(resolve, 15_000, 'timeout'))]);
    if (exited === 'timeout') server.child.kill('SIGKILL');
  }
});

test('stalled bodies just under the cap: a principal gets 429 past its share of body reads, everyone 503 past the total or the byte bound; others are still served', async () => {
  const env = await fakeRuntime(fixtures);
  const service: HttpService = await startService(env.runtime, KEY_CONFIG, {bodyLimits: {maxConcurrent: 4, maxConcurrentPerPrincipal: 3, maxBufferedBytes: 2.5 * MIB}});
  try {
    const stall = (token: string) => {
      // Declares 1 MiB, sends 1 MiB - 1, and never sends the last byte.
      const p = openPost(service.port, token, {contentLength: MIB});
      p.socket.write(Buffer.alloc(MIB - 1, 0x20));
      return p;
    };
    const statusOf = async (p: ReturnType<typeof openPost>) => {
      assert.ok(await until(() => /^HTTP\/1\.1 \d{3}/.test(p.received()), 20_000), 'an answer');
      return Number(/^HTTP\/1\.1 (\d{3})/.exec(p.received())![1]);
    };
    const held = [stall(KEYS.bob), stall(KEYS.bob)];
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Bob's third body would pass the 2.5 MiB byte bound: 503, unread.
    const thirdBob = stall(KEYS.bob);
    assert.equal(await statusOf(thirdBob), 503);
    assert.match(thirdBob.received(), /Retry-After: 1/i);
    assert.match(thirdBob.received(), /"code":-32000/);
    // The byte bound is shared: carol's declared 1 MiB does not fit either.
    const carolFull = stall(CAROL);
    assert.equal(await statusOf(carolFull), 503);
    for (const p of held) assert.equal(p.received(), '', 'the stalled reads are still held');
    // A small body from alice fits, and her call runs.
    const c = modernCall('fixture__double', {x: 4});
    const call = await post(service.url, c.body, {...c.headers, Authorization: `Bearer ${KEYS.alice}`});
    assert.equal(call.status, 200);
    assert.equal(((await messagesOf(call))[0]!.result as {content: Array<{text: string}>}).content[0]!.text, '8');
    for (const p of [...held, thirdBob, carolFull]) p.socket.destroy();
    await Promise.all(held.map((p) => p.closed));

    // Per principal: bob's 4th small stalled body is refused 429.
    const small = (token: string) => {
      const p = openPost(service.port, token, {contentLength: 1024});
      p.socket.write(' ');
      return p;
    };
    await until(() => false, 200); // the released reads are returned
    const bobs = [small(KEYS.bob), small(KEYS.bob), small(KEYS.bob)];
    await new Promise((resolve) => setTimeout(resolve, 300));
    const fourthBob = small(KEYS.bob);
    assert.equal(await statusOf(fourthBob), 429);
    assert.match(fourthBob.received(), /Retry-After: 1/i);
    // Carol's takes the last of the 4 slots; alice's is then refused 503 (the service is full).
    const carol = small(CAROL);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const alice = small(KEYS.alice);
    assert.equal(await statusOf(alice), 503);
    assert.equal(carol.received(), '', "carol's read is held, not refused");
    for (const p of [...bobs, fourthBob, carol, alice]) p.socket.destroy();
    await Promise.all(bobs.map((p) => p.closed));
    await until(() => false, 200);
    const again = await post(service.url, c.body, {...c.headers, Authorization: `Bearer ${KEYS.alice}`});
    assert.equal(again.status, 200, 'released slots are reusable');
    await again.text();
  } finally {
    await service.shutdown({drainMs: 0});
  }
});
