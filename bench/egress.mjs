// `node --no-node-snapshot bench/egress.mjs`: the latency the egress proxy adds to one HTTP request, measured in one
// run on this machine: the same GET to a loopback upstream (a) straight from the host and (b) through an egress
// proxy session (absolute-form over the call's Unix socket, resolveEgress, a fresh upstream connection), plus
// (c) a CONNECT tunnel's setup and first echo round trip. Both sides open a fresh connection per request (the proxy
// never pools upstream connections). Loopback only; nothing else is contacted. Prints a table and writes
// bench/results/egress-latest.json. BENCH_QUICK=1 for a short run. The in-container relay (one more loopback hop,
// egress/relay.ts) is not included: it adds one pipe per connection inside the same host.
import {once} from 'node:events';
import {mkdirSync, writeFileSync} from 'node:fs';
import {createServer, request} from 'node:http';
import {createServer as createTcpServer} from 'node:net';
import {cpus, loadavg, totalmem} from 'node:os';
import {fileURLToPath} from 'node:url';
import {parseEgressGrant} from '../src/egress/policy.ts';
import {EgressProxy} from '../src/egress/proxy.ts';

const N = process.env.BENCH_QUICK === '1' ? 300 : 2000;
const WARMUP = 100;

const upstream = createServer((req, res) => res.end('ok')).listen(0, '127.0.0.1');
const echo = createTcpServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
await Promise.all([once(upstream, 'listening'), once(echo, 'listening')]);
const port = upstream.address().port;
const echoPort = echo.address().port;
const proxy = new EgressProxy({});
const grant = parseEgressGrant({allow: [`127.0.0.1:${port}`, `127.0.0.1:${echoPort}`], maxRequests: 10_000, maxBytesIn: 2 ** 30, maxBytesOut: 2 ** 30});
/** One call's session per measurement (maxRequests is per call). */
let session = await proxy.open({callId: 'bench', principal: 'bench', tool: 'bench__egress', profile: 'bench', grant});

function get(options) {
  return new Promise((resolve, reject) => {
    const req = request({agent: false, ...options}, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}
const direct = () => get({host: '127.0.0.1', port, path: '/'});
const viaProxy = () => get({socketPath: session.socketPath, path: `http://127.0.0.1:${port}/`, headers: {host: `127.0.0.1:${port}`}});
function tunnel() {
  return new Promise((resolve, reject) => {
    const req = request({socketPath: session.socketPath, method: 'CONNECT', path: `127.0.0.1:${echoPort}`, agent: false});
    req.on('connect', (res, socket) => {
      if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
      socket.once('data', () => { socket.destroy(); resolve(); });
      socket.write('x');
    });
    req.on('error', reject);
    req.end();
  });
}

async function measure(fn) {
  await session.close();
  session = await proxy.open({callId: 'bench', principal: 'bench', tool: 'bench__egress', profile: 'bench', grant});
  for (let i = 0; i < WARMUP; i++) await fn();
  const times = [];
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  const q = (p) => Number(times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(3));
  return {p50: q(0.5), p95: q(0.95), p99: q(0.99)};
}

// Interleave the two in rounds so that machine noise hits both alike.
const rows = {direct: [], proxy: [], tunnel: []};
for (let round = 0; round < 3; round++) {
  rows.direct.push(await measure(direct));
  rows.proxy.push(await measure(viaProxy));
  rows.tunnel.push(await measure(tunnel));
}
const median = (list, key) => list.map((r) => r[key]).sort((a, b) => a - b)[1];
const summary = Object.fromEntries(Object.entries(rows).map(([k, list]) => [k, {p50: median(list, 'p50'), p95: median(list, 'p95'), p99: median(list, 'p99')}]));
const added = {p50: Number((summary.proxy.p50 - summary.direct.p50).toFixed(3)), p95: Number((summary.proxy.p95 - summary.direct.p95).toFixed(3))};
const machine = {cpus: cpus().length, model: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30), load1: loadavg()[0], node: process.version};
console.log(`egress proxy, ${N} requests x 3 rounds (median of rounds), ms`);
console.log('                         p50      p95      p99');
for (const [k, label] of [['direct', 'GET from the host'], ['proxy', 'GET through the proxy'], ['tunnel', 'CONNECT + 1 echo']]) {
  const s = summary[k];
  console.log(`${label.padEnd(24)} ${String(s.p50).padStart(7)}  ${String(s.p95).padStart(7)}  ${String(s.p99).padStart(7)}`);
}
console.log(`added by the proxy: p50 ${added.p50} ms, p95 ${added.p95} ms   (${machine.cpus} CPUs ${machine.model}, load ${machine.load1.toFixed(2)}, ${machine.node})`);
const dir = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(dir, {recursive: true});
writeFileSync(`${dir}egress-latest.json`, `${JSON.stringify({at: new Date().toISOString(), n: N, summary, added, machine}, null, 2)}\n`);
await session.close();
await proxy.close();
upstream.close();
echo.close();
