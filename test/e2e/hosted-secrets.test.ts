// A hosted MCP server (test/fixtures/api-server: calls an API with the credential in its API_TOKEN
// environment variable, through Node's fetch) whose profile grants egress and a secret, served by
// `toolcell serve` to a real MCP client: a local HTTPS test API that checks the real credential
// answers, the server holds only a per-call placeholder (a fresh one per call) and the egress CA trust;
// the placeholder sent to another allowlisted host is refused and audited; a value the server
// reassembles (the API sends it base64-encoded) is replaced by the placeholder in the result, its
// error text and its relayed progress and log notifications, and by [secret] in the server's log; the
// real value is in no result, notification, log line or audit event. A server kept per principal
// with a secrets profile is left out with the reason. Only servers this test starts on 127.0.0.1 are contacted.
// invariant: egress:hosted:secrets-per-call
// invariant: egress:secret:scrubbed-from-output
// invariant: egress:secret:placeholder-only-to-its-hosts
// invariant: egress:secret:never-in-output
import assert from 'node:assert/strict';
import {chmod, readFile, writeFile} from 'node:fs/promises';
import {createServer as createHttpServer} from 'node:http';
import {join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {after, before, describe, test} from 'node:test';
import {probeServer} from '../../src/backends/server/probe-server.ts';
import {createRuntime} from '../../src/runtime.ts';
import {dockerAvailable, managedContainers} from '../support/docker.ts';
import {toolPins, useTestImage} from '../support/fixture-server.ts';
import {credentialApi, loopbackServers, publicCaFor127} from '../support/egress.ts';
import {connectStdio, textOf} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

const ready = await dockerAvailable({images: ['toolcell/node']}) && process.getuid?.() === 0;
const VALUE = 'tc-hosted-credential-5e4d3c2b1a09';
const PROFILE_NAME = `e2e-hosted-secrets-${process.pid}`;
const PLACEHOLDER = /toolcell-secret-API_TOKEN-[A-Za-z0-9_-]{43}/;
const CALL_MS = 90_000;

/** Polls `check` until it holds or `ms` passed (then fails naming `what`). */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > end) assert.fail(`${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('secrets for a hosted MCP server through toolcell serve', {skip: !ready && 'no Docker engine or toolcell/node, or not root (the egress relay needs setns)'}, () => {
  const image = useTestImage('api-server', fileURLToPath(new URL('../fixtures/api-server/', import.meta.url)), ['Dockerfile', 'api-server.mjs']);
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: Awaited<ReturnType<typeof connectStdio>> | undefined;
  const {listen, close: closeListeners} = loopbackServers();
  let apiPort = 0;
  let otherPort = 0;
  const apiSeen: string[] = [];
  const otherSeen: string[] = [];
  const notifications: string[] = [];

  before(async () => {
    dir = await tempDir();
    // The test's "public" CA: what --upstream-ca trusts, and the issuer of the HTTPS test API.
    const {publicCa, leaf} = await publicCaFor127(dir);
    // /encoded hands the credential back base64-encoded: the proxy's response scrubbing cannot see it.
    apiPort = await listen(credentialApi(leaf, VALUE, apiSeen, (req, ok) => (req.url === '/encoded'
      ? {b64: ok ? Buffer.from(VALUE).toString('base64') : ''}
      : {login: ok ? 'octocat' : null, echo: req.headers.authorization})));
    otherPort = await listen(createHttpServer((req, res) => { otherSeen.push(req.url ?? ''); res.end('other'); }));
    await writeFile(join(dir.path, 'upstream-ca.pem'), publicCa.certPem);
    const profile = {name: PROFILE_NAME, backend: 'container', limits: {timeoutMs: 30_000, memoryMb: 192, cpus: 0.5, pids: 48, outputBytes: 1_048_576},
      network: {egress: {allow: [`127.0.0.1:${apiPort}`, `127.0.0.1:${otherPort}`], maxRequests: 8}},
      secrets: ['API_TOKEN'], filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: []}, commands: ['node'], runtime: 'runc'};
    await dir.write(`profiles/${PROFILE_NAME}.json`, profile);
    // The listing to pin, as `toolcell add` would take it (the probe needs no network: the server lists without any).
    const {secrets: _secrets, ...offline} = {...profile, network: 'none'};
    const probed = await probeServer({image: image.tag, command: ['/usr/local/bin/node', '/srv/api-server.mjs'], profile: offline as never, handshakeTimeoutMs: 30_000});
    const tools = toolPins(probed.tools);
    const start = {source: 'dir:test/fixtures/api-server', image: image.tag, imageId: probed.imageId, command: ['node', '/srv/api-server.mjs'], transport: 'stdio'};
    await dir.write('tools/apis/toolcell.json', {name: 'apis', version: '1.0.0', server: start, profile: PROFILE_NAME, tools});
    await dir.write('tools/kept/toolcell.json', {name: 'kept', version: '1.0.0', server: {...start, lifetime: 'principal', idleMs: 5_000}, profile: PROFILE_NAME, tools});
    await dir.write('secrets.json', {API_TOKEN: {env: 'TC_HOSTED_API_TOKEN', hosts: [`127.0.0.1:${apiPort}`], header: 'Authorization', format: 'Bearer {}'}});
    await chmod(join(dir.path, 'secrets.json'), 0o600);
    server = await connectStdio(['--no-bundled-tools', '--tools', join(dir.path, 'tools'), '--profiles', join(dir.path, 'profiles'),
      '--secrets', join(dir.path, 'secrets.json'), '--upstream-ca', join(dir.path, 'upstream-ca.pem'), '--audit-log', join(dir.path, 'audit.jsonl')],
    {env: {TC_HOSTED_API_TOKEN: VALUE, TOOLCELL_STATE_DIR: join(dir.path, 'state'), TOOLCELL_LOG_LEVEL: 'debug'}});
    server.client.setNotificationHandler('notifications/message', (n) => { notifications.push(JSON.stringify(n.params)); });
  }, {timeout: 240_000});
  after(async () => {
    await server?.close();
    closeListeners();
    await dir?.dispose();
  });

  const call = (tool: string, args: Record<string, unknown>, onprogress?: (p: {message?: string}) => void) =>
    server!.client.callTool({name: `apis__${tool}`, arguments: args}, {timeout: CALL_MS, ...(onprogress ? {onprogress} : {})});

  test('the API gets the real credential, the server holds a per-call placeholder; elsewhere it is refused and audited; nothing reveals the value', {timeout: 10 * CALL_MS}, async () => {
    const listed = (await server!.client.listTools()).tools.map((t) => t.name);
    assert.ok(listed.includes('apis__user'), `${JSON.stringify(listed)}\n${server!.stderr().slice(-3000)}`);
    assert.ok(!listed.some((t) => t.startsWith('kept__')), 'a server kept per principal does not receive secrets: left out');
    assert.match(server!.stderr(), /"tool":"kept__user","msg":"tool left out: its profile .{0,80} grants secrets, and the server is kept per principal/);

    const env = JSON.parse(textOf(await call('env', {}))) as Record<string, [string | null, boolean]>;
    assert.deepEqual(env, {SSL_CERT_FILE: ['/etc/toolcell/egress/ca-bundle.crt', true], REQUESTS_CA_BUNDLE: ['/etc/toolcell/egress/ca-bundle.crt', true],
      NODE_EXTRA_CA_CERTS: ['/etc/toolcell/egress/ca.crt', true]}, 'the egress CA trust, as a container tool gets it');

    const first = await call('user', {url: `https://127.0.0.1:${apiPort}`});
    const text = textOf(first);
    assert.equal(first.isError, undefined, text);
    const token = /^token (\S+)$/m.exec(text)?.[1] ?? '';
    assert.match(token, new RegExp(`^${PLACEHOLDER.source}$`), text);
    assert.match(text, /^status 200$/m, 'the API saw the real credential');
    assert.ok(text.includes(`"login":"octocat"`) && text.includes(`"echo":"Bearer ${token}"`), `the API's echo came back as the placeholder: ${text}`);
    assert.equal(apiSeen.at(-1), `Bearer ${VALUE}`);
    const again = textOf(await call('user', {url: `https://127.0.0.1:${apiPort}`}));
    const token2 = /^token (\S+)$/m.exec(again)?.[1] ?? '';
    assert.match(again, /^status 200$/m, again);
    assert.match(token2, PLACEHOLDER);
    assert.notEqual(token2, token, 'each call\'s server has its own placeholder');

    const leak = await call('leak', {url: `http://127.0.0.1:${otherPort}`});
    // Node's fetch sends http:// through a CONNECT tunnel too: the proxy finds the placeholder in the tunnel's bytes and ends it
    // (a forward-proxy request would get a 403 naming the secret instead).
    assert.match(textOf(leak), /^fetch failed: |^status 403 .*placeholder of secret "API_TOKEN"/, textOf(leak));
    assert.deepEqual(otherSeen, [], 'the other allowlisted host got nothing');

    const progress: string[] = [];
    const revealed = await call('reveal', {url: `https://127.0.0.1:${apiPort}`}, (p) => { progress.push(String(p.message)); });
    assert.equal(revealed.isError, undefined, textOf(revealed));
    assert.match(textOf(revealed), new RegExp(`^revealed ${PLACEHOLDER.source}$`), 'the value the server decoded reaches the client as the placeholder');
    assert.match(String((revealed.structuredContent as {revealed?: string} | undefined)?.revealed), PLACEHOLDER);
    assert.ok(progress.some((m) => PLACEHOLDER.test(m)), `the relayed progress message: ${JSON.stringify(progress)}`);
    await until(async () => notifications.some((n) => n.includes('revealed')), 10_000, 'the relayed log notification');
    assert.ok(notifications.some((n) => n.includes('revealed') && PLACEHOLDER.test(n)), JSON.stringify(notifications));
    const failed = await call('reveal', {url: `https://127.0.0.1:${apiPort}`, error: true});
    assert.equal(failed.isError, true, textOf(failed));
    assert.match(textOf(failed), /revealed/, textOf(failed));

    const audit = await readFile(join(dir.path, 'audit.jsonl'), 'utf8');
    const events = audit.trim().split('\n').map((l) => JSON.parse(l) as {type: string; rule?: string; secrets?: string[]; port?: number; tool?: string});
    assert.ok(events.some((e) => e.type === 'egress.allowed' && e.secrets?.[0] === 'API_TOKEN' && e.port === apiPort && e.tool === 'apis__user'), audit);
    assert.ok(events.some((e) => e.type === 'egress.denied' && e.rule === 'secret' && e.secrets?.[0] === 'API_TOKEN' && e.port === otherPort && e.tool === 'apis__leak'), audit);
    const log = server!.stderr();
    assert.match(log, /revealed \[secret\]/, 'the server\'s stderr reached the log, the value replaced');
    for (const [where, out] of [['results', JSON.stringify([first, again, leak, revealed, failed])], ['notifications', JSON.stringify([notifications, progress])],
      ['log', log], ['audit', audit]] as const) {
      assert.ok(!out.includes(VALUE), `the secret value appears in the ${where}`);
    }
    // The value straddling the cut of a progress message (1024) and of log data (8 KiB) was scrubbed before the cut: no prefix of it arrives.
    await until(async () => notifications.some((n) => n.includes('straddle')), 10_000, 'the relayed straddling log notification');
    assert.ok(progress.some((m) => m.startsWith('pppp')), JSON.stringify(progress.map((m) => m.slice(-40))));
    for (const out of [...progress, ...notifications]) assert.ok(!out.includes(VALUE.slice(0, 12)), `a prefix of the value was relayed: …${out.slice(-60)}`);
    // The server still answers after the attacks, and each call's container is gone.
    assert.match(textOf(await call('user', {url: `https://127.0.0.1:${apiPort}`})), /^status 200$/m);
    await until(async () => (await managedContainers(`toolcell.profile=${PROFILE_NAME}`)).length === 0, 30_000, 'a container of this test is left');
  });

  test('without --secrets the server\'s tools are left out on purpose (skipped), naming the flag', async () => {
    const runtime = await createRuntime({toolDirs: [join(dir.path, 'tools')], profileDirs: [join(dir.path, 'profiles')], audit: 'off', containerPool: 0, logProblems: false});
    try {
      assert.equal([...runtime.tools.keys()].filter((t) => t.startsWith('apis__')).length, 0);
      const left = runtime.unavailable.filter((u) => u.tool.startsWith('apis__'));
      assert.equal(left.length, 4, JSON.stringify(runtime.unavailable));
      for (const u of left) {
        assert.equal(u.skipped, true, JSON.stringify(u));
        assert.match(u.reason, /grants secrets \(API_TOKEN\), and serve was started without --secrets FILE/);
      }
    } finally {
      await runtime.close();
    }
  });
});
