// `npm run bench:hosted`: a hosted MCP server's tool call (@modelcontextprotocol/server-everything, `echo`)
// measured in one run on this machine against the ways people run the same server today:
//   floor        the same npm version installed in a temp dir, started once as users do (`node <its bin>`,
//                one long-lived unsandboxed process over stdio): p50/p95 per call
//   pooled       through `toolcell serve` with the pre-initialized pool on: paced (one call, then a pause
//                so that the pool refills) and back to back
//   cold         through `toolcell serve`, pool off: start, handshake, call, removal on every call
//   docker run   `docker run --rm -i` of the same image per call with the profile's limits (the per-call
//                model of Docker's MCP gateway): handshake + call + exit, timed per phase
//   rss          toolcell's server RSS idle with 8 hosted servers loaded (8 packages of the same image
//                under different names), pool off and pool 1 (8 members started and initialized)
// The only outside access is the npm registry, once, before anything is measured: `toolcell add` (which
// builds the image) and `npm install` of the floor. Everything else stays on this machine. Prints a table,
// writes bench/results/hosted-latest.json (and .md). Removes its temp dirs, containers and the image it
// built (BENCH_HOSTED_KEEP_IMAGE=1 keeps the image). BENCH_QUICK=1 for a short run.
import {execFile, spawn} from 'node:child_process';
import {cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {cpus, loadavg, tmpdir, totalmem} from 'node:os';
import {join} from 'node:path';
import {promisify} from 'node:util';
import {fileURLToPath} from 'node:url';
import {Client} from '@modelcontextprotocol/client';
import {StdioClientTransport} from '@modelcontextprotocol/client/stdio';

const root = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);
const VERSION = process.env.BENCH_HOSTED_VERSION ?? '2026.8.31';
const PKG = '@modelcontextprotocol/server-everything';
const quick = process.env.BENCH_QUICK === '1';
const N_FLOOR = quick ? 100 : 500;
const N_POOLED = quick ? 10 : 30;
const N_COLD = quick ? 8 : 20;
const N_DOCKER = quick ? 8 : 20;
/** Pause before each paced call (ms): long enough for the pool to start and initialize a replacement. */
const PAUSE_MS = Number(process.env.BENCH_HOSTED_PAUSE_MS ?? 2500);
const POOL = 2;
/** Deadline for one docker run (ms): a call that takes longer is killed and counted as failed. */
const DOCKER_DEADLINE_MS = 60_000;
const NAME = `bhost${process.pid}`;
const IMAGE = `toolcell/srv-${NAME}:${VERSION}`;

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
function stats(samples) {
  const s = [...samples].sort((a, b) => a - b);
  return {n: s.length, p50: round(pct(s, 50)), p95: round(pct(s, 95)), min: round(s[0]), max: round(s[s.length - 1])};
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => process.stderr.write(`${s}\n`);
const rssMb = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? round(Number(m[1]) / 1024) : NaN;
};

const work = mkdtempSync(join(tmpdir(), 'toolcell-bench-hosted-'));
const started = new Set(); // pids of processes this script started and has not seen exit
const dockerNames = new Set(); // names of `docker run` containers this script started
const results = {
  machine: {cpus: cpus().length, model: cpus()[0]?.model, memoryGb: round(totalmem() / 2 ** 30), node: process.version},
  at: new Date().toISOString(),
  server: `${PKG}@${VERSION}`,
  tool: 'echo',
  loadAvgStart: loadavg().map((x) => round(x, 2)),
};

async function connect(command, args, env = {}) {
  const transport = new StdioClientTransport({command, args, env: {...process.env, TOOLCELL_LOG_LEVEL: 'error', ...env}, stderr: 'pipe', cwd: root});
  transport.stderr?.on('data', () => {});
  const client = new Client({name: 'bench-hosted', version: '1.0.0'});
  await client.connect(transport);
  const pid = transport.pid;
  started.add(pid);
  return {client, pid, close: async () => {
    await client.close();
    // The SDK ends stdin, then signals; make sure the process is gone before the next phase.
    for (let i = 0; i < 100 && alive(pid); i++) await sleep(100);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    started.delete(pid);
  }};
}
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function echo(client, name, i) {
  const r = await client.callTool({name, arguments: {message: `m${i}`}});
  if (r.isError || r.content?.[0]?.text !== `Echo: m${i}`) throw new Error(`${name} failed: ${JSON.stringify(r).slice(0, 500)}`);
}
async function timedCalls(client, name, n, pauseMs = 0) {
  const lat = [];
  for (let i = 0; i < n; i++) {
    if (pauseMs) await sleep(pauseMs);
    const t = performance.now();
    await echo(client, name, i);
    lat.push(performance.now() - t);
  }
  return lat;
}

