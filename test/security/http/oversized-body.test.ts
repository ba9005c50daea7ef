/**
 * A client keeps sending a 20 MB body to a service with a 1 MiB cap (declared, chunked, or
 * refused before the body is even looked at: no credentials, wrong content type). The service
 * must answer with its JSON-RPC error (413, or 401/415) that the client can actually read,
 * rather than resetting the connection under it (EPIPE / ECONNRESET before any answer), must
 * not buffer the body, and must answer the next request.
 */
// invariant: http:body:refusal-readable
// invariant: http:connection:nothing-after-refusal
import assert from 'node:assert/strict';
import {connect, type Socket} from 'node:net';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {DEFAULT_MAX_BODY_BYTES, hashApiKey} from '../../../src/policy/service-config.ts';
import {fakeRuntime, KEYS, messagesOf, modernCall, post, startService, writeFixtures} from '../../e2e/http/support.ts';

const BODY_BYTES = 20 * 1024 * 1024;
const CHUNK = 64 * 1024;

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let env: Awaited<ReturnType<typeof fakeRuntime>>;
let service: HttpService;

before(async () => {
  fixtures = await writeFixtures();
  env = await fakeRuntime(fixtures);
  service = await startService(env.runtime, {
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}],
    grants: [{principal: 'key:alice', packages: ['fixture']}],
  });
});

after(async () => {
  await service?.shutdown({drainMs: 0});
  await fixtures?.dispose();
});

interface Exchange {
  /** Everything the server sent, as text. */
  received: string;
  /** Body bytes the client managed to send. */
  sent: number;
  /** The write-side error that stopped the client, if any (EPIPE, ECONNRESET). */
  writeError: string | undefined;
}

/**
 * Sends a request head and then a 20 MB body in 64 KiB writes, honouring backpressure and
 * yielding between writes (a client that keeps sending, not one that waits), reading whatever
 * the server answers meanwhile. Ends when the whole body was sent and the server closed, or the
 * connection failed, or after 60 s (hazard bound).
 */
