// Hazard: a tool reaches the network. Servers started by this test on the host (loopback and
// the docker0 bridge address) must be unreachable from a container; nothing else is tried.
// invariant: container:network:none-by-default
import assert from 'node:assert/strict';
import {createServer, type Server} from 'node:http';
import {networkInterfaces} from 'node:os';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {assertHealthy, dockerAvailable, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python']});

const CONNECT = `
import json, socket, sys
out = {}
args = sys.argv[1:]
for host, port in zip(args[0::2], args[1::2]):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, int(port)))
        out[host] = "connected"
    except OSError as e:
        out[host] = f"{type(e).__name__}:{e.errno}"
    finally:
        s.close()
out["interfaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
print(json.dumps(out))
`;

function listen(host: string): Promise<{server: Server; port: number; hits: () => number}> {
  let hits = 0;
  const server = createServer((_req, res) => {
    hits++;
    res.end('reached');
  });
  server.on('connection', () => hits++);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      resolve({server, port: typeof address === 'object' && address ? address.port : 0, hits: () => hits});
    });
  });
}

function docker0Address(): string | undefined {
  return networkInterfaces().docker0?.find((a) => a.family === 'IPv4')?.address;
}

describe('network: none', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  const servers: Server[] = [];
  before(() => {
    backend = new ContainerBackend();
  });
  after(async () => {
    for (const s of servers) s.close();
    await backend.close();
  });

  test('a server the test starts on the host (127.0.0.1 and the docker0 address) is unreachable from a container', async (t) => {
    const loop = await listen('127.0.0.1');
    servers.push(loop.server);
    const targets: string[] = ['127.0.0.1', String(loop.port)];
    const bridge = docker0Address();
    let bridgeServer: Awaited<ReturnType<typeof listen>> | undefined;
    if (bridge) {
      bridgeServer = await listen(bridge);
      servers.push(bridgeServer.server);
      targets.push(bridge, String(bridgeServer.port));
    } else {
      t.diagnostic('no docker0 interface on this host (remote engine?): only the loopback server is tried');
    }
    const r = await backend.run(python(CONNECT, targets), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, string | string[]>;
    assert.deepEqual(out.interfaces, ['lo'], 'the container has no interface but loopback');
    // 127.0.0.1 inside the container is the container's own loopback: nothing listens there.
    assert.match(String(out['127.0.0.1']), /^ConnectionRefusedError/);
    if (bridge) assert.match(String(out[bridge]), /^OSError:101$/, 'ENETUNREACH: no route to the bridge');
    assert.equal(loop.hits(), 0);
    assert.equal(bridgeServer?.hits() ?? 0, 0);
    await assertHealthy(backend);
  });

  test('UDP to the bridge address cannot be sent either', async () => {
    const bridge = docker0Address() ?? '172.17.0.1';
    const r = await backend.run(python(`
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", (sys.argv[1], 9))
    print("sent")
except OSError as e:
    print("refused", e.errno)
`, [bridge]), {signal: noSignal()});
    assert.equal(r.stdout, 'refused 101\n');
    await assertHealthy(backend);
  });
});