const serveArgs = (toolsDir, pool) => ['--no-node-snapshot', '--max-semi-space-size=4', '--max-old-space-size=512', 'dist/cli.js', 'serve',
  '--no-bundled-tools', '--tools', toolsDir, '--audit-log', 'off', '--container-pool', String(pool)];

/** One `docker run --rm -i` per call: initialize, initialized, tools/call, stdin closed, exit (and removal, which `--rm` waits for). */
function dockerRunCall(command, i) {
  const name = `${NAME}-run-${i}`;
  dockerNames.add(name);
  const args = ['run', '--rm', '-i', '--name', name, '--network', 'none', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
    '--user', '65534:65534', '--memory', '384m', '--memory-swap', '384m', '--cpus', '1', '--pids-limit', '64',
    '--tmpfs', '/tmp:rw,noexec,nosuid,size=64m', IMAGE, ...command];
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('docker', args, {stdio: ['pipe', 'pipe', 'ignore']});
    started.add(child.pid);
    const phases = {};
    let buf = '';
    const send = (m) => child.stdin.write(`${JSON.stringify(m)}\n`);
    const timer = setTimeout(() => child.kill('SIGKILL'), DOCKER_DEADLINE_MS);
    child.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let m;
        try {
          m = JSON.parse(line);
        } catch {
          continue;
        }
        if (m.id === 1) {
          phases.handshakeMs = performance.now() - t0;
          send({jsonrpc: '2.0', method: 'notifications/initialized'});
          send({jsonrpc: '2.0', id: 2, method: 'tools/call', params: {name: 'echo', arguments: {message: `m${i}`}}});
        } else if (m.id === 2) {
          phases.callMs = performance.now() - t0 - phases.handshakeMs;
          if (m.result?.content?.[0]?.text !== `Echo: m${i}`) phases.bad = line.slice(0, 300);
          child.stdin.end();
        }
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      started.delete(child.pid);
      dockerNames.delete(name);
      const totalMs = performance.now() - t0;
      if (phases.callMs === undefined || phases.bad) return reject(new Error(`docker run call ${i} failed (exit ${code}) ${phases.bad ?? ''}`));
      resolve({totalMs, handshakeMs: phases.handshakeMs, callMs: phases.callMs, exitMs: totalMs - phases.handshakeMs - phases.callMs});
    });
    send({jsonrpc: '2.0', id: 1, method: 'initialize', params: {protocolVersion: '2025-06-18', capabilities: {}, clientInfo: {name: 'bench', version: '1'}}});
  });
}

async function cleanup() {
  for (const pid of started) if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (const name of dockerNames) await run('docker', ['rm', '-f', name]).catch(() => undefined);
  if (process.env.BENCH_HOSTED_KEEP_IMAGE !== '1') await run('docker', ['rmi', IMAGE]).catch(() => undefined);
  rmSync(work, {recursive: true, force: true});
}

