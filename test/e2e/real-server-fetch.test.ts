// The real `@tokenizin/mcp-npx-fetch` from npm (its fetch tools call Node 24's global fetch, which honours
// HTTP(S)_PROXY with NODE_USE_ENV_PROXY=1), added with `toolcell add` under a profile granting one loopback
// test upstream: through `toolcell serve`, a real MCP client fetches the upstream's page; an unlisted host
// and an ungranted loopback address are refused by the proxy (403, egress.denied audited); the same server
// added without a grant reaches nothing. The only "internet" is the upstream this test starts on loopback.
// invariant: egress:hosted:only-the-proxy
// invariant: egress:hosted:no-grant-no-network
// invariant: egress:hosted:per-call-session
import assert from 'node:assert/strict';
import {once} from 'node:events';
import {readFile} from 'node:fs/promises';
import {createServer, type Server} from 'node:http';
import type {AddressInfo} from 'node:net';
import {after, before, describe, test} from 'node:test';
import {connectStdio, textOf} from '../support/mcp-stdio.ts';
import {addNpmServer, ADD_TIMEOUT_MS, editServer, realServerSkip, type RealServer} from '../support/real-server.ts';

const SPEC = '@tokenizin/mcp-npx-fetch@1.0.0';
const root = process.getuid?.() === 0;
const skip = !root ? 'not root: the egress relay needs setns' : await realServerSkip(SPEC);
const CALL_MS = 90_000;
/** What the upstream answers: a page only it serves. */
const PAGE = `<html><body><p>upstream page ${process.pid}</p></body></html>`;

