// `npm run bench`: measures, in one run on this machine, the numbers the README quotes.
//   floor       the same trivial tool in-process behind the same MCP SDK over stdio
//   isolate     bench__double through `toolcell serve` over stdio: a fresh isolate per call
//   container   bench__echo through `toolcell serve`: a fresh container per call, pool off and on
//               (on: back to back, 4 in flight with the machine's CPU split toolcell/engine, and
//               paced one call every 300 ms so that the pool keeps up)
//   docker run  `docker run --rm` per call with the same hardened flags (the per-call-container baseline)
//   rss         server RSS idle, after 1,000 and after 10,000 isolate calls
//   lifecycle   CPU per fresh isolate (create + context + prelude + dispose) in this process, and the
//               calls/s ceiling it implies for one fresh isolate per call on this machine's CPUs
// Prints a table with ratios and writes bench/results/latest.json. Targets are checked here, in the
// benchmark, never in timed tests. Options: BENCH_QUICK=1 for a short run; BENCH_SKIP_DOCKER=1.
import {execFileSync, execFile} from 'node:child_process';
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs';
import {cpus, totalmem} from 'node:os';
import {promisify} from 'node:util';
import {fileURLToPath} from 'node:url';
import {Client} from '@modelcontextprotocol/client';
import {StdioClientTransport} from '@modelcontextprotocol/client/stdio';
import {disposePrepared, prepareIsolate, POOL_PREPARE_OPTIONS} from '../dist/backends/isolate/prepared-isolate.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const quick = process.env.BENCH_QUICK === '1';
const N_SEQ = quick ? 300 : 2000;
const N_PAR = quick ? 1000 : 4000;
const N_CONTAINER = quick ? 15 : 60;
const N_LIFECYCLE = 2000;
const run = promisify(execFile);

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
function stats(samples) {
  const s = [...samples].sort((a, b) => a - b);
  return {n: s.length, p50: round(pct(s, 50)), p95: round(pct(s, 95)), p99: round(pct(s, 99))};
}

async function connect(command, args) {
  const transport = new StdioClientTransport({command, args, env: {...process.env, TOOLCELL_LOG_LEVEL: 'error'}, stderr: 'pipe', cwd: root});
  transport.stderr?.on('data', () => {});
  const client = new Client({name: 'bench', version: '1.0.0'});
  await client.connect(transport);
  return {client, pid: transport.pid, close: () => client.close()};
}

async function check(client, name, args) {
  const r = await client.callTool({name, arguments: args});
  if (r.isError) throw new Error(`${name} failed: ${JSON.stringify(r.content)}`);
  return r;
}

/**
 * Sequential latencies (ms) and calls/s at 1 and 16 in flight. With `cpuMs` (a function returning CPU
 * ms used so far), also the CPU ms per call while `inFlight` calls were in flight; with `machineMs`
 * (the same for the whole machine), the machine's CPU ms per call over that phase too.
 */
async function measure(client, name, argsOf, nSeq, nPar, inFlight = 16, cpuMs = undefined, machineMs = undefined) {
  for (let i = 0; i < Math.min(200, nSeq); i++) await check(client, name, argsOf(i));
  const lat = [];
  const t0 = performance.now();
  for (let i = 0; i < nSeq; i++) {
    const s = performance.now();
    await check(client, name, argsOf(i));
    lat.push(performance.now() - s);
  }
  const seqSeconds = (performance.now() - t0) / 1000;
  let next = 0;
  const cpu1 = cpuMs?.();
  const machine1 = machineMs?.();
  const t1 = performance.now();
  await Promise.all(Array.from({length: inFlight}, async () => {
    while (next < nPar) {
      const i = next++;
      await check(client, name, argsOf(i));
    }
  }));
  const parSeconds = (performance.now() - t1) / 1000;
  const cpu = {
    ...(cpu1 === undefined ? {} : {cpuMsPerCallInFlight: round((cpuMs() - cpu1) / nPar, 3)}),
    ...(machine1 === undefined ? {} : {machineCpuMsPerCallInFlight: round((machineMs() - machine1) / nPar, 3), machineBusyPct: round(((machineMs() - machine1) / (parSeconds * 1000 * cpus().length)) * 100, 0)}),
  };
  return {...stats(lat), callsPerSecSequential: round(nSeq / seqSeconds, 0), callsPerSecInFlight: round(nPar / parSeconds, 0), inFlight, ...cpu};
}