try {
  // 0. set-up: the only outside access (npm registry), before anything is measured.
  log(`add: toolcell add npm:${PKG}@${VERSION} --name ${NAME} (builds ${IMAGE}) …`);
  const one = join(work, 'one');
  const eight = join(work, 'eight');
  mkdirSync(one);
  mkdirSync(eight);
  await run(process.execPath, ['--no-node-snapshot', 'dist/cli.js', 'add', `npm:${PKG}@${VERSION}`, '--name', NAME, '--tools', one, '--yes'],
    {cwd: root, env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, timeout: 600_000, maxBuffer: 64 * 2 ** 20});
  const manifest = JSON.parse(readFileSync(join(one, NAME, 'toolcell.json'), 'utf8'));
  // 8 packages of the same image under different names (the name is not part of any pin).
  for (let k = 0; k < 8; k++) {
    cpSync(join(one, NAME), join(eight, `${NAME}k${k}`), {recursive: true});
    writeFileSync(join(eight, `${NAME}k${k}`, 'toolcell.json'), `${JSON.stringify({...manifest, name: `${NAME}k${k}`}, null, 2)}\n`);
  }
  log(`floor: npm install ${PKG}@${VERSION} in a temp dir …`);
  const floorDir = join(work, 'floor');
  mkdirSync(floorDir);
  await run('npm', ['install', '--prefix', floorDir, '--no-audit', '--no-fund', '--ignore-scripts', `${PKG}@${VERSION}`], {timeout: 600_000});
  const floorBin = join(floorDir, 'node_modules', PKG, JSON.parse(readFileSync(join(floorDir, 'node_modules', PKG, 'package.json'), 'utf8')).bin?.['mcp-server-everything'] ?? 'dist/index.js');

  // 1. the floor: one long-lived unsandboxed server, as desktop clients start it today.
  log('floor: node <bin>, one long-lived process over stdio …');
  {
    const s = await connect(process.execPath, [floorBin]);
    try {
      await timedCalls(s.client, 'echo', 20);
      results.floor = stats(await timedCalls(s.client, 'echo', N_FLOOR));
    } finally {
      await s.close();
    }
  }

  // 2. toolcell, pool on: paced and back to back.
  log(`pooled: toolcell serve --container-pool ${POOL}, paced (${PAUSE_MS} ms pause) and back to back …`);
  {
    const s = await connect(process.execPath, serveArgs(one, POOL));
    try {
      const tool = `${NAME}__echo`;
      await sleep(PAUSE_MS * 2); // let the pool fill once
      await timedCalls(s.client, tool, 2, PAUSE_MS);
      results.pooledPaced = {...stats(await timedCalls(s.client, tool, N_POOLED, PAUSE_MS)), pauseMs: PAUSE_MS, pool: POOL};
      results.pooledBackToBack = {...stats(await timedCalls(s.client, tool, N_POOLED)), pool: POOL};
    } finally {
      await s.close();
    }
  }

  // 3. toolcell, pool off.
  log('cold: toolcell serve --container-pool 0 …');
  {
    const s = await connect(process.execPath, serveArgs(one, 0));
    try {
      const tool = `${NAME}__echo`;
      await timedCalls(s.client, tool, 2);
      results.cold = stats(await timedCalls(s.client, tool, N_COLD));
    } finally {
      await s.close();
    }
  }

  // 4. docker run --rm -i per call, with the profile's limits.
  log('docker run --rm -i per call …');
  {
    const phases = [];
    await dockerRunCall(manifest.server.command, 'warm');
    for (let i = 0; i < N_DOCKER; i++) phases.push(await dockerRunCall(manifest.server.command, i));
    results.dockerRun = {...stats(phases.map((p) => p.totalMs)),
      phasesP50: {startAndHandshakeMs: stats(phases.map((p) => p.handshakeMs)).p50, callMs: stats(phases.map((p) => p.callMs)).p50,
        exitAndRemovalMs: stats(phases.map((p) => p.exitMs)).p50}};
  }

  // 4b. what the engine costs per server: a hosted server is a long-running process, so its removal after
  // the call is a kill of a running container, then the removal (off the call's path since the result
  // returns first); timed here with the docker CLI on started, idle servers, beside create and start.
  log('engine: create, start and rm -f of an idle started server …');
  {
    const create = [], start = [], rmf = [];
    for (let i = 0; i < (quick ? 3 : 6); i++) {
      const name = `${NAME}-prof-${i}`;
      dockerNames.add(name);
      let t = performance.now();
      await run('docker', ['create', '-i', '--name', name, '--network', 'none', IMAGE, ...manifest.server.command]);
      create.push(performance.now() - t);
      t = performance.now();
      await run('docker', ['start', name]);
      start.push(performance.now() - t);
      await sleep(3000);
      t = performance.now();
      await run('docker', ['rm', '-f', name]);
      rmf.push(performance.now() - t);
      dockerNames.delete(name);
    }
    results.engine = {createP50Ms: stats(create).p50, startP50Ms: stats(start).p50, rmForceRunningP50Ms: stats(rmf).p50, rmForceRunning: stats(rmf)};
  }

  // 5. RSS idle with 8 hosted servers loaded.
  for (const pool of [0, 1]) {
    log(`rss: toolcell serve with 8 hosted servers, pool ${pool} …`);
    const s = await connect(process.execPath, serveArgs(eight, pool));
    try {
      const listed = (await s.client.listTools()).tools.length;
      await echo(s.client, `${NAME}k0__echo`, 0); // one call: the paths a call takes are loaded
      await sleep(pool ? 20_000 : 3000); // pool 1: 8 members started and initialized, then idle
      results[`rssIdle8Pool${pool}`] = {rssMb: rssMb(s.pid), toolsListed: listed, packages: 8, pool};
    } finally {
      await s.close();
    }
  }
} finally {
  results.loadAvgEnd = loadavg().map((x) => round(x, 2));
  await cleanup();
}

