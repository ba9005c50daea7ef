/**
 * The real CLI process: `toolcell serve --http 127.0.0.1:0 --config FILE` with the real
 * isolate backend. SIGTERM under load: in-flight calls end cleanly (their own results), no
 * sandbox worker is left behind, exit code 0. Start-up refusals exit 2 with a clear message.
 */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {childPids} from '../../support/mcp-stdio.ts';
import {isAlive} from '../../support/processes.ts';
import {connectHttp, errorCode, KEYS, spawnCli, useFixtures} from './support.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';


const fixtures = useFixtures();

const serve = spawnCli;

async function writeConfig(drainMs: number): Promise<string> {
  const {writeFile} = await import('node:fs/promises');
  const file = `${fixtures.dir}/service-${drainMs}.json`;
  await writeFile(file, JSON.stringify({
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}],
    grants: [{principal: 'key:alice', packages: '*'}],
    quotas: {principals: {'key:alice': {ratePerSec: 10_000, burst: 10_000}}},
    shutdown: {drainMs},
  }));
  return file;
}

async function sigtermUnderLoad(drainMs: number, expectSpin: string): Promise<void> {
  const config = await writeConfig(drainMs);
  const server = await serve(['--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers', '--config', config, '--audit-log', 'off']);
  try {
    const clients = await Promise.all([0, 1, 2, 3].map((i) => connectHttp(server.url, {token: KEYS.alice, era: i % 2 === 0 ? 'legacy' : 'modern'})));
    assert.deepEqual((await clients[0]!.client.callTool({name: 'fixture__double', arguments: {x: 2}})).content, [{type: 'text', text: '4'}]);
    const outcomes: string[] = [];
    const spins = clients.map(({client}) => client.callTool({name: 'fixture__spin', arguments: {}}, {timeout: 20_000})
      .then((r) => outcomes.push(`spin:${errorCode(r) ?? 'ok'}`), (err: Error) => outcomes.push(`spin-error:${err.message}`)));
    let stop = false;
    const doubles = clients.map(async ({client}) => {
      while (!stop) {
        await client.callTool({name: 'fixture__double', arguments: {x: 3}}, {timeout: 20_000})
          .then((r) => outcomes.push(`double:${errorCode(r) ?? 'ok'}`), () => {
            stop = true;
          });
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 400));
    const workers = childPids(server.child.pid!);
    assert.ok(workers.length >= 1, 'the isolate worker process runs');
    server.child.kill('SIGTERM');
    const exit = await Promise.race([server.exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no exit within 20 s')), 20_000))]);
    assert.deepEqual(exit, {code: 0, signal: null}, server.stderr());
    stop = true;
    await Promise.all([...spins, ...doubles]);
    await Promise.all(clients.map((c) => c.close()));
    const spinOutcomes = outcomes.filter((o) => o.startsWith('spin'));
    assert.equal(spinOutcomes.length, 4, 'every in-flight call settled');
    assert.ok(spinOutcomes.every((o) => o === `spin:${expectSpin}`), `in-flight calls ended with their own results: ${spinOutcomes.join(', ')}`);
    assert.ok(outcomes.filter((o) => o.startsWith('double:')).every((o) => o === 'double:ok' || o === 'double:CANCELLED'), outcomes.join(', '));
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(workers.filter((pid) => isAlive(pid)), [], 'no sandbox worker left behind');
    assert.match(server.stderr(), /SIGTERM: shutting down/);
    assert.match(server.stderr(), /toolcell: stopped/);
  } finally {
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
}

test('SIGTERM under load: in-flight calls finish within the drain deadline, no sandbox left behind, exit 0', {timeout: 90_000}, async () => {
  await sigtermUnderLoad(8000, 'TIMEOUT');
});

test('SIGTERM under load with a short drain deadline: in-flight calls end CANCELLED, no sandbox left behind, exit 0', {timeout: 90_000}, async () => {
  await sigtermUnderLoad(200, 'CANCELLED');
});

test('binding a non-loopback address without authentication is refused: exit 2 and a clear message', {timeout: 30_000}, async () => {
  const server = await serve(['--http', '0.0.0.0:0', '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers'], {expectUrl: false});
  const exit = await server.exited;
  assert.equal(exit.code, 2);
  assert.match(server.stderr(), /refusing to listen on 0\.0\.0\.0: binding an address other than loopback requires authentication/);
});

test('an invalid service config and a taken port are refused with exit 2', {timeout: 30_000}, async () => {
  const {writeFile} = await import('node:fs/promises');
  const bad = `${fixtures.dir}/bad.json`;
  await writeFile(bad, JSON.stringify({apiKeys: [{name: 'a', sha256: 'not-a-hash'}]}));
  const invalid = await serve(['--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers', '--config', bad], {expectUrl: false});
  assert.equal((await invalid.exited).code, 2);
  assert.match(invalid.stderr(), /bad\.json.*apiKeys.*sha256/s);

  const first = await serve(['--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers']);
  try {
    const port = new URL(first.url).port;
    const second = await serve(['--http', `127.0.0.1:${port}`, '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir, '--no-containers'], {expectUrl: false});
    assert.equal((await second.exited).code, 2);
    assert.match(second.stderr(), /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
  } finally {
    first.child.kill('SIGTERM');
    assert.equal((await first.exited).code, 0);
  }
});
