// HTTP service load benchmark: `toolcell serve --http 127.0.0.1:0` with an API key, then
// 50 concurrent SDK clients (half 2025-11-25 sessions, half 2026-07-28) x 20 calls each of
// bench__double (a fresh isolate per call). Prints p50/p90/p99/max latency per call and the
// throughput, and writes bench/results/http-load.json. Every result is checked; any error
// makes the run exit 1. Numbers are for comparison on one machine, never asserted.
//
//   node_modules/.bin/node --no-node-snapshot bench/http-load.mjs
//   HTTP_LOAD_CLIENTS=50 HTTP_LOAD_CALLS=20 HTTP_LOAD_ERA=mixed|legacy|modern TOOLCELL_CLI=dist/cli.js
import {spawn} from 'node:child_process';
import {createHash, randomBytes} from 'node:crypto';
import {existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {cpus, tmpdir, totalmem} from 'node:os';
import {join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {Client, StreamableHTTPClientTransport} from '@modelcontextprotocol/client';
import {driveDoubleCalls} from './call-load.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const CLIENTS = Number(process.env.HTTP_LOAD_CLIENTS ?? 50);
const CALLS = Number(process.env.HTTP_LOAD_CALLS ?? 20);
const ERA = process.env.HTTP_LOAD_ERA ?? 'mixed';
const cli = process.env.TOOLCELL_CLI ?? (existsSync(join(root, 'dist/cli.js')) ? join(root, 'dist/cli.js') : join(root, 'src/cli.ts'));

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

const key = randomBytes(32).toString('base64url');
const dir = mkdtempSync(join(tmpdir(), 'toolcell-http-load-'));
const config = join(dir, 'config.json');
writeFileSync(config, JSON.stringify({
  apiKeys: [{name: 'bench', sha256: createHash('sha256').update(key).digest('hex')}],
  grants: [{principal: 'key:bench', packages: ['bench']}],
  quotas: {principals: {'key:bench': {ratePerSec: 1e6, burst: 1e6, maxInFlight: Math.min(CLIENTS, 60)}}},
  sessions: {maxPerPrincipal: CLIENTS + 8},
}));

const server = spawn(process.execPath, ['--no-node-snapshot', cli, 'serve', '--http', '127.0.0.1:0', '--config', config,
  '--no-bundled-tools', '--tools', join(root, 'bench/fixtures/tools'), '--profiles', join(root, 'bench/fixtures/profiles'), '--no-containers', '--audit-log', 'off'], {
  cwd: root, env: {...process.env, TOOLCELL_LOG_LEVEL: 'error'}, stdio: ['ignore', 'ignore', 'pipe'],
});
let stderr = '';
const url = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`server did not start:\n${stderr}`)), 30_000);
  server.stderr.on('data', (chunk) => {
    stderr += chunk;
    const match = /serving MCP over Streamable HTTP at (\S+)/.exec(stderr);
    if (match) {
      clearTimeout(timer);
      resolve(match[1]);
    }
  });
  server.once('exit', (code) => reject(new Error(`server exited (${code}):\n${stderr}`)));
});

async function connect(i) {
  const modern = ERA === 'modern' || (ERA === 'mixed' && i % 2 === 1);
  const transport = new StreamableHTTPClientTransport(new URL(url), {authProvider: {token: async () => key}});
  const client = new Client({name: 'http-load', version: '1.0.0'}, modern ? {versionNegotiation: {mode: {pin: '2026-07-28'}}} : {});
  await client.connect(transport);
  return client;
}

let exitCode = 0;
try {
  const clients = await Promise.all(Array.from({length: CLIENTS}, (_, i) => connect(i)));
  const {latencies, errors, seconds} = await driveDoubleCalls(clients, CALLS);
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  const sorted = [...latencies].sort((a, b) => a - b);
  const summary = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    memoryGb: round(totalmem() / 2 ** 30, 1),
    clients: CLIENTS,
    callsPerClient: CALLS,
    era: ERA,
    calls: latencies.length,
    errors: errors.length,
    p50Ms: round(pct(sorted, 50)),
    p90Ms: round(pct(sorted, 90)),
    p99Ms: round(pct(sorted, 99)),
    maxMs: round(sorted.at(-1) ?? 0),
    callsPerSecond: round(latencies.length / seconds, 1),
  };
  mkdirSync(join(root, 'bench/results'), {recursive: true});
  writeFileSync(join(root, 'bench/results/http-load.json'), `${JSON.stringify(summary, null, 2)}\n`);
  process.stdout.write(`http-load: ${CLIENTS} clients x ${CALLS} calls (${ERA}): p50 ${summary.p50Ms} ms, p90 ${summary.p90Ms} ms, p99 ${summary.p99Ms} ms, max ${summary.maxMs} ms, ${summary.callsPerSecond} calls/s, ${errors.length} errors\n`);
  if (errors.length > 0) {
    process.stderr.write(`${errors.slice(0, 10).join('\n')}\n`);
    exitCode = 1;
  }
} finally {
  server.kill('SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  rmSync(dir, {recursive: true, force: true});
}
process.exit(exitCode);
