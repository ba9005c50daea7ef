// A container tool (python from toolcell/python) with an egress grant and a secret, called through
// `toolcell serve`: a local HTTPS test API that checks the real credential answers, the tool's own
// output shows only the placeholder, the placeholder sent to another allowed host is refused
// (DENIED rule secret) and audited, an allowed HTTPS host without a secret is tunnelled untouched
// (the tool sees that server's own certificate), a secret host whose certificate does not verify
// gets no request, and the CA key is nowhere in the container.
// Only servers this test starts on 127.0.0.1 are contacted.
// invariant: egress:secret:placeholder-only-to-its-hosts
// invariant: egress:secret:never-in-output
// invariant: egress:ca:key-private
// invariant: egress:tls:upstream-verified
import assert from 'node:assert/strict';
import {createHash, X509Certificate} from 'node:crypto';
import {chmod, readFile, writeFile} from 'node:fs/promises';
import {createServer as createHttpServer} from 'node:http';
import {createServer as createHttpsServer} from 'node:https';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {EgressCa} from '../../src/egress/ca.ts';
import {dockerAvailable} from '../support/docker.ts';
import {credentialApi, loopbackServers, publicCaFor127} from '../support/egress.ts';
import {connectStdio, textOf} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

const ready = await dockerAvailable({images: ['toolcell/python']}) && process.getuid?.() === 0;
const VALUE = 'tc-container-credential-9f8e7d6c5b4a';

/** The tool: `api URL` calls the API with the placeholder; `leak URL` sends it to URL in the clear; `tunnel HOST:PORT` prints the peer certificate's SHA-256; `ca` lists what is mounted for TLS. */
const SCRIPT = [
  'import hashlib, http.client, os, ssl, sys, urllib.request, urllib.error',
  'mode, arg = sys.argv[1], sys.argv[2]',
  'token = os.environ.get("API", "")',
  'if mode == "api":',
  '    req = urllib.request.Request(arg + "/user", headers={"Authorization": "Bearer " + token})',
  '    print("token", token)',
  '    print("answer", urllib.request.urlopen(req, timeout=15).read().decode())',
  'elif mode == "leak":',
  '    try:',
  '        urllib.request.urlopen(arg + "/?t=" + token, timeout=15)',
  '        print("sent")',
  '    except urllib.error.HTTPError as e:',
  '        print("refused", e.code, e.read().decode())',
  'elif mode == "tunnel":',
  '    host, port = arg.split(":")',
  '    c = http.client.HTTPSConnection("127.0.0.1", 3128, timeout=15, context=ssl._create_unverified_context())',
  '    c.set_tunnel(host, int(port))',
  '    c.request("GET", "/")',
  '    body = c.getresponse().read().decode()',
  '    print("peer", hashlib.sha256(c.sock.getpeercert(True)).hexdigest(), body)',
  'else:',
  '    d = "/etc/toolcell/egress"',
  '    print("files", sorted(os.listdir(d)))',
  '    print("env", os.environ.get("SSL_CERT_FILE"), os.environ.get("NODE_EXTRA_CA_CERTS"))',
  '    hits = []',
  '    for root in ["/etc", "/tmp", "/var", "/root", "/home", "/opt"]:',
  '        for dp, dn, fn in os.walk(root):',
  '            for f in fn:',
  '                try:',
  '                    if b"PRIVATE KEY" in open(os.path.join(dp, f), "rb").read(1 << 20): hits.append(os.path.join(dp, f))',
  '                except Exception: pass',
  '    print("keys", hits)',
].join('\n');