const rssMb = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? round(Number(m[1]) / 1024, 1) : NaN;
};

function dockerUsable() {
  if (process.env.BENCH_SKIP_DOCKER === '1') return false;
  try {
    execFileSync('docker', ['image', 'inspect', 'toolcell/shell'], {stdio: 'ignore'});
    return true;
  } catch {
    return false;
  }
}

const clockTicksPerSec = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], {encoding: 'utf8'}).trim()) || 100;
  } catch {
    return 100;
  }
})();
const cpuMsOf = (pid) => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicksPerSec; // utime + stime
  } catch {
    return 0; // exited meanwhile
  }
};
const childPids = (pid) => {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], {encoding: 'utf8'}).split('\n').map((x) => Number(x.trim())).filter(Boolean);
  } catch {
    return []; // ps exits 1 when there is no child
  }
};
/** CPU ms used so far by the server `pid`, its direct children (isolate workers) and this process (the client). */
const serverTreeCpuMs = (pid) => () => {
  const own = process.cpuUsage();
  return [pid, ...childPids(pid)].reduce((sum, p) => sum + cpuMsOf(p), 0) + (own.user + own.system) / 1000;
};

/** CPU ms the whole machine has been busy so far (all CPUs; /proc/stat minus idle and iowait). */
const machineCpuMs = () => {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const busy = f.reduce((a, b) => a + b, 0) - f[3] - f[4];
  return (busy * 1000) / clockTicksPerSec;
};

/** RSS of the direct children (isolate workers) of `pid`, in MB, summed. */
function childRss(pid) {
  try {
    const kids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], {encoding: 'utf8'}).split('\n').map((x) => Number(x.trim())).filter(Boolean);
    return round(kids.reduce((sum, k) => sum + (rssMb(k) || 0), 0), 1);
  } catch {
    return NaN;
  }
}

/** Isolate worker and pool settings for the toolcell runs (BENCH_ISOLATE_FLAGS overrides). */
const isolateFlags = (process.env.BENCH_ISOLATE_FLAGS ?? '--isolate-workers 2 --isolate-pool 8').split(' ').filter(Boolean);

/** The server is started as `npm start` and the `toolcell` bin start it: with the heap flags of src/cli.ts. */
const serveArgs = (extra) => [
  '--max-semi-space-size=4', '--max-old-space-size=512', 'dist/cli.js', 'serve', '--no-bundled-tools', '--tools', 'bench/fixtures/tools', '--profiles', 'bench/fixtures/profiles', '--audit-log', 'off', ...extra,
];

const results = {
  machine: {cpus: cpus().length, model: cpus()[0]?.model, memoryGb: round(totalmem() / 2 ** 30, 1), node: process.version},
  at: new Date().toISOString(),
};
const log = (s) => process.stderr.write(`${s}\n`);

// 0. the isolate lifecycle floor: CPU (all threads of this process, process.cpuUsage) per fresh isolate
// prepared as a call without a pooled isolate prepares one (isolate, context, prelude) and then disposed,
// here without IPC or MCP. Every call costs at least this much CPU somewhere, so cpus * 1000 /
// cpuMsPerIsolate bounds calls/s from above even if nothing else cost anything (the server, the client
// and the call itself come on top). Also measured: the same with the pool's options (the prelude's warm op).
log(`isolate lifecycle: ${N_LIFECYCLE} x prepareIsolate + disposePrepared in this process …`);
{
  const cpuMsPer = (options) => {
    for (let i = 0; i < 200; i++) disposePrepared(prepareIsolate(options));
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < N_LIFECYCLE; i++) disposePrepared(prepareIsolate(options));
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    return {cpuMs: (cpu.user + cpu.system) / 1000 / N_LIFECYCLE, wallMs: wallMs / N_LIFECYCLE};
  };
  const base = {memoryMb: 32, removeWebAssembly: true, onCatastrophicError: () => {}};
  const cold = cpuMsPer(base);
  const pool = cpuMsPer({...base, ...POOL_PREPARE_OPTIONS});
  results.isolateLifecycle = {
    iterations: N_LIFECYCLE, cpuMsPerIsolate: round(cold.cpuMs, 3), wallMsPerIsolate: round(cold.wallMs, 3),
    ceilingCallsPerSec: round((results.machine.cpus * 1000) / cold.cpuMs, 0), cpuMsPerPoolIsolate: round(pool.cpuMs, 3),
  };
}

