// Scale-out benchmark: calls/s and p50/p99 latency through HAProxy (deploy/haproxy/haproxy.cfg)
// in front of 1 replica with in-process quotas, 1 replica with quotas in Redis, and 3 replicas
// sharing Redis; plus the cost of one admission (admit + release) in Redis against the in-process
// store, measured directly in this process. On a 2-vCPU machine three replicas share the same
// two CPUs: the 3-vs-1 ratio shows the overhead of shared state and balancing, not real scaling.
// Writes bench/results/scale.json. Numbers are for comparison on one machine, never asserted.
//
//   npm run --silent build && node_modules/.bin/node --no-node-snapshot bench/scale.mjs
//   SCALE_CLIENTS=16 SCALE_CALLS=25 (per scenario: clients x calls, 2026-07-28 SDK clients)
import {spawn} from 'node:child_process';
import {createHash, randomBytes} from 'node:crypto';
import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {createServer, connect as tcpConnect} from 'node:net';
import {cpus, loadavg, tmpdir, totalmem} from 'node:os';
import {join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {Client, StreamableHTTPClientTransport} from '@modelcontextprotocol/client';
import {driveDoubleCalls} from './call-load.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const CLIENTS = Number(process.env.SCALE_CLIENTS ?? 16);
const CALLS = Number(process.env.SCALE_CALLS ?? 25);
const cli = join(root, 'dist/cli.js');
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const {port} = s.address();
    s.close(() => resolve(port));
  });
});
async function waitForPort(port, ms = 15_000) {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = tcpConnect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing on port ${port}`);
    await sleep(50);
  }
}

const children = [];
function start(cmd, args, env = {}) {
  const child = spawn(cmd, args, {cwd: root, env: {...process.env, ...env}, stdio: ['ignore', 'ignore', 'pipe']});
  let stderr = '';
  child.stderr.on('data', (c) => { stderr = (stderr + c).slice(-10_000); });
  children.push(child);
  return {child, stderr: () => stderr};
}
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
  await exited;
  clearTimeout(timer);
}

const dir = mkdtempSync(join(tmpdir(), 'toolcell-scale-bench-'));
const key = randomBytes(32).toString('base64url');
const redisPort = await freePort();
const redisUrl = `redis://127.0.0.1:${redisPort}`;
const redis = start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]);

function writeConfig(name, withRedis) {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    apiKeys: [{name: 'bench', sha256: createHash('sha256').update(key).digest('hex')}],
    grants: [{principal: 'key:bench', packages: ['bench']}],
    quotas: {principals: {'key:bench': {ratePerSec: 1e6, burst: 1e6, maxInFlight: Math.min(CLIENTS * 2, 60)}}},
    ...(withRedis ? {redis: {url: redisUrl}} : {}),
  }));
  return file;
}

async function startReplica(config) {
  const port = await freePort();
  const replica = start(process.execPath, ['--no-node-snapshot', cli, 'serve', '--http', `127.0.0.1:${port}`, '--config', config,
    '--no-bundled-tools', '--no-bundled-profiles', '--tools', join(root, 'bench/fixtures/tools'), '--profiles', join(root, 'bench/fixtures/profiles'),
    '--no-containers', '--audit-log', 'off'], {TOOLCELL_LOG_LEVEL: 'error'});
  const end = Date.now() + 30_000;
  while (!/serving MCP over Streamable HTTP/.test(replica.stderr())) {
    if (replica.child.exitCode !== null || Date.now() > end) throw new Error(`replica did not start:\n${replica.stderr()}`);
    await sleep(50);
  }
  return {port, child: replica.child};
}

async function startBalancer(ports) {
  const port = await freePort();
  const lb = start('haproxy', ['-f', join(root, 'deploy/haproxy/haproxy.cfg'), '-db'], {
    TOOLCELL_LB_BIND: `127.0.0.1:${port}`, TOOLCELL_LB_HOST: '127.0.0.1',
    TOOLCELL_REPLICA_1: `127.0.0.1:${ports[0]}`, TOOLCELL_REPLICA_2: `127.0.0.1:${ports[1 % ports.length]}`, TOOLCELL_REPLICA_3: `127.0.0.1:${ports[2 % ports.length]}`,
  });
  await waitForPort(port);
  return {url: `http://127.0.0.1:${port}/mcp`, child: lb.child};
}

