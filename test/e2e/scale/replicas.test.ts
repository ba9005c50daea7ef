/**
 * Three replicas of the real CLI (`toolcell serve --http`, one config with `redis`) behind
 * HAProxy (deploy/haproxy/haproxy.cfg, ports filled in through its environment variables), one
 * redis-server; real MCP clients through the balancer. A principal's quota holds across the
 * replicas; a 2025 session survives its requests landing on different replicas; SIGKILL of one
 * replica under load fails its calls cleanly while the others go on, its in-flight slots come
 * back after the lease and none of its sandboxes outlives it; a Redis restart mid-run is
 * recovered without restarting anything.
 * Skipped when redis-server or haproxy is missing, unless CI is set (then it fails).
 */
import assert from 'node:assert/strict';
import {execFileSync, spawn, type ChildProcess} from 'node:child_process';
import {after, before, describe, test} from 'node:test';
import {Redis} from 'ioredis';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {dockerAvailable} from '../../support/docker.ts';
import {childPids} from '../../support/mcp-stdio.ts';
import {isAlive} from '../../support/processes.ts';
import {freePort, missingPrograms, startRedis, stopChild, waitForPort, type TestRedis} from '../../support/redis-server.ts';
import {tempDir} from '../../support/temp.ts';
import {CLI, connectHttp, errorCode, REPO} from '../http/support.ts';

const skip = missingPrograms('redis-server', 'haproxy');
/** With an engine and toolcell/shell, the replicas also serve one container tool (`scale-container__nap`). */
const containers = skip ? false : await dockerAvailable({images: ['toolcell/shell']});
/** Argument of the container tool: unusual enough to find its container among other tests'. */
const NAP_SECONDS = '23';

const KEYS = {
  alice: 'alice-scale-key-0123456789abcdef0123456789',
  bob: 'bob-scale-key-0123456789abcdef0123456789abc',
  carol: 'carol-scale-key-0123456789abcdef0123456789a',
};
/** alice: small bucket (quota test); bob: the load, in-flight cap 6; lease 3 s. */
const ALICE = {ratePerSec: 0.2, burst: 6};
const BOB_IN_FLIGHT = 6;
const LEASE_MS = 3000;
const CALL_TIMEOUT_MS = 15_000;

interface Replica {port: number; child?: ChildProcess; stderr: string}

let tmp: Awaited<ReturnType<typeof tempDir>>;
let redis: TestRedis | undefined;
let haproxy: ChildProcess | undefined;
let lbUrl = '';
let configFile = '';
const replicas: Replica[] = [];
let probe: Redis | undefined;

async function writeCluster(redisUrl: string): Promise<void> {
  const object = (properties: Record<string, unknown>, required: string[]) => ({type: 'object', properties, required, additionalProperties: false});
  await tmp.write('profiles/scale-fast.json', {name: 'scale-fast', backend: 'isolate', limits: {timeoutMs: 5000, memoryMb: 32, outputBytes: 65536}});
  await tmp.write('tools/scale/toolcell.json', {
    name: 'scale', version: '1.0.0', description: 'scale-out fixtures',
    tools: [
      {name: 'double', description: 'Doubles x.', inputSchema: object({x: {type: 'number'}}, ['x']), profile: 'scale-fast', isolate: {entry: 'double.js'}},
      {name: 'work', description: 'Busy for ms milliseconds.', inputSchema: object({ms: {type: 'integer', minimum: 0, maximum: 3000}}, ['ms']), profile: 'scale-fast', isolate: {entry: 'work.js'}},
    ],
  });
  await tmp.write('tools/scale/double.js', 'export default (a) => a.x * 2;\n');
  await tmp.write('tools/scale/work.js', 'export default (a) => { const end = Date.now() + a.ms; while (Date.now() < end) {} return "done"; };\n');
  await tmp.write('profiles/scale-nap.json', {name: 'scale-nap', backend: 'container', limits: {timeoutMs: 25_000, memoryMb: 32, cpus: 0.25, pids: 8, outputBytes: 1024},
    network: 'none', filesystem: {readOnlyRoot: true, tmpfs: {}, mounts: []}, commands: ['sleep'], runtime: 'runc'});
  await tmp.write('tools-container/scale-container/toolcell.json', {
    name: 'scale-container', version: '1.0.0', description: 'a container tool for the SIGKILL test',
    tools: [{name: 'nap', description: 'Sleeps s seconds in a container.', inputSchema: object({s: {type: 'string', pattern: '^[0-9]{1,2}$'}}, ['s']), profile: 'scale-nap',
      container: {image: 'toolcell/shell', command: ['sleep', '{{s}}']}}],
  });
  configFile = await tmp.write('service.json', {
    apiKeys: Object.entries(KEYS).map(([name, key]) => ({name, sha256: hashApiKey(key)})),
    grants: Object.keys(KEYS).map((name) => ({principal: `key:${name}`, packages: '*'})),
    quotas: {ratePerSec: 1000, burst: 1000, maxInFlight: 8, principals: {'key:alice': ALICE, 'key:bob': {maxInFlight: BOB_IN_FLIGHT}}},
    redis: {url: redisUrl, failMode: 'closed', leaseMs: LEASE_MS},
  });
}

