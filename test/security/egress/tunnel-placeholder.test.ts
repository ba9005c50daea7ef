// Hazard: a call with a secret sends its placeholder to an allowed host that is not the secret's, in
// plaintext through a CONNECT tunnel (what Node's fetch does for http:// behind HTTP(S)_PROXY): the
// tunnel is opaque to header checks, so the placeholder must be found in its bytes, even split across
// chunks; the upstream never receives it whole, the refusal is audited (rule secret), and the proxy
// keeps answering. A tunnel without a placeholder is relayed untouched. Loopback servers only.
// invariant: egress:secret:placeholder-only-to-its-hosts
import assert from 'node:assert/strict';
import {once} from 'node:events';
import {chmod} from 'node:fs/promises';
import {connect, createServer, type AddressInfo, type Server, type Socket} from 'node:net';
import {after, before, test} from 'node:test';
import type {AuditEgressV2} from '../../../src/audit/audit-event.ts';
import {parseEgressGrant} from '../../../src/egress/policy.ts';
import {EgressProxy, type EgressSession} from '../../../src/egress/proxy.ts';
import {SecretStore} from '../../../src/egress/secrets.ts';
import {tempDir} from '../../support/temp.ts';

const VALUE = 'tc-tunnel-credential-1a2b3c4d5e6f';
let dir: Awaited<ReturnType<typeof tempDir>>;
let upstream: Server;
let port = 0;
let received = '';
const sockets = new Set<Socket>();
let store: SecretStore;

before(async () => {
  dir = await tempDir();
  // A plain TCP echo server: what it receives is recorded, and echoed back.
  upstream = createServer((s) => {
    sockets.add(s);
    s.on('data', (c: Buffer) => {
      received += c.toString('latin1');
      s.write(c);
    });
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  }).listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  port = (upstream.address() as AddressInfo).port;
  // The secret belongs to another port: this upstream is allowed, but not one of the secret's hosts.
  const file = await dir.write('secrets.json', {API: {env: 'TC_TUNNEL_API', hosts: [`127.0.0.1:${port + 1 > 65535 ? port - 1 : port + 1}`], header: 'Authorization'}});
  await chmod(file, 0o600);
  store = await SecretStore.load(file, {TC_TUNNEL_API: VALUE});
});
after(async () => {
  for (const s of sockets) s.destroy();
  upstream?.close();
  await dir?.dispose();
});

/** Opens a CONNECT tunnel to the upstream through `session`; resolves the socket once the proxy answered 200. */
async function tunnel(session: EgressSession): Promise<Socket> {
  const raw = connect(session.socketPath);
  raw.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  const reply = await new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error('no CONNECT reply')), 10_000);
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.includes('\r\n\r\n')) {
        clearTimeout(timer);
        raw.off('data', onData);
        resolve(text);
      }
    };
    raw.on('data', onData);
    raw.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
  assert.match(reply, /^HTTP\/1\.1 200/, reply);
  return raw;
}

/** Resolves when `socket` closes (at most `ms`, then rejects). */
function closed(socket: Socket, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error(`the tunnel was not closed within ${ms} ms`)), ms);
    socket.once('close', () => { clearTimeout(timer); resolve(); });
  });
}

test('a placeholder sent in plaintext through a tunnel to a host that is not the secret\'s ends the tunnel before it arrives whole, audited; other bytes pass untouched', async () => {
  const events: AuditEgressV2[] = [];
  const proxy = new EgressProxy({audit: (e) => events.push(e)});
  const secrets = store.forCall(['API']);
  const grant = parseEgressGrant({allow: [`127.0.0.1:${port}`], requestTimeoutMs: 5000});
  const session = await proxy.open({callId: 'call-t', principal: 'local', tool: 'srv__leak', profile: 'p', grant, secrets});
  const opened: Socket[] = [];
  try {
    // Clean bytes are relayed as they are (and echoed back).
    const clean = await tunnel(session);
    opened.push(clean);
    clean.write('GET /plain HTTP/1.1\r\nHost: x\r\n\r\n');
    let echoed = '';
    clean.on('data', (c: Buffer) => (echoed += c.toString('latin1')));
    const end = Date.now() + 10_000;
    while (!echoed.includes('/plain') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.match(echoed, /GET \/plain/);
    clean.destroy();

    // The placeholder, split across two writes (two chunks), in a plaintext request line.
    const ph = secrets.placeholders.API!;
    const leak = await tunnel(session);
    opened.push(leak);
    leak.on('error', () => undefined);
    const cut = Math.floor(ph.length / 2);
    leak.write(`GET /?t=${ph.slice(0, cut)}`);
    await new Promise((r) => setTimeout(r, 200));
    if (!leak.destroyed) leak.write(`${ph.slice(cut)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await closed(leak, 10_000);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!received.includes(ph), 'the upstream never received the whole placeholder');
    assert.ok(!received.includes(VALUE));
    const denied = events.find((e) => e.type === 'egress.denied' && e.rule === 'secret');
    assert.ok(denied, JSON.stringify(events));
    assert.deepEqual(denied.secrets, ['API']);
    assert.equal(denied.port, port);
    assert.ok(!JSON.stringify(events).includes(ph), 'the audit names the secret, never its placeholder');

    // The proxy still answers this call.
    const again = await tunnel(session);
    opened.push(again);
    again.destroy();
  } finally {
    for (const s of opened) s.destroy();
    secrets.close();
    await session.close();
  }
});