async function load(url) {
  const clients = await Promise.all(Array.from({length: CLIENTS}, async () => {
    const client = new Client({name: 'scale-bench', version: '1.0.0'}, {versionNegotiation: {mode: {pin: '2026-07-28'}}});
    await client.connect(new StreamableHTTPClientTransport(new URL(url), {authProvider: {token: async () => key}}));
    return client;
  }));
  const {latencies, errors, seconds} = await driveDoubleCalls(clients, CALLS);
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  const sorted = latencies.sort((a, b) => a - b);
  return {calls: latencies.length, errors: errors.length, firstError: errors[0], p50Ms: round(pct(sorted, 50)), p99Ms: round(pct(sorted, 99)), callsPerSecond: round(latencies.length / seconds, 1)};
}

async function scenario(name, replicasWanted, withRedis) {
  const config = writeConfig(name, withRedis);
  const replicas = [];
  for (let i = 0; i < replicasWanted; i++) replicas.push(await startReplica(config));
  const lb = await startBalancer(replicas.map((r) => r.port));
  // Until the balancer has a healthy replica (its health checks run /readyz).
  const end = Date.now() + 30_000;
  while ((await fetch(lb.url.replace(/\/mcp$/, '/readyz')).then((r) => r.status, () => 0)) !== 200) {
    if (Date.now() > end) throw new Error('the balancer has no ready replica after 30 s');
    await sleep(200);
  }
  try {
    const result = {scenario: name, replicas: replicasWanted, store: withRedis ? 'redis' : 'in-process', ...(await load(lb.url))};
    process.stdout.write(`scale: ${name}: p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.callsPerSecond} calls/s, ${result.errors} errors\n`);
    return result;
  } finally {
    await stop(lb.child);
    for (const r of replicas) await stop(r.child);
  }
}

/** Admit + release, sequentially, in this process: the Redis store's round trip against the in-process store. */
async function admissionCost() {
  const {QuotaAdmission} = await import('../dist/policy/quota.js');
  const {RedisQuotaStore} = await import('../dist/policy/redis-quota.js');
  const defaults = {ratePerSec: 1e6, burst: 1e6, maxInFlight: 1000};
  const principal = {id: 'key:bench', kind: 'api-key', scopes: [], packages: '*'};
  const tool = {name: 'bench__double'};
  const shared = new RedisQuotaStore({defaults, url: redisUrl, keyPrefix: 'bench:'});
  const local = new QuotaAdmission({defaults});
  const end = Date.now() + 10_000;
  while (!shared.report().reachable && Date.now() < end) await sleep(50);
  const measure = async (store, n) => {
    const times = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const release = await store.admit(principal, tool);
      times.push(performance.now() - t);
      release();
    }
    return times.sort((a, b) => a - b);
  };
  await measure(shared, 200);
  const redisTimes = await measure(shared, 2000);
  const localTimes = await measure(local, 2000);
  await shared.close();
  return {admissions: 2000, redisP50Ms: round(pct(redisTimes, 50), 3), redisP99Ms: round(pct(redisTimes, 99), 3), inProcessP50Ms: round(pct(localTimes, 50), 4), inProcessP99Ms: round(pct(localTimes, 99), 4)};
}

let exitCode = 0;
try {
  await waitForPort(redisPort);
  const results = [];
  results.push(await scenario('1 replica, in-process quotas', 1, false));
  results.push(await scenario('1 replica, quotas in Redis', 1, true));
  results.push(await scenario('3 replicas, quotas in Redis', 3, true));
  const admission = await admissionCost();
  process.stdout.write(`scale: one admission (admit, Lua script in Redis, sequential): p50 ${admission.redisP50Ms} ms, p99 ${admission.redisP99Ms} ms; in-process p50 ${admission.inProcessP50Ms} ms; ${cpus().length} CPUs, load average ${round(loadavg()[0], 1)}\n`);
  const summary = {date: new Date().toISOString(), node: process.version, cpus: cpus().length, loadAverage1m: round(loadavg()[0], 1), memoryGb: round(totalmem() / 2 ** 30, 1),
    clients: CLIENTS, callsPerClient: CALLS, scenarios: results, admission};
  mkdirSync(join(root, 'bench/results'), {recursive: true});
  writeFileSync(join(root, 'bench/results/scale.json'), `${JSON.stringify(summary, null, 2)}\n`);
  if (results.some((r) => r.errors > 0)) {
    process.stderr.write(`errors: ${results.map((r) => r.firstError).filter(Boolean).join('\n')}\n`);
    exitCode = 1;
  }
} finally {
  for (const child of children.reverse()) await stop(child);
  rmSync(dir, {recursive: true, force: true});
}
process.exit(exitCode);
