/**
 * Graceful shutdown under load, in process (HttpService.shutdown, what SIGTERM runs): new
 * requests are refused, in-flight calls finish within the drain deadline or are cancelled at
 * it (their sandboxes stopped), the runtime is closed, and every client call settles.
 * The SIGTERM path of the real CLI process is in sigterm.test.ts.
 */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {connectHttp, errorCode, fakeRuntime, KEYS, startService, useFixtures} from './support.ts';

const fixtures = useFixtures();

const CONFIG = {apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}], grants: [{principal: 'key:alice', packages: '*'}]};
/** Client-side hazard bound on each call: a call must settle long before this. */
const CALL_BOUND = {timeout: 15_000};

/** Resolves once `condition()` holds, polling every 20 ms; rejects after `ms` (a busy host is slow, not stuck). */
async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Runs `body` with a service under load, and whatever it asserts, shuts the service down
 * (idempotent) and settles every client call afterwards, so a failed assertion cannot leave a
 * listener, a runtime or a client that keeps the test process alive.
 */
async function withLoadedService(body: (ctx: {env: Awaited<ReturnType<typeof fakeRuntime>>; service: Awaited<ReturnType<typeof startService>>; load: Awaited<ReturnType<typeof startLoad>>}) => Promise<void>): Promise<void> {
  const env = await fakeRuntime(fixtures);
  const service = await startService(env.runtime, CONFIG);
  let load: Awaited<ReturnType<typeof startLoad>> | undefined;
  try {
    load = await startLoad(service.url);
    await until(() => env.backend.running >= 4, 20_000, 'the four spin calls running');
    await body({env, service, load});
  } finally {
    await service.shutdown({drainMs: 0}).catch(() => undefined);
    await load?.settle().catch(() => undefined);
  }
}

async function startLoad(url: string) {
  const clients = await Promise.all([0, 1, 2, 3].map((i) => connectHttp(url, {token: KEYS.alice, era: i % 2 === 0 ? 'legacy' : 'modern'})));
  const outcomes: Array<{kind: 'spin' | 'double'; settled: 'result' | 'error'; code?: string}> = [];
  const spins = clients.map(({client}) => client.callTool({name: 'fixture__spin', arguments: {}}, CALL_BOUND)
    .then((r) => outcomes.push({kind: 'spin', settled: 'result', ...(errorCode(r) ? {code: errorCode(r)} : {})}), () => outcomes.push({kind: 'spin', settled: 'error'})));
  let stop = false;
  const doubles = clients.map(async ({client}) => {
    while (!stop) {
      await client.callTool({name: 'fixture__double', arguments: {x: 1}}, CALL_BOUND)
        .then((r) => outcomes.push({kind: 'double', settled: 'result', ...(errorCode(r) ? {code: errorCode(r)} : {})}), () => {
          outcomes.push({kind: 'double', settled: 'error'});
          stop = true;
        });
    }
  });
  return {
    clients,
    outcomes,
    settle: async () => {
      stop = true;
      await Promise.all([...spins, ...doubles]);
      await Promise.all(clients.map((c) => c.close()));
    },
  };
}

test('shutdown with a long enough drain deadline lets in-flight calls finish with their own results', {timeout: 60_000}, async () => {
  await withLoadedService(async ({env, service, load}) => {
    await service.shutdown({drainMs: 5000});
    await load.settle();
    const spins = load.outcomes.filter((o) => o.kind === 'spin');
    assert.equal(spins.length, 4);
    assert.ok(spins.every((o) => o.settled === 'result' && o.code === 'TIMEOUT'), `spins ended with their own results: ${JSON.stringify(spins)}`);
    assert.ok(load.outcomes.filter((o) => o.kind === 'double' && o.settled === 'result').every((o) => o.code === undefined), 'double calls that got an answer succeeded');
    assert.equal(env.backend.running, 0, 'no sandbox left running');
    assert.equal(env.closedCount(), 1, 'the runtime (backends, sandboxes) was closed');
    await assert.rejects(fetch(`${service.origin}/healthz`), 'the listener is closed');
  });
});

test('shutdown cancels calls still running at the drain deadline: sandboxes stopped, every client call settles', {timeout: 60_000}, async () => {
  await withLoadedService(async ({env, service, load}) => {
    const started = performance.now();
    await service.shutdown({drainMs: 100});
    assert.ok(performance.now() - started < 1900, 'shutdown did not wait for the 2 s spins');
    assert.equal(env.backend.running, 0, 'no sandbox left running');
    assert.ok(env.backend.cancelled >= 4, `the spins were cancelled (${env.backend.cancelled})`);
    assert.equal(env.backend.timedOut, 0);
    assert.equal(env.closedCount(), 1);
    await load.settle();
    const spins = load.outcomes.filter((o) => o.kind === 'spin');
    assert.equal(spins.length, 4, 'every spin call settled on the client');
    assert.ok(spins.every((o) => o.settled === 'result' && o.code === 'CANCELLED'), `each got its own CANCELLED result: ${JSON.stringify(spins)}`);
  });
});

test('a call arriving while draining is refused (503 or connection refused); the call in flight still gets its result', {timeout: 30_000}, async () => {
  const env = await fakeRuntime(fixtures);
  const service = await startService(env.runtime, CONFIG);
  const {client, close} = await connectHttp(service.url, {token: KEYS.alice, era: 'modern'});
  try {
    const spin = client.callTool({name: 'fixture__spin', arguments: {}}, CALL_BOUND);
    await until(() => env.backend.running >= 1, 20_000, 'the spin call running');
    const stopping = service.shutdown({drainMs: 3000});
    await new Promise((resolve) => setTimeout(resolve, 50));
    const late = await client.callTool({name: 'fixture__double', arguments: {x: 1}}, CALL_BOUND).then(() => 'accepted', (err: Error) => err.message);
    assert.notEqual(late, 'accepted', 'no new call is accepted while draining');
    assert.match(late, /503|shutting down|fetch failed|ECONNREFUSED/i, 'refused: 503 on a busy keep-alive connection, or no connection at all');
    const spun = await spin;
    assert.equal(errorCode(spun), 'TIMEOUT', 'the call in flight still got its own result');
    await stopping;
  } finally {
    await service.shutdown({drainMs: 0}).catch(() => undefined);
    await close();
  }
});