function sendHuge(head: Record<string, string>, chunked: boolean, options: {bytes?: number; pauseMs?: number; path?: string} = {}): Promise<Exchange> {
  const total = options.bytes ?? BODY_BYTES;
  return new Promise((resolve) => {
    const socket: Socket = connect({host: '127.0.0.1', port: service.port});
    const exchange: Exchange = {received: '', sent: 0, writeError: undefined};
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(exchange);
    };
    const timer = setTimeout(finish, 60_000);
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => (exchange.received += text));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      exchange.writeError ??= err.code ?? err.message;
      finish();
    });
    socket.on('close', finish);
    const headers = {
      Host: `127.0.0.1:${service.port}`, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream',
      ...(chunked ? {'Transfer-Encoding': 'chunked'} : {'Content-Length': String(total)}), ...head,
    };
    socket.write(`POST ${options.path ?? '/mcp'} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`);
    const piece = Buffer.alloc(CHUNK, 0x20);
    const pump = () => {
      while (!done && exchange.sent < total) {
        exchange.sent += CHUNK;
        const ok = socket.write(chunked ? Buffer.concat([Buffer.from(`${CHUNK.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece);
        if (!ok) {
          socket.once('drain', pump);
          return;
        }
        if (options.pauseMs !== undefined) {
          setTimeout(pump, options.pauseMs);
          return;
        }
        if (exchange.sent % (16 * CHUNK) === 0) {
          setImmediate(pump);
          return;
        }
      }
      if (!done && chunked) socket.write('0\r\n\r\n');
    };
    pump();
  });
}

/** Status code and JSON body of the first response in `text`. */
function firstResponse(text: string): {status: number; headers: string; body: string} {
  const match = /^HTTP\/1\.1 (\d{3}) [^\r\n]*\r\n([\s\S]*?)\r\n\r\n/.exec(text);
  assert.ok(match, `an HTTP answer, got ${JSON.stringify(text.slice(0, 200))}`);
  const rest = text.slice(match[0].length);
  const length = /content-length: (\d+)/i.exec(match[2]!);
  return {status: Number(match[1]), headers: match[2]!, body: length ? rest.slice(0, Number(length[1])) : rest};
}

async function callWorks(): Promise<void> {
  const c = modernCall('fixture__double', {x: 4});
  const response = await post(service.url, c.body, {...c.headers, Authorization: `Bearer ${KEYS.alice}`});
  assert.equal(response.status, 200);
  const [message] = await messagesOf(response);
  assert.equal((message!.result as {content: Array<{text: string}>}).content[0]!.text, '8');
}

const cases: Array<[string, Record<string, string>, boolean, number, number]> = [
  ['declared 20 MB (Content-Length)', {Authorization: `Bearer ${KEYS.alice}`}, false, 413, -32000],
  ['chunked 20 MB (no declared length)', {Authorization: `Bearer ${KEYS.alice}`}, true, 413, -32000],
];

for (const [label, head, chunked, status, code] of cases) {
  test(`${label}: the client reads the ${status} JSON-RPC error instead of a reset, and the service answers the next request`, async () => {
    const runs = env.backend.runs;
    const exchange = await sendHuge(head, chunked);
    const response = firstResponse(exchange.received);
    assert.equal(response.status, status, `write error: ${exchange.writeError}`);
    assert.match(response.headers, /connection: close/i);
    const error = JSON.parse(response.body) as {jsonrpc: string; id: unknown; error: {code: number; message: string}};
    assert.equal(error.jsonrpc, '2.0');
    assert.equal(error.id, null);
    assert.equal(error.error.code, code);
    assert.match(error.error.message, new RegExp(`Payload Too Large.*${DEFAULT_MAX_BODY_BYTES}`));
    assert.equal(env.backend.runs, runs, 'no tool ran');
    await callWorks();
  });
}

test('refusals before the body is read (no credentials: 401; wrong content type: 415; no such route: 404) are readable too', async () => {
  const anonymous = firstResponse((await sendHuge({}, false)).received);
  assert.equal(anonymous.status, 401);
  assert.equal((JSON.parse(anonymous.body) as {error: string}).error, 'invalid_token');
  const wrongType = firstResponse((await sendHuge({Authorization: `Bearer ${KEYS.alice}`, 'Content-Type': 'text/plain'}, true)).received);
  assert.equal(wrongType.status, 415);
  assert.equal((JSON.parse(wrongType.body) as {error: {code: number}}).error.code, -32000);
  const notFound = firstResponse((await sendHuge({}, false, {path: '/no-such-route'})).received);
  assert.equal(notFound.status, 404, 'a route that never reads a body answers readably too');
  await callWorks();
});

test('a client that trickles a body for longer than the linger bound gets the 413, and then the server closes the connection', async () => {
  const started = Date.now();
  // 64 KiB every 100 ms: 1 GiB would take half an hour; the server must not wait for it.
  const exchange = await sendHuge({Authorization: `Bearer ${KEYS.alice}`}, false, {bytes: 1024 * 1024 * 1024, pauseMs: 100});
  const elapsed = Date.now() - started;
  assert.equal(firstResponse(exchange.received).status, 413);
  assert.ok(exchange.sent < 1024 * 1024 * 1024, 'the server closed the connection before the body ended');
  assert.ok(elapsed < 50_000, `closed by the server's bound, not the test's (${elapsed} ms)`);
  await callWorks();
});

test('a call pipelined on the same connection behind a refused (413) body is never run, and the service answers the next connection', async () => {
  const runs = env.backend.runs;
  const c = modernCall('fixture__double', {x: 5}, 'pipelined');
  const second = JSON.stringify(c.body);
  const big = 2 * 1024 * 1024;
  const received = await new Promise<string>((resolve) => {
    const socket = connect({host: '127.0.0.1', port: service.port});
    let text = '';
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(finish, 20_000);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (text += d));
    socket.on('error', finish);
    socket.on('close', finish);
    const auth = `Authorization: Bearer ${KEYS.alice}\r\nHost: 127.0.0.1:${service.port}\r\nContent-Type: application/json\r\n`;
    socket.write(`POST /mcp HTTP/1.1\r\n${auth}Content-Length: ${big}\r\n\r\n`);
    socket.write(Buffer.alloc(big, 0x20));
    socket.write(`POST /mcp HTTP/1.1\r\n${auth}Accept: application/json, text/event-stream\r\n${Object.entries(c.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n`
      + `Content-Length: ${Buffer.byteLength(second)}\r\n\r\n${second}`);
  });
  assert.equal(firstResponse(received).status, 413);
  assert.equal((received.match(/^HTTP\/1\.1 /gm) ?? []).length, 1, `one answer only: ${received.slice(0, 600)}`);
  assert.doesNotMatch(received, /pipelined/, 'the pipelined call was not answered');
  assert.equal(env.backend.runs, runs, 'the pipelined call never ran');
  await callWorks();
});
