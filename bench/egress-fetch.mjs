// `node --no-node-snapshot bench/egress-fetch.mjs` (after a build): the added latency of an isolate's
// fetch over a host fetch of the same loopback URL, in the same run on this machine.
//   host fetch      Node's fetch (undici) in this process, K sequential GETs
//   host http       node:http request with a fresh connection per GET (what the isolate fetch does)
//   isolate fetch   one isolate call that awaits K sequential fetch() calls (the host performs each
//                   under a grant for 127.0.0.1:PORT: policy, budget, audit callback), per request
// A loopback server answering a small body; no other address is contacted.
import {createServer, request} from 'node:http';
import {performance} from 'node:perf_hooks';
import {pino} from 'pino';
import {IsolateBackend} from '../dist/backends/isolate/isolate-backend.js';
import {isolateCallEgress} from '../dist/egress/call-egress.js';
import {parseEgressGrant} from '../dist/egress/policy.js';
import {SecretStore} from '../dist/egress/secrets.js';

const K = Number(process.env.BENCH_K ?? 300);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const server = createServer((req, res) => res.end('{"ok":true}'));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;
const url = `http://127.0.0.1:${port}/`;

const perRequest = (ms) => Math.round((ms / K) * 1000) / 1000;
async function hostFetch() {
  const t = performance.now();
  for (let i = 0; i < K; i++) await (await fetch(url)).text();
  return perRequest(performance.now() - t);
}
async function hostHttp() {
  const t = performance.now();
  for (let i = 0; i < K; i++) {
    await new Promise((resolve, reject) => {
      request(url, {agent: false}, (res) => { res.resume(); res.on('end', resolve); }).on('error', reject).end();
    });
  }
  return perRequest(performance.now() - t);
}

const backend = new IsolateBackend({logger: pino({level: 'silent'}), workers: 1, poolSize: 2});
await backend.start();
const grant = parseEgressGrant({allow: [`127.0.0.1:${port}`], maxRequests: K + 10});
const services = {secrets: SecretStore.empty(), audit: () => {}};
const source = `export default async (args) => { const t = Date.now(); for (let i = 0; i < ${K}; i++) await (await fetch(args.url)).text(); return Date.now() - t; }`;
let seq = 0;
async function isolateFetch() {
  const call = isolateCallEgress(services, grant, [], {jobId: `b${++seq}`, principal: 'bench', tool: 'bench', profile: 'bench'}, 64);
  try {
    const result = await backend.run({kind: 'isolate', id: `bench-${seq}`, source, filename: 'bench.js', args: {url}, limits: {timeoutMs: 120_000, memoryMb: 64, outputBytes: 65536}, egress: call.egress}, {signal: AbortSignal.timeout(180_000)});
    if (result.failed) throw new Error(JSON.stringify(result));
    return perRequest(Number(result.stdout));
  } finally {
    call.close();
  }
}

const rows = {'host fetch (undici, keep-alive)': [], 'host http (new connection)': [], 'isolate fetch': []};
for (let r = 0; r < ROUNDS; r++) {
  rows['host fetch (undici, keep-alive)'].push(await hostFetch());
  rows['host http (new connection)'].push(await hostHttp());
  rows['isolate fetch'].push(await isolateFetch());
}
await backend.close();
server.close();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
process.stdout.write(`egress fetch, ${K} sequential GETs of a loopback URL, median of ${ROUNDS} rounds, ms per request\n`);
for (const [name, xs] of Object.entries(rows)) process.stdout.write(`  ${name.padEnd(34)} ${median(xs).toFixed(3)}  (${xs.join(', ')})\n`);
process.stdout.write(`  isolate fetch - host http         ${(median(rows['isolate fetch']) - median(rows['host http (new connection)'])).toFixed(3)}\n`);