/** Starts (or restarts) a replica on its port; resolves once it prints its endpoint. */
async function startReplica(replica: Replica): Promise<void> {
  replica.stderr = '';
  const child = spawn(process.execPath, ['--no-node-snapshot', CLI, 'serve', '--http', `127.0.0.1:${replica.port}`, '--config', configFile,
    '--tools', `${tmp.path}/tools`, '--profiles', `${tmp.path}/profiles`, '--no-bundled-tools', '--no-bundled-profiles', '--audit-log', 'off',
    ...(containers ? ['--tools', `${tmp.path}/tools-container`] : ['--no-containers'])],
  {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, stdio: ['ignore', 'ignore', 'pipe']});
  replica.child = child;
  child.stderr!.on('data', (chunk: Buffer) => {
    replica.stderr = (replica.stderr + chunk.toString()).slice(-20_000);
  });
  const deadline = Date.now() + 30_000;
  while (!/serving MCP over Streamable HTTP/.test(replica.stderr)) {
    if (child.exitCode !== null) throw new Error(`replica on ${replica.port} exited: ${replica.stderr}`);
    if (Date.now() > deadline) throw new Error(`replica on ${replica.port} not serving after 30 s: ${replica.stderr}`);
    await sleep(50);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!(await Promise.resolve().then(check).catch(() => false))) {
    if (Date.now() > end) assert.fail(`${what}: not within ${deadlineMs} ms`);
    await sleep(100);
  }
}

async function readyz(port: number): Promise<{status: number; body: Record<string, unknown>}> {
  const response = await fetch(`http://127.0.0.1:${port}/readyz`, {signal: AbortSignal.timeout(5000)});
  return {status: response.status, body: await response.json() as Record<string, unknown>};
}

/** One call through the balancer on a fresh per-request (2026) client: `ok`, the toolcell error code, or `error:` and the message. */
async function callThroughLb(token: string, name: string, args: Record<string, unknown>): Promise<string> {
  let connection: Awaited<ReturnType<typeof connectHttp>> | undefined;
  try {
    connection = await connectHttp(lbUrl, {token, era: 'modern'});
    const result = await connection.client.callTool({name, arguments: args}, {timeout: CALL_TIMEOUT_MS});
    return errorCode(result) ?? (result.isError ? 'isError' : 'ok');
  } catch (err) {
    return `error:${(err as Error).message}`;
  } finally {
    await connection?.close();
  }
}

/** Deadline keeper processes of the replicas, stopped by PID in after(). */
const keepers: number[] = [];

function commandOf(pid: number): string {
  try {
    return execFileSync('ps', ['-o', 'args=', '-p', String(pid)], {encoding: 'utf8'});
  } catch {
    return '';
  }
}

/** Ids of containers (any state) running this test's nap command. */
function napContainers(): string[] {
  const out = execFileSync('docker', ['ps', '-a', '--no-trunc', '--filter', 'label=toolcell.managed=true', '--format', '{{.ID}} {{.Command}}'], {encoding: 'utf8', timeout: 10_000});
  return out.split('\n').filter((line) => line.includes(`sleep ${NAP_SECONDS}`)).map((line) => line.split(' ')[0]!);
}

/** In-flight leases of a principal in Redis that have not expired (Redis clock). */
async function sharedInFlight(principal: string): Promise<number> {
  const [s, us] = await probe!.time();
  return probe!.zcount(`toolcell:quota:${principal}:leases`, `(${Number(s) * 1000 + Math.floor(Number(us) / 1000)}`, '+inf');
}