/** Polls `check` until it holds or `ms` passed (then fails naming `what`). */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > end) assert.fail(`${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

type Session = Awaited<ReturnType<typeof connectStdio>>;
/**
 * Calls `tool` for `url`; a call whose server did not finish its MCP handshake in time (this server loads
 * jsdom at start: a busy shared host can push it past the 10 s handshake budget, before any egress) is
 * tried again, at most 3 times in all. Any other outcome is returned as it is.
 */
async function fetchCall(session: Session, tool: string, url: string) {
  for (let attempt = 1; ; attempt++) {
    const r = await session.client.callTool({name: tool, arguments: {url}}, {timeout: CALL_MS});
    if (attempt >= 3 || !/HandshakeTimeout/.test(textOf(r))) return r;
  }
}

describe('real fetch server from npm with an egress grant', {skip}, () => {
  const granted = `f${process.pid}-fetch`;
  const offline = `f${process.pid}-offline`;
  let upstream: Server | undefined;
  let decoy: Server | undefined;
  let port = 0;
  let hits = 0;
  let decoyHits = 0;
  let net: RealServer | undefined;
  let none: RealServer | undefined;

  before(async () => {
    upstream = createServer((_req, res) => {
      hits++;
      res.setHeader('content-type', 'text/html');
      res.end(PAGE);
    }).listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    port = (upstream.address() as AddressInfo).port;
    // The same port on 127.0.0.2 answers too: a refusal there is the proxy's, not an empty port.
    decoy = createServer((_req, res) => { decoyHits++; res.end('decoy'); }).listen(port, '127.0.0.2');
    await once(decoy, 'listening');
    net = await addNpmServer({spec: SPEC, name: granted, network: {egress: {allow: [`127.0.0.1:${port}`], maxRequests: 8}}});
    none = await addNpmServer({spec: SPEC, name: offline});
  }, {timeout: 2 * ADD_TIMEOUT_MS + 60_000});
  after(async () => {
    await net?.dispose();
    await none?.dispose();
    upstream?.close();
    decoy?.close();
  });

  test('through the grant: the upstream\'s page; an unlisted host and 127.0.0.2 refused by the proxy (403, audited); without a grant nothing', {timeout: 8 * CALL_MS}, async () => {
    const audit = `${net!.toolsDir}/../audit.jsonl`;
    const session = await connectStdio(['--tools', net!.toolsDir, '--tools', none!.toolsDir, '--profiles', net!.profilesDir, '--profiles', none!.profilesDir,
      '--no-bundled-tools', '--audit-log', audit]);
    try {
      const fetched = await fetchCall(session, `${granted}__fetch_html`, `http://127.0.0.1:${port}/page`);
      assert.equal(fetched.isError ?? false, false, `the granted upstream answers: ${JSON.stringify(fetched).slice(0, 1000)}`);
      assert.equal(textOf(fetched), PAGE);
      assert.equal(hits, 1);

      const unlisted = await fetchCall(session, `${granted}__fetch_html`, `http://unlisted.test:${port}/`);
      assert.equal(unlisted.isError, true, JSON.stringify(unlisted).slice(0, 1000));
      // Node's fetch tunnels through the proxy (CONNECT): the proxy's 403 ends the request, the server reports it failed.
      assert.match(textOf(unlisted), /^Failed to fetch http:\/\/unlisted\.test:\d+\/: (HTTP error: 403|fetch failed)$/, 'the server reports the proxy\'s refusal');
      const otherIp = await fetchCall(session, `${granted}__fetch_html`, `http://127.0.0.2:${port}/`);
      assert.equal(otherIp.isError, true, JSON.stringify(otherIp).slice(0, 1000));
      assert.match(textOf(otherIp), /^Failed to fetch http:\/\/127\.0\.0\.2:\d+\/: (HTTP error: 403|fetch failed)$/);
      assert.equal(decoyHits, 0, 'nothing reached the ungranted address');
      assert.equal(hits, 1, 'nothing else reached the upstream');

      // The same server without a grant: no proxy variables, no route; the granted upstream is not reached.
      const offlineFetch = await fetchCall(session, `${offline}__fetch_html`, `http://127.0.0.1:${port}/page`);
      assert.equal(offlineFetch.isError, true, JSON.stringify(offlineFetch).slice(0, 1000));
      assert.doesNotMatch(textOf(offlineFetch), /upstream page/);
      assert.equal(hits, 1, 'a server without a grant reached nothing');

      // The server still serves after the refusals.
      const again = await fetchCall(session, `${granted}__fetch_html`, `http://127.0.0.1:${port}/again`);
      assert.equal(textOf(again), PAGE);

      const events = (await readFile(audit, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const egress = events.filter((e) => String(e.type).startsWith('egress.'));
      assert.ok(egress.some((e) => e.type === 'egress.allowed' && e.port === port && e.tool === `${granted}__fetch_html`), JSON.stringify(egress));
      assert.ok(egress.some((e) => e.type === 'egress.denied' && e.host === 'unlisted.test' && e.rule === 'allowlist'), JSON.stringify(egress));
      assert.ok(egress.some((e) => e.type === 'egress.denied' && e.host === '127.0.0.2' && e.rule === 'allowlist'), JSON.stringify(egress));
      assert.ok(egress.every((e) => e.tool === `${granted}__fetch_html` && e.principal === 'local'), 'the offline server made no egress decision at all');
    } finally {
      await session.close();
    }
    await until(async () => (await net!.containers()).length === 0 && (await none!.containers()).length === 0, 30_000, 'a container of this test is left');
  });

  test('lifetime "principal": one kept server, but each call\'s egress is its own session (audited under that call\'s id)', {timeout: 6 * CALL_MS}, async () => {
    editServer(net!, {lifetime: 'principal', idleMs: 60_000});
    const audit = `${net!.toolsDir}/../audit-principal.jsonl`;
    const session = await connectStdio(['--tools', net!.toolsDir, '--profiles', net!.profilesDir, '--no-bundled-tools', '--audit-log', audit]);
    try {
      for (const path of ['/one', '/two']) {
        const r = await fetchCall(session, `${granted}__fetch_html`, `http://127.0.0.1:${port}${path}`);
        assert.equal(textOf(r), PAGE, JSON.stringify(r).slice(0, 1000));
      }
      assert.equal((await net!.containers()).length, 1, 'one kept server served both calls');
      const events = (await readFile(audit, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const allowed = events.filter((e) => e.type === 'egress.allowed');
      const calls = events.filter((e) => e.type !== 'egress.allowed' && e.type !== 'egress.denied' && e.tool === `${granted}__fetch_html`).map((e) => e.jobId);
      assert.equal(allowed.length, 2, JSON.stringify(events));
      assert.notEqual(allowed[0]!.jobId, allowed[1]!.jobId, 'each call\'s egress is attributed to that call');
      for (const e of allowed) assert.ok(calls.includes(e.jobId), `egress event ${String(e.jobId)} belongs to a call of this server: ${JSON.stringify(calls)}`);
    } finally {
      await session.close();
    }
    await until(async () => (await net!.containers()).length === 0, 30_000, 'the kept server is removed at shutdown');
  });
});