// 1. the in-process floor
log('floor: in-process tool behind the MCP SDK over stdio …');
{
  const floor = await connect(process.execPath, ['bench/floor-server.mjs']);
  results.floor = await measure(floor.client, 'bench__double', (i) => ({n: i}), N_SEQ, N_PAR);
  await floor.close();
}

// 2. isolate tool through toolcell
log('isolate: a fresh isolate per call through toolcell serve …');
{
  const server = await connect(process.execPath, serveArgs(['--no-containers', ...isolateFlags]));
  results.isolate = await measure(server.client, 'bench__double', (i) => ({n: i}), N_SEQ, N_PAR, 16, serverTreeCpuMs(server.pid));
  await server.close();
}

// RSS of the server process (the isolate worker is a separate process, reported beside it):
// idle, after the first 1,000 calls, after 10,000 calls (16 in flight) on a fresh server.
log('rss: 10,000 isolate calls on a fresh server …');
{
  const server = await connect(process.execPath, serveArgs(['--no-containers', ...isolateFlags]));
  await server.client.listTools();
  await new Promise((r) => setTimeout(r, 1000));
  const idle = rssMb(server.pid);
  let done = 0;
  const drive = async (target) => {
    await Promise.all(Array.from({length: 16}, async () => {
      while (done < target) {
        done++;
        await check(server.client, 'bench__double', {n: done});
      }
    }));
  };
  await drive(1000);
  const after1k = rssMb(server.pid);
  const workers1k = childRss(server.pid);
  await drive(10_000);
  const after10k = rssMb(server.pid);
  results.rss = {idleMb: idle, after1000Mb: after1k, after10000Mb: after10k, growthPct: round(((after10k - after1k) / after1k) * 100, 1), calls: done,
    workerAfter1000Mb: workers1k, workerAfter10000Mb: childRss(server.pid)};
  await server.close();
}

// 3. containers: toolcell cold and warm, and docker run --rm
if (dockerUsable()) {
  for (const [label, pool] of [['containerCold', 0], ['containerWarm', 4]]) {
    log(`${label}: bench__echo through toolcell serve, container pool ${pool} …`);
    const server = await connect(process.execPath, serveArgs(['--container-pool', String(pool)]));
    results[label] = await measure(server.client, 'bench__echo', (i) => ({n: i}), N_CONTAINER, N_CONTAINER * 2, 4,
      serverTreeCpuMs(server.pid), machineCpuMs);
    if (pool > 0) {
      // One call at a time with a pause that lets the pool refill: the latency of a warm call when
      // the engine keeps up (back-to-back calls above are bound by how fast members are replaced).
      const lat = [];
      for (let i = 0; i < Math.max(10, Math.floor(N_CONTAINER / 2)); i++) {
        await new Promise((res) => setTimeout(res, 300));
        const t = performance.now();
        await check(server.client, 'bench__echo', {n: i});
        lat.push(performance.now() - t);
      }
      results.containerWarmPaced = stats(lat);
    }
    await server.close();
  }
  log('docker run --rm per call, hardened flags …');
  const flags = ['run', '--rm', '--network', 'none', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
    '--user', '65534:65534', '--memory', '64m', '--memory-swap', '64m', '--cpus', '0.5', '--pids-limit', '32', '--init',
    '--tmpfs', '/tmp:rw,noexec,nosuid,size=8m', 'toolcell/shell', 'echo', '1'];
  const lat = [];
  for (let i = 0; i < Math.max(10, Math.floor(N_CONTAINER / 2)); i++) {
    const s = performance.now();
    await run('docker', flags);
    lat.push(performance.now() - s);
  }
  results.dockerRun = stats(lat);
} else {
  log('containers: skipped (no Docker engine or no toolcell/shell image; run .ci/setup-docker.sh and toolcell images build)');
}