describe('three replicas behind HAProxy with shared state in Redis', {skip, timeout: 240_000}, () => {
  before(async () => {
    tmp = await tempDir('toolcell-scale-');
    redis = await startRedis();
    probe = new Redis(redis.url, {maxRetriesPerRequest: 1, retryStrategy: (n) => Math.min(100 * n, 1000)});
    probe.on('error', () => {});
    await writeCluster(redis.url);
    for (let i = 0; i < 3; i++) replicas.push({port: await freePort(), stderr: ''});
    await Promise.all(replicas.map((r) => startReplica(r)));
    const lbPort = await freePort();
    haproxy = spawn('haproxy', ['-f', `${REPO}deploy/haproxy/haproxy.cfg`, '-db'], {
      env: {...process.env, TOOLCELL_LB_BIND: `127.0.0.1:${lbPort}`, TOOLCELL_LB_HOST: '127.0.0.1',
        ...Object.fromEntries(replicas.map((r, i) => [`TOOLCELL_REPLICA_${i + 1}`, `127.0.0.1:${r.port}`]))},
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    await waitForPort(lbPort);
    lbUrl = `http://127.0.0.1:${lbPort}/mcp`;
    for (const r of replicas) await until(`replica ${r.port} ready`, async () => (await readyz(r.port)).status === 200, 20_000);
  });

  after(async () => {
    await stopChild(haproxy);
    for (const r of replicas) if (r.child?.pid !== undefined) keepers.push(...childPids(r.child.pid).filter((pid) => /keeper\.[jt]s/.test(commandOf(pid))));
    await Promise.all(replicas.map((r) => stopChild(r.child)));
    probe?.disconnect();
    // A failed run must not leave this test's container behind (only ours: matched by its command).
    if (containers) for (const id of napContainers()) execFileSync('docker', ['rm', '-f', id], {timeout: 20_000, stdio: 'ignore'});
    await redis?.dispose();
    await tmp?.dispose();
    for (const pid of keepers) if (isAlive(pid)) try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
  });

  // invariant: scale:quota:shared
  test('a principal\'s token bucket holds across the three replicas (tolerance: burst + rate x elapsed, nothing more)', async () => {
    const started = Date.now();
    const outcomes: string[] = [];
    // 18 calls, round robin over 3 replicas: with per-process buckets each replica would admit 6.
    for (let i = 0; i < 3 * ALICE.burst; i++) outcomes.push(await callThroughLb(KEYS.alice, 'scale__double', {x: i}));
    const elapsedSec = (Date.now() - started) / 1000;
    const ok = outcomes.filter((o) => o === 'ok').length;
    assert.ok(outcomes.every((o) => o === 'ok' || o === 'RATE_LIMITED'), outcomes.join(', '));
    assert.ok(ok >= ALICE.burst, `the burst is admitted: ${outcomes.join(', ')}`);
    assert.ok(ok <= ALICE.burst + Math.ceil(ALICE.ratePerSec * elapsedSec), `at most burst + refill across all replicas, got ${ok} in ${elapsedSec} s: ${outcomes.join(', ')}`);
  });

  // invariant: scale:sessions:shared
  test('a 2025 session survives its requests landing on different replicas (real SDK client through the balancer)', async () => {
    const {client, transport, close} = await connectHttp(lbUrl, {token: KEYS.carol, era: 'legacy'});
    try {
      assert.ok(transport.sessionId, 'a 2025 session was opened');
      // Round robin: consecutive requests go to different replicas.
      for (let i = 0; i < 6; i++) {
        const result = await client.callTool({name: 'scale__double', arguments: {x: i}}, {timeout: CALL_TIMEOUT_MS});
        assert.deepEqual(result.content, [{type: 'text', text: String(i * 2)}]);
      }
      assert.equal((await client.listTools()).tools.length, containers ? 3 : 2);
    } finally {
      await close();
    }
  });

  test('SIGKILL of one replica under load: its calls fail cleanly, the others go on, its slots return after the lease, no sandbox outlives it', async () => {
    const victim = replicas[1]!;
    const outcomes: Array<{outcome: string; started: number; ms: number}> = [];
    let stop = false;
    const loops = Array.from({length: BOB_IN_FLIGHT}, async () => {
      while (!stop) {
        const started = Date.now();
        const outcome = await callThroughLb(KEYS.bob, 'scale__work', {ms: 300});
        outcomes.push({outcome, started, ms: Date.now() - started});
        if (outcome === 'RATE_LIMITED') await sleep(200);
      }
    });
    try {
      await sleep(2000);
      let nap: Promise<string> | undefined;
      if (containers) {
        // Straight to the victim: one container call in flight when it dies.
        nap = (async () => {
          const {client, close} = await connectHttp(`http://127.0.0.1:${victim.port}/mcp`, {token: KEYS.carol, era: 'modern'});
          try {
            const r = await client.callTool({name: 'scale-container__nap', arguments: {s: NAP_SECONDS}}, {timeout: CALL_TIMEOUT_MS});
            return errorCode(r) ?? 'ok';
          } catch (err) {
            return `error:${(err as Error).message}`;
          } finally {
            await close();
          }
        })();
        await until('the container tool runs', () => napContainers().length === 1, 20_000);
      }
      // Its isolate workers; its container deadline keeper (detached on purpose: it enforces the
      // deadlines of a dead server's containers, then exits by itself) is stopped in after().
      const children = childPids(victim.child!.pid!);
      const isKeeper = (pid: number) => /keeper\.[jt]s/.test(commandOf(pid));
      keepers.push(...children.filter(isKeeper));
      const workers = children.filter((pid) => !isKeeper(pid));
      assert.ok(workers.length >= 1, 'the victim runs an isolate worker');
      const killedAt = Date.now();
      victim.child!.kill('SIGKILL');
      await sleep(4000);
      stop = true;
      await Promise.all(loops);
      // Clean failures: every call settled, none hit the client's own timeout.
      assert.ok(outcomes.every((o) => o.ms < CALL_TIMEOUT_MS + 2000 && !/timed out/i.test(o.outcome)), JSON.stringify(outcomes.filter((o) => o.ms >= CALL_TIMEOUT_MS)));
      const after = outcomes.filter((o) => o.started > killedAt + 1500);
      assert.ok(after.some((o) => o.outcome === 'ok'), `calls after the kill succeed on the other replicas: ${after.map((o) => o.outcome).join(', ')}`);
      assert.ok(outcomes.every((o) => o.outcome === 'ok' || o.outcome === 'RATE_LIMITED' || o.outcome.startsWith('error:') || o.outcome === 'BACKEND_UNAVAILABLE'), outcomes.map((o) => o.outcome).join(', '));
      // The victim's leases expire: no renewal after its death.
      await until('the dead replica\'s in-flight slots come back', async () => (await sharedInFlight('key:bob')) === 0, LEASE_MS + 5000);
      const burst = await Promise.all(Array.from({length: BOB_IN_FLIGHT}, () => callThroughLb(KEYS.bob, 'scale__work', {ms: 200})));
      assert.ok(burst.filter((o) => o === 'ok').length >= BOB_IN_FLIGHT - 1, `a full in-flight allowance is usable again: ${burst.join(', ')}`);
      await until('the victim\'s isolate workers are gone', () => workers.every((pid) => !isAlive(pid)), 10_000);
      await startReplica(victim);
      await until('the restarted replica is ready', async () => (await readyz(victim.port)).status === 200, 20_000);
      assert.deepEqual(workers.filter((pid) => isAlive(pid)), [], 'no sandbox of the killed instance is left after its restart');
      if (nap !== undefined) {
        assert.match(await nap, /^error:/, 'the container call on the killed replica failed (connection lost), it did not hang');
        // The restarted replica's start-up reap removes containers whose owner process is gone
        // (or the dead replica's deadline keeper does, at the call's deadline).
        await until('the killed replica\'s container is removed', () => napContainers().length === 0, 30_000);
      }
      assert.equal(await callThroughLb(KEYS.bob, 'scale__double', {x: 1}), 'ok');
    } finally {
      stop = true;
      await Promise.all(loops);
      // A restart failed or was not reached: leave a running replica for the next test.
      if (victim.child === undefined || victim.child.exitCode !== null || victim.child.signalCode !== null) await startReplica(victim).catch(() => {});
    }
  });

  // invariant: scale:redis:fail-closed
  test('Redis restarted mid-run: calls are refused (fail-closed) while it is down, and the service recovers without a restart', async () => {
    const pids = replicas.map((r) => r.child!.pid);
    assert.equal(await callThroughLb(KEYS.carol, 'scale__double', {x: 2}), 'ok');
    await redis!.stop();
    try {
      await until('a replica reports Redis unreachable', async () => {
        const {status, body} = await readyz(replicas[0]!.port);
        return status === 503 && (body.sharedState as {admitting?: string} | undefined)?.admitting === 'refused';
      }, 10_000);
      const refused = await callThroughLb(KEYS.carol, 'scale__double', {x: 3});
      assert.notEqual(refused, 'ok', 'no call is admitted without the shared quota state');
      assert.ok(refused === 'BACKEND_UNAVAILABLE' || refused.startsWith('error:'), refused);
    } finally {
      await redis!.start();
    }
    await until('calls through the balancer succeed again', async () => (await callThroughLb(KEYS.carol, 'scale__double', {x: 4})) === 'ok', 20_000);
    // The balancer's call proves one replica reconnected; each replica reconnects on its own
    // retry schedule, so each gets its own deadline to report ready again.
    for (const r of replicas) {
      await until(`replica on port ${r.port} reports ready again`, async () => (await readyz(r.port)).status === 200, 20_000);
    }
    assert.deepEqual(replicas.map((r) => r.child!.pid), pids, 'no replica was restarted');
    const logs = replicas.map((r) => r.stderr).join('\n');
    assert.match(logs, /Redis unreachable|Redis connection closed/, 'the outage was logged');
    assert.ok(!logs.includes(redis!.password), 'the Redis password never reaches the log');
  });
});
