// Hazard: a pre-initialized warm pool hands a used server to a second call, serves a member whose
// listing broke its pins, or leaves members behind at shutdown.
// invariant: server:pool:one-call-per-member
// invariant: server:pins:enforced-at-call
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {CallToolResult} from '@modelcontextprotocol/server';
import {probeServer} from '../../../src/backends/server/probe-server.ts';
import {callTool} from '../../../src/frontend/call-tool.ts';
import {localPrincipal} from '../../../src/policy/principal.ts';
import {createRuntime, type Runtime} from '../../../src/runtime.ts';
import {dockerAvailable, managedContainers} from '../../support/docker.ts';
import {toolPins, useFixtureServerImage} from '../../support/fixture-server.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const PROFILE_NAME = `test-pool-${process.pid}`;
const PROFILE = {name: PROFILE_NAME, backend: 'container', limits: {timeoutMs: 4_000, memoryMb: 192, cpus: 0.5, pids: 48, outputBytes: 1_048_576},
  network: 'none', filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: []}, commands: ['node'], runtime: 'runc'};
const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('');
const ours = () => managedContainers(`toolcell.profile=${PROFILE_NAME}`);

/** Waits (at most `ms`) until `cond` holds. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  return cond();
}

describe('hosted servers: pre-initialized warm pool', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let runtime: Runtime | undefined;

  before(async () => {
    dir = await tempDir();
    await dir.write(`profiles/${PROFILE_NAME}.json`, PROFILE);
    const probed = await probeServer({image: image.tag, command: ['/usr/local/bin/node', '/srv/fixture-server.mjs'], args: ['good'],
      profile: PROFILE as never, handshakeTimeoutMs: 20_000});
    const tools = toolPins(probed.tools);
    const pkg = (name: string, args: string[]) => ({name, version: '1.0.0',
      server: {source: 'dir:test/fixtures/servers', image: image.tag, imageId: probed.imageId, command: ['node', '/srv/fixture-server.mjs'], args, transport: 'stdio'},
      profile: PROFILE_NAME, tools});
    await dir.write('tools/pooled/toolcell.json', pkg('pooled', ['good']));
    await dir.write('tools/rugged/toolcell.json', pkg('rugged', ['rugpull', '0']));
    runtime = await createRuntime({toolDirs: [`${dir.path}/tools`], profileDirs: [`${dir.path}/profiles`], audit: 'off', containerPool: 1});
  });
  after(async () => {
    await runtime?.close();
    await dir?.dispose();
  });

  const call = (name: string, args: Record<string, unknown> = {}) =>
    callTool(runtime!, name, args, {principal: localPrincipal, transport: 'stdio', signal: AbortSignal.timeout(60_000)});

  test('members are ready ahead of demand; each serves one call, so back-to-back calls never share a process', async () => {
    assert.ok(await until(() => (runtime!.poolSizes().server ?? 0) >= 2, 60_000), `pool members ready: ${JSON.stringify(runtime!.poolSizes())}`);
    // The member was started (and its handshake done) before the call: its process is older than the wait.
    await new Promise((r) => setTimeout(r, 4_000));
    const first = JSON.parse(text(await call('pooled__whoami'))) as {instance: string; uptimeMs: number};
    assert.ok(first.uptimeMs >= 4_000, `the first call was served by a server started ahead of it (uptime ${first.uptimeMs} ms)`);
    const seen = new Set<string>([first.instance]);
    for (let i = 0; i < 4; i++) {
      const r = await call('pooled__whoami');
      assert.equal(r.isError, undefined, text(r));
      const who = JSON.parse(text(r)) as {instance: string};
      assert.ok(!seen.has(who.instance), 'a server process served a second call');
      seen.add(who.instance);
    }
    // A burst larger than the pool: fresh members or cold servers, never a used one.
    const burst = await Promise.all([1, 2, 3].map(() => call('pooled__whoami')));
    for (const r of burst) {
      const who = JSON.parse(text(r)) as {instance: string};
      assert.ok(!seen.has(who.instance), 'a burst reused a server process');
      seen.add(who.instance);
    }
  });

  test('a pooled member whose listing breaks the pins is refused (DENIED, rule pin); the other tools work', async () => {
    await until(() => (runtime!.poolSizes().server ?? 0) >= 2, 30_000);
    const r = await call('rugged__echo', {message: 'x'});
    assert.equal((r._meta?.['toolcell/error'] as {code?: string; rule?: string})?.rule, 'pin', text(r));
    const add = await call('rugged__add', {a: 2, b: 2});
    assert.equal(text(add), '4');
  });

  test('closing the runtime removes every member: no container of this test is left', async () => {
    await runtime!.close();
    runtime = undefined;
    assert.deepEqual(await ours(), []);
  });
});
