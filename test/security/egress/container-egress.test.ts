// A container with an egress grant reaches exactly the granted test servers through toolcell's
// proxy, and nothing else: no direct route, no DNS. The "internet" is servers this test starts on
// the host's loopback (and the docker0 address); nothing else is ever contacted.
// invariant: egress:container:only-the-proxy
// invariant: egress:container:no-dns
// invariant: egress:allowlist:enforced
// invariant: egress:limits:per-call
import assert from 'node:assert/strict';
import {once} from 'node:events';
import {createServer as createHttpServer, type Server} from 'node:http';
import {createServer as createTcpServer, type AddressInfo, type Server as TcpServer} from 'node:net';
import {networkInterfaces} from 'node:os';
import {after, before, describe, test} from 'node:test';
import type {AuditEgressV2} from '../../../src/audit/audit-event.ts';
import type {ContainerJob} from '../../../src/backends/backend.ts';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {parseEgressGrant, type EgressGrant} from '../../../src/egress/policy.ts';
import {EgressProxy} from '../../../src/egress/proxy.ts';
import {assertHealthy, dockerAvailable, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']}) && process.getuid?.() === 0;

const PROBE = `
import json, os, socket, sys, urllib.request, urllib.error
out = {"env": {k: os.environ.get(k) for k in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "NO_PROXY", "NODE_USE_ENV_PROXY"]}}
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode()]
    except Exception as e:
        return ["error", type(e).__name__]
def direct(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect((host, int(port))); return "connected"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
def tunnel(target, payload):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(("CONNECT %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (target, target)).encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        chunk = s.recv(4096)
        if not chunk: break
        head += chunk
    status = head.split(b" ")[1].decode() if head else "none"
    echo = ""
    if status == "200":
        s.sendall(payload.encode()); echo = s.recv(4096).decode()
    s.close()
    return [status, echo]
def dns(name):
    try:
        socket.getaddrinfo(name, 80); return "resolved"
    except OSError as e:
        return type(e).__name__
a = sys.argv[1:]
http_port, echo_port, gw, gw_port = a[0], a[1], a[2], a[3]
out["allowed"] = get("http://127.0.0.1:%s/hello" % http_port)
out["unlisted_host"] = get("http://unlisted.test:%s/" % http_port)
out["unlisted_ip"] = get("http://127.0.0.2:%s/" % http_port)
out["tunnel"] = tunnel("127.0.0.1:%s" % echo_port, "ping")
out["tunnel_refused"] = tunnel("127.0.0.2:%s" % echo_port, "x")
out["direct_loopback"] = direct("127.0.0.1", http_port)
out["direct_gateway"] = direct(gw, gw_port) if gw != "-" else "skipped"
out["dns"] = dns("egress-test.invalid")
out["dns_localhost_name"] = dns("unlisted.test")
out["interfaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
print(json.dumps(out))
`;

describe('egress from a container', {skip: !ok && 'no Docker engine (or not root: the relay needs setns)'}, () => {
  let backend: ContainerBackend;
  let proxy: EgressProxy;
  const audit: AuditEgressV2[] = [];
  const servers: Array<Server | TcpServer> = [];
  let httpPort = 0;
  let echoPort = 0;
  let gatewayPort = 0;
  let gatewayHits = 0;
  const gateway = networkInterfaces().docker0?.find((a) => a.family === 'IPv4')?.address;

  const listen = async (server: Server | TcpServer, host = '127.0.0.1') => {
    servers.push(server);
    server.listen(0, host);
    await once(server, 'listening');
    return (server.address() as AddressInfo).port;
  };

  before(async () => {
    httpPort = await listen(createHttpServer((req, res) => res.end(`hello from the test upstream ${req.url}`)));
    echoPort = await listen(createTcpServer((s) => s.pipe(s)));
    if (gateway) gatewayPort = await listen(createTcpServer((s) => { gatewayHits++; s.destroy(); }), gateway);
    proxy = new EgressProxy({audit: (e) => audit.push(e)});
    backend = new ContainerBackend({egress: proxy});
  });
  after(async () => {
    await backend.close();
    await proxy.close();
    for (const s of servers) {
      (s as Server).closeAllConnections?.();
      s.close();
    }
  });

  const withGrant = (code: string, args: string[], grant: Partial<EgressGrant> & {allow: string[]}): ContainerJob => {
    const g = parseEgressGrant(grant);
    return python(code, args, {network: {egress: g}, egress: {callId: 'job-egress', principal: 'local', tool: 'net__probe', profile: 'net-test', grant: g},
      limits: {timeoutMs: 30_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 32}});
  };

  test('allowed host answers; unlisted host and IP refused naming the grant; CONNECT relays TCP; no direct route, no DNS, only loopback', async () => {
    const r = await backend.run(withGrant(PROBE, [String(httpPort), String(echoPort), gateway ?? '-', String(gatewayPort)],
      {allow: [`127.0.0.1:${httpPort}`, `127.0.0.1:${echoPort}`]}), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(out.env, {HTTP_PROXY: 'http://127.0.0.1:3128', https_proxy: 'http://127.0.0.1:3128', ALL_PROXY: 'http://127.0.0.1:3128', NO_PROXY: '', NODE_USE_ENV_PROXY: '1'});
    assert.deepEqual(out.allowed, [200, 'hello from the test upstream /hello']);
    const [s1, b1] = out.unlisted_host as [number, string];
    assert.equal(s1, 403);
    assert.match(b1, /the host "unlisted\.test" port \d+ is not in the allowlist; the profile's egress grant allows only: 127\.0\.0\.1:/);
    const [s2, b2] = out.unlisted_ip as [number, string];
    assert.equal(s2, 403);
    assert.match(b2, /the address 127\.0\.0\.2 port \d+ is not in the allowlist/);
    assert.deepEqual(out.tunnel, ['200', 'ping']);
    assert.equal((out.tunnel_refused as string[])[0], '403');
    // Bypassing the proxy: the container's 127.0.0.1 is its own loopback (only the relay listens there), and there is no route to the host.
    assert.equal(out.direct_loopback, 'ConnectionRefusedError');
    if (gateway) assert.match(String(out.direct_gateway), /^(OSError|TimeoutError|ConnectionRefusedError|socket\.timeout)$/);
    assert.equal(gatewayHits, 0, 'nothing reached the server on the docker0 address');
    assert.match(String(out.dns), /gaierror/);
    assert.match(String(out.dns_localhost_name), /gaierror/);
    assert.deepEqual(out.interfaces, ['lo']);
    const allowed = audit.filter((e) => e.type === 'egress.allowed');
    assert.ok(allowed.some((e) => e.method === 'GET' && e.port === httpPort && e.status === 200));
    assert.ok(allowed.some((e) => e.method === 'CONNECT' && e.port === echoPort && e.bytesOut === 4));
    assert.ok(audit.some((e) => e.type === 'egress.denied' && e.host === 'unlisted.test'));
    assert.ok(audit.every((e) => e.jobId === 'job-egress' && e.tool === 'net__probe'));
  });

  test('the request limit ends the call with the limit named (egressLimit → DENIED, rule egress)', async () => {
    const code = `
import sys, urllib.request
for i in range(5):
    urllib.request.urlopen("http://127.0.0.1:%s/%d" % (sys.argv[1], i), timeout=10).read()
print("all done")
`;
    const r = await backend.run(withGrant(code, [String(httpPort)], {allow: [`127.0.0.1:${httpPort}`], maxRequests: 2}), {signal: noSignal()});
    assert.equal(r.failed, true);
    assert.match(r.stderr, /HTTP Error 429/);
    assert.equal(r.egressLimit?.limit, 'maxRequests');
    assert.match(r.egressLimit?.message ?? '', /maxRequests = 2 requests per call/);
  });

  test('a tool without a grant still has no network: no proxy variables, nothing on 127.0.0.1:3128', async () => {
    const code = `
import json, os, socket
s = socket.socket(); s.settimeout(3)
try:
    s.connect(("127.0.0.1", 3128)); r = "connected"
except OSError as e:
    r = type(e).__name__
print(json.dumps({"proxy": os.environ.get("HTTP_PROXY"), "relay": r}))
`;
    const r = await backend.run(python(code), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {proxy: null, relay: 'ConnectionRefusedError'});
    await assertHealthy(backend);
  });

  test('no relay outlives its call: no process of this test still names a call\'s proxy socket', async () => {
    const {readdirSync, readFileSync} = await import('node:fs');
    const mine = (pid: string) => {
      try {
        const text = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
        return text.includes('toolcell-egress-') && text.includes('wrong network namespace') && readFileSync(`/proc/${pid}/status`, 'latin1').includes(`PPid:\t${process.pid}\n`);
      } catch {
        return false;
      }
    };
    const left = readdirSync('/proc').filter((p) => /^[0-9]+$/.test(p)).filter(mine);
    assert.deepEqual(left, []);
  });
});