const r = results;
r.ratios = {
  pooledPacedP50MinusFloorMs: round(r.pooledPaced.p50 - r.floor.p50),
  dockerRunOverPooledPacedP50: round(r.dockerRun.p50 / r.pooledPaced.p50),
  dockerRunOverPooledBackToBackP50: round(r.dockerRun.p50 / r.pooledBackToBack.p50),
  dockerRunOverColdP50: round(r.dockerRun.p50 / r.cold.p50),
};
r.targets = {
  'pooled paced p50 within 15 ms of the floor': r.ratios.pooledPacedP50MinusFloorMs <= 15,
  'pooled >= 10x faster than docker run --rm -i per call (paced p50)': r.ratios.dockerRunOverPooledPacedP50 >= 10,
  'server RSS idle <= 120 MB with 8 hosted servers (pool off and pool 1)': r.rssIdle8Pool0.rssMb <= 120 && r.rssIdle8Pool1.rssMb <= 120,
};
const row = (name, m) => `| ${name} | ${m.p50} | ${m.p95} | ${m.n} |`;
const table = [
  `Machine: ${r.machine.cpus} vCPU (${r.machine.model}), ${r.machine.memoryGb} GB, Node ${r.machine.node}; ${r.at}; load average at start ${r.loadAvgStart.join(' ')}, at end ${r.loadAvgEnd.join(' ')}`,
  `Server: ${r.server}, tool echo`,
  '',
  '| path | p50 ms | p95 ms | calls |',
  '|---|---|---|---|',
  row('floor: `node <bin>`, one long-lived unsandboxed process (stdio)', r.floor),
  row(`toolcell, pool ${POOL}, paced (${PAUSE_MS} ms between calls): fresh server per call`, r.pooledPaced),
  row(`toolcell, pool ${POOL}, back to back: fresh server per call`, r.pooledBackToBack),
  row('toolcell, pool off: fresh server per call', r.cold),
  row('`docker run --rm -i` per call (handshake + call + exit)', r.dockerRun),
  '',
  `docker run phases (p50): start + initialize ${r.dockerRun.phasesP50.startAndHandshakeMs} ms, call ${r.dockerRun.phasesP50.callMs} ms, exit + removal ${r.dockerRun.phasesP50.exitAndRemovalMs} ms.`,
  `Engine (docker CLI, p50): create ${r.engine.createP50Ms} ms, start ${r.engine.startP50Ms} ms, rm -f of a started idle server ${r.engine.rmForceRunningP50Ms} ms (after a call, off its path: the result returns first).`,
  `Server RSS idle with 8 hosted servers (8 packages of one image): pool off ${r.rssIdle8Pool0.rssMb} MB, pool 1 (8 members ready) ${r.rssIdle8Pool1.rssMb} MB.`,
  `Pooled paced p50 - floor p50 = ${r.ratios.pooledPacedP50MinusFloorMs} ms; docker run p50 / toolcell p50 = ${r.ratios.dockerRunOverPooledPacedP50} (pooled, paced), ${r.ratios.dockerRunOverPooledBackToBackP50} (pooled, back to back), ${r.ratios.dockerRunOverColdP50} (pool off).`,
  '',
  ...Object.entries(r.targets).map(([k, v]) => `- ${v ? 'met' : 'MISSED'}: ${k}`),
].join('\n');
mkdirSync(join(root, 'bench', 'results'), {recursive: true});
const stamp = r.at.replace(/[:.]/g, '-');
writeFileSync(join(root, 'bench', 'results', `hosted-${stamp}.json`), `${JSON.stringify(r, null, 2)}\n`);
writeFileSync(join(root, 'bench', 'results', 'hosted-latest.json'), `${JSON.stringify(r, null, 2)}\n`);
writeFileSync(join(root, 'bench', 'results', 'hosted-latest.md'), `${table}\n`);
process.stdout.write(`${table}\n`);
