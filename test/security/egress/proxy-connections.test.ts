// A flood of connections to one call's proxy socket, attacked for real: connections beyond the
// per-call cap are closed on accept, idle connections that never send a request are closed after
// min(30 s, requestTimeoutMs), and the proxy still answers. Loopback and a Unix socket only.
import assert from 'node:assert/strict';
import {createServer, type Server} from 'node:http';
import {connect, type AddressInfo, type Socket} from 'node:net';
import {after, before, test} from 'node:test';
import {parseEgressGrant} from '../../../src/egress/policy.ts';
import {EgressProxy, MAX_CALL_CONNECTIONS} from '../../../src/egress/proxy.ts';

let upstream: Server;
let port = 0;
const opened: Socket[] = [];

before(async () => {
  upstream = createServer((_req, res) => res.end('up'));
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  port = (upstream.address() as AddressInfo).port;
});
after(() => {
  for (const s of opened) s.destroy();
  upstream?.closeAllConnections();
  upstream?.close();
});

/** Opens a connection and resolves when it is connected; `closed` settles when the proxy closes it. */
function open(path: string): Promise<{socket: Socket; closed: Promise<number>}> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect(path);
    opened.push(socket);
    socket.on('data', () => {});
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now() - started)));
    socket.once('connect', () => resolve({socket, closed}));
    socket.once('error', () => {});
    setTimeout(() => reject(new Error('no connect')), 10_000).unref();
  });
}

function get(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(path, () => c.write(`GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`));
    opened.push(c);
    let out = '';
    c.on('data', (d: Buffer) => (out += d.toString('latin1')));
    c.on('close', () => resolve(out));
    c.on('error', reject);
    setTimeout(() => reject(new Error('no answer')), 15_000).unref();
  });
}

// invariant: egress:proxy:connections-bounded
test(`a call's proxy keeps at most ${MAX_CALL_CONNECTIONS} connections, closes idle ones after requestTimeoutMs, and still answers`, async () => {
  const proxy = new EgressProxy({lookup: async () => [{address: '127.0.0.1', family: 4}], audit: () => {}});
  const session = await proxy.open({callId: 'flood-1', principal: 'local', tool: 't', profile: 'p', grant: parseEgressGrant({allow: [`127.0.0.1:${port}`], requestTimeoutMs: 3000})});
  try {
    const conns = [];
    for (let i = 0; i < MAX_CALL_CONNECTIONS + 20; i++) conns.push(await open(session.socketPath));
    // The extra 20 are closed by the proxy at once; the first ones stay until the idle deadline.
    const closedAt = await Promise.all(conns.map((c) => Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 20_000).unref())])));
    assert.ok(closedAt.every((t) => t >= 0), 'every idle connection was closed (none left open for 20 s)');
    const early = closedAt.filter((t) => t < 2500).length;
    assert.ok(early >= 20, `${early} connections closed before the idle deadline (the ones over the cap)`);
    assert.match(await get(session.socketPath), /^HTTP\/1\.1 200[\s\S]*up$/, 'the proxy still answers');
  } finally {
    await session.close();
    await proxy.close();
  }
});

// invariant: egress:proxy:connections-bounded
test('a request whose DNS answer comes after the call ended opens no upstream connection', async () => {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  let asked = 0;
  const upstreamConnections: number[] = [];
  const onConnection = () => upstreamConnections.push(Date.now());
  upstream.on('connection', onConnection);
  const proxy = new EgressProxy({lookup: async () => {
    asked++;
    await gate;
    return [{address: '127.0.0.1', family: 4}];
  }, audit: () => {}});
  const session = await proxy.open({callId: 'late-1', principal: 'local', tool: 't', profile: 'p', grant: parseEgressGrant({allow: [`slow.toolcell.test:${port}`, `127.0.0.1:${port}`], requestTimeoutMs: 5000})});
  try {
    const forward = connect(session.socketPath, () => forward.write(`POST http://slow.toolcell.test:${port}/late HTTP/1.1\r\nHost: slow.toolcell.test:${port}\r\nContent-Length: 1\r\n\r\nx`));
    const tunnel = connect(session.socketPath, () => tunnel.write(`CONNECT slow.toolcell.test:${port} HTTP/1.1\r\nHost: slow.toolcell.test:${port}\r\n\r\n`));
    for (const c of [forward, tunnel]) {
      opened.push(c);
      c.on('error', () => {});
    }
    const deadline = Date.now() + 10_000;
    while (asked < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(asked, 2, 'both requests are waiting on the lookup');
    await session.close();
    release();
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(upstreamConnections, [], 'no connection reached the upstream after the call ended');
  } finally {
    release();
    upstream.off('connection', onConnection);
    await session.close();
    await proxy.close();
  }
});