// Ratios and targets
const r = results;
r.ratios = {
  isolateP50OverFloor: round(r.isolate.p50 / r.floor.p50),
  ...(r.containerWarm ? {
    dockerRunOverContainerWarmP50: round(r.dockerRun.p50 / r.containerWarm.p50),
    dockerRunOverContainerWarmPacedP50: round(r.dockerRun.p50 / r.containerWarmPaced.p50),
    dockerRunOverContainerColdP50: round(r.dockerRun.p50 / r.containerCold.p50),
  } : {}),
};
r.targets = {
  'isolate p50 <= 1.5 ms': r.isolate.p50 <= 1.5,
  'isolate >= 1500 calls/s at 16 in flight': r.isolate.callsPerSecInFlight >= 1500,
  'server RSS idle <= 120 MB': r.rss.idleMb <= 120,
  'RSS after 10k within 10% of after 1k': Math.abs(r.rss.growthPct) <= 10,
  ...(r.containerWarm ? {
    'container p50 <= 50 ms (warm)': r.containerWarm.p50 <= 50,
    'container >= 6x faster than docker run': r.ratios.dockerRunOverContainerWarmP50 >= 6,
    'container >= 25 calls/s sustained (warm)': r.containerWarm.callsPerSecInFlight >= 25,
  } : {}),
};

const row = (name, m) => m ? `| ${name} | ${m.p50} | ${m.p95} | ${m.p99} | ${m.callsPerSecSequential ?? '–'} | ${m.callsPerSecInFlight ?? '–'} (${m.inFlight ?? '–'} in flight) |` : '';
const table = [
  `Machine: ${r.machine.cpus} vCPU (${r.machine.model}), ${r.machine.memoryGb} GB, Node ${r.machine.node}; ${r.at}`,
  '',
  '| path | p50 ms | p95 ms | p99 ms | calls/s sequential | calls/s concurrent |',
  '|---|---|---|---|---|---|',
  row('in-process floor (MCP SDK over stdio)', r.floor),
  row('toolcell isolate (fresh isolate per call)', r.isolate),
  row('toolcell container, pool off (fresh container per call)', r.containerCold),
  row('toolcell container, pool on (fresh container per call)', r.containerWarm),
  row('toolcell container, pool on, one call every 300 ms (pool keeps up)', r.containerWarmPaced),
  row('`docker run --rm` per call, hardened flags', r.dockerRun),
  '',
  `Server RSS: idle ${r.rss.idleMb} MB; after 1,000 calls ${r.rss.after1000Mb} MB; after ${r.rss.calls} calls ${r.rss.after10000Mb} MB (${r.rss.growthPct}%). Isolate workers: ${r.rss.workerAfter1000Mb} MB after 1,000, ${r.rss.workerAfter10000Mb} MB after ${r.rss.calls}.`,
  `Isolate lifecycle floor: ${r.isolateLifecycle.cpuMsPerIsolate} ms CPU per fresh isolate (create, context, prelude, dispose; ${r.isolateLifecycle.cpuMsPerPoolIsolate} ms as the warm pool prepares them), so at most ${r.isolateLifecycle.ceilingCallsPerSec} calls/s on ${r.machine.cpus} vCPU with one fresh isolate per call even if nothing else cost CPU. At 16 in flight a call cost ${r.isolate.cpuMsPerCallInFlight} ms CPU in all (client, server, workers): at most ${round((r.machine.cpus * 1000) / r.isolate.cpuMsPerCallInFlight, 0)} calls/s.`,
  ...(r.containerWarm ? [`Containers, pool on, 4 in flight: the machine was ${r.containerWarm.machineBusyPct}% busy, ${r.containerWarm.machineCpuMsPerCallInFlight} ms CPU per call in all, of which toolcell (server and client) ${r.containerWarm.cpuMsPerCallInFlight} ms; the rest is the engine (dockerd, containerd, runc, shims, kernel) creating, starting and removing one container per call.`] : []),
  `toolcell flags: ${isolateFlags.join(' ')}`,
  `Ratios: isolate p50 / floor p50 = ${r.ratios.isolateP50OverFloor}` + (r.containerWarm ? `; docker run p50 / toolcell container p50 = ${r.ratios.dockerRunOverContainerWarmP50} (pool on, back to back), ${r.ratios.dockerRunOverContainerWarmPacedP50} (pool on, paced), ${r.ratios.dockerRunOverContainerColdP50} (pool off)` : ''),
  '',
  ...Object.entries(r.targets).map(([k, v]) => `- ${v ? 'met' : 'MISSED'}: ${k}`),
].join('\n');
mkdirSync(`${root}/bench/results`, {recursive: true});
writeFileSync(`${root}/bench/results/latest.json`, `${JSON.stringify(r, null, 2)}\n`);
writeFileSync(`${root}/bench/results/latest.md`, `${table}\n`);
process.stdout.write(`${table}\n`);