describe('secrets for a container tool through toolcell serve', {skip: !ready && 'no Docker engine, no toolcell/python, or not root'}, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: Awaited<ReturnType<typeof connectStdio>> | undefined;
  const {listen, close: closeListeners} = loopbackServers();
  let apiPort = 0;
  let otherPort = 0;
  let tlsPort = 0;
  let tlsFingerprint = '';
  let roguePort = 0;
  const rogueSeen: string[] = [];
  const apiSeen: string[] = [];
  const otherSeen: string[] = [];

  before(async () => {
    dir = await tempDir();
    // The test's "public" CA: what --upstream-ca trusts, and the issuer of both HTTPS test servers.
    const {publicCa, leaf} = await publicCaFor127(dir);
    apiPort = await listen(credentialApi(leaf, VALUE, apiSeen));
    otherPort = await listen(createHttpServer((req, res) => { otherSeen.push(req.url ?? ''); res.end('other'); }));
    tlsPort = await listen(createHttpsServer({cert: leaf.cert, key: leaf.key}, (_req, res) => res.end('plain-tls')));
    // A secret host whose certificate comes from a CA nobody trusts (an impostor): it must get no request.
    const rogueCa = await EgressCa.open(join(dir.path, 'rogue-ca'));
    const rogueLeaf = await rogueCa.leaf('127.0.0.1');
    roguePort = await listen(createHttpsServer({cert: rogueLeaf.cert, key: rogueLeaf.key}, (req, res) => { rogueSeen.push(String(req.headers.authorization)); res.end('rogue'); }));
    tlsFingerprint = createHash('sha256').update(new X509Certificate(leaf.cert).raw).digest('hex');
    await writeFile(join(dir.path, 'upstream-ca.pem'), publicCa.certPem);
    const limits = {timeoutMs: 30_000, memoryMb: 128, cpus: 0.5, pids: 32, outputBytes: 65_536};
    await dir.write('profiles/api-container.json', {name: 'api-container', backend: 'container', limits, commands: ['python3'],
      filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}},
      network: {egress: {allow: [`127.0.0.1:${apiPort}`, `127.0.0.1:${otherPort}`, `127.0.0.1:${tlsPort}`, `127.0.0.1:${roguePort}`], maxRequests: 5}},
      secrets: ['API']});
    await dir.write('tools/apic/toolcell.json', {name: 'apic', version: '1.0.0', description: 'container secrets test', tools: [{
      name: 'run', description: 'Runs one mode of the test script.', profile: 'api-container',
      inputSchema: {type: 'object', properties: {mode: {type: 'string'}, arg: {type: 'string'}}, required: ['mode', 'arg'], additionalProperties: false},
      container: {image: 'toolcell/python', command: ['python3', '-c', SCRIPT, '{{mode}}', '{{arg}}']},
    }]});
    await dir.write('secrets.json', {API: {env: 'TC_CONTAINER_API_TOKEN', hosts: [`127.0.0.1:${apiPort}`, `127.0.0.1:${roguePort}`], header: 'Authorization', format: 'Bearer {}'}});
    await chmod(join(dir.path, 'secrets.json'), 0o600);
    server = await connectStdio(['--no-bundled-tools', '--tools', join(dir.path, 'tools'), '--profiles', join(dir.path, 'profiles'),
      '--secrets', join(dir.path, 'secrets.json'), '--upstream-ca', join(dir.path, 'upstream-ca.pem'), '--audit-log', join(dir.path, 'audit.jsonl')],
    {env: {TC_CONTAINER_API_TOKEN: VALUE, TOOLCELL_STATE_DIR: join(dir.path, 'state'), TOOLCELL_LOG_LEVEL: 'debug'}});
  });
  after(async () => {
    await server?.close();
    closeListeners();
    await dir?.dispose();
  });

  test('the API gets the real credential, the tool sees the placeholder; elsewhere it is refused and audited; other HTTPS is tunnelled; no CA key inside', async () => {
    const call = (mode: string, arg: string) => server!.client.callTool({name: 'apic__run', arguments: {mode, arg}});
    const ok = await call('api', `https://127.0.0.1:${apiPort}`);
    assert.equal(ok.isError, undefined, textOf(ok));
    const text = textOf(ok);
    const token = /token (\S+)/.exec(text)?.[1] ?? '';
    assert.match(token, /^toolcell-secret-API-[A-Za-z0-9_-]{43}$/, text);
    assert.match(text, /"login": ?"octocat"/, 'the API saw the real credential');
    assert.ok(text.includes(`"echo": "Bearer ${token}"`) || text.includes(`"echo":"Bearer ${token}"`), `the echo came back as the placeholder: ${text}`);
    assert.equal(apiSeen.at(-1), `Bearer ${VALUE}`);

    const leak = await call('leak', `http://127.0.0.1:${otherPort}`);
    assert.match(textOf(leak), /refused 403 .*placeholder of secret "API"/, textOf(leak));
    assert.deepEqual(otherSeen, [], 'the other host got nothing');

    const tunnel = await call('tunnel', `127.0.0.1:${tlsPort}`);
    assert.equal(tunnel.isError, undefined, textOf(tunnel));
    assert.equal(textOf(tunnel).trim(), `peer ${tlsFingerprint} plain-tls`, 'a host without a secret is tunnelled: the tool sees the server\'s own certificate');

    const rogue = await call('api', `https://127.0.0.1:${roguePort}`);
    assert.equal(rogue.isError, true, textOf(rogue));
    assert.match(textOf(rogue), /502/, textOf(rogue));
    assert.deepEqual(rogueSeen, [], 'an upstream whose certificate does not verify gets no request and no credential');

    const ca = await call('ca', '-');
    assert.equal(ca.isError, undefined, textOf(ca));
    assert.match(textOf(ca), /files \['ca-bundle\.crt', 'ca\.crt'\]/);
    assert.match(textOf(ca), /env \/etc\/toolcell\/egress\/ca-bundle\.crt \/etc\/toolcell\/egress\/ca\.crt/);
    assert.match(textOf(ca), /keys \[\]/, 'no private key is readable anywhere the tool looked');

    const audit = await readFile(join(dir.path, 'audit.jsonl'), 'utf8');
    const events = audit.trim().split('\n').map((l) => JSON.parse(l) as {type: string; rule?: string; secrets?: string[]; host?: string; port?: number});
    assert.ok(events.some((e) => e.type === 'egress.allowed' && e.secrets?.[0] === 'API' && e.port === apiPort), audit);
    assert.ok(events.some((e) => e.type === 'egress.denied' && e.rule === 'secret' && e.secrets?.[0] === 'API' && e.port === otherPort), audit);
    assert.ok(events.some((e) => e.type === 'egress.denied' && e.rule === 'upstream-tls' && e.port === roguePort), audit);
    assert.ok(events.some((e) => e.type === 'egress.allowed' && e.port === tlsPort && e.secrets === undefined), audit);
    for (const [where, textOut] of [['results', JSON.stringify([ok, leak, tunnel, rogue, ca])], ['log', server!.stderr()], ['audit', audit]] as const) {
      assert.ok(!textOut.includes(VALUE), `the secret value appears in the ${where}`);
    }
    // The server still answers after the attacks.
    assert.ok((await server!.client.listTools()).tools.some((t) => t.name === 'apic__run'));
  });
});
