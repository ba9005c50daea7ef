// Hazard: a hosted MCP server under an egress grant gets a route other than toolcell's proxy, its proxy
// session outlives the call (or its container), or a kept server ("lifetime": "principal") keeps a route
// between calls. The fixture server (test/fixtures/servers) tries direct connections; the relays toolcell
// spawns are found as this test process's children. Only loopback (and the docker0 address) is contacted.
// invariant: egress:hosted:only-the-proxy
// invariant: egress:hosted:per-call-session
// invariant: egress:hosted:released-with-container
import assert from 'node:assert/strict';
import {once} from 'node:events';
import {readdirSync, readFileSync} from 'node:fs';
import {createServer, type AddressInfo, type Server} from 'node:net';
import {networkInterfaces} from 'node:os';
import {after, before, describe, test} from 'node:test';
import type {CallToolResult} from '@modelcontextprotocol/server';
import {probeServer} from '../../../src/backends/server/probe-server.ts';
import {parseEgressGrant} from '../../../src/egress/policy.ts';
import {callTool} from '../../../src/frontend/call-tool.ts';
import type {Principal} from '../../../src/policy/principal.ts';
import {createRuntime, type Runtime} from '../../../src/runtime.ts';
import {dockerAvailable, managedContainers} from '../../support/docker.ts';
import {toolPins, useFixtureServerImage} from '../../support/fixture-server.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/node']}) && process.getuid?.() === 0;
const PROFILE_NAME = `test-hosted-egress-${process.pid}`;
const IDLE_MS = 1_500;
const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('');
const ours = () => managedContainers(`toolcell.profile=${PROFILE_NAME}`);
const principal = (id: string): Principal => ({id, kind: 'api-key', scopes: [], packages: '*'});

/** Pids of this process's children that are egress relays (their argv names a session's proxy socket). */
function relays(): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('proxy.sock')) found.push(Number(entry));
    } catch { /* gone meanwhile */ }
  }
  return found;
}

/** Polls until no relay child and no container of this test is left (deadline `ms`), else fails naming what is left. */
async function nothingLeft(ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const left = {relays: relays(), containers: await ours()};
    if (left.relays.length === 0 && left.containers.length === 0) return;
    if (Date.now() > end) assert.fail(`${what}: left ${JSON.stringify(left)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('hosted servers with an egress grant', {skip: !ok && 'no Docker engine or toolcell/node, or not root (the relay needs setns)'}, () => {
  const image = useFixtureServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let runtime: Runtime | undefined;
  const listeners: Server[] = [];
  let hostPort = 0;
  let hostHits = 0;
  let gatewayPort = 0;
  const gateway = networkInterfaces().docker0?.find((a) => a.family === 'IPv4')?.address;

  const listen = async (host: string) => {
    const server = createServer((s) => { hostHits++; s.destroy(); });
    listeners.push(server);
    server.listen(0, host);
    await once(server, 'listening');
    return (server.address() as AddressInfo).port;
  };

  before(async () => {
    hostPort = await listen('127.0.0.1');
    if (gateway) gatewayPort = await listen(gateway);
    dir = await tempDir();
    // The grant names the host port: a direct connection to it must still have no route (only the proxy may go there).
    const profile = {name: PROFILE_NAME, backend: 'container', limits: {timeoutMs: 4_000, memoryMb: 192, cpus: 0.5, pids: 48, outputBytes: 1_048_576},
      network: {egress: {allow: [`127.0.0.1:${hostPort}`]}}, filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: []}, commands: ['node'], runtime: 'runc'};
    await dir.write(`profiles/${PROFILE_NAME}.json`, profile);
    // The probe (as `toolcell add` runs it) under the same grant: it starts with its relay and leaves nothing.
    const probeProfile = {...profile, network: {egress: parseEgressGrant(profile.network.egress)}};
    const probed = await probeServer({image: image.tag, command: ['/usr/local/bin/node', '/srv/fixture-server.mjs'], args: ['good'], profile: probeProfile as never, handshakeTimeoutMs: 20_000});
    assert.deepEqual(relays(), [], 'the probe left no relay');
    const tools = toolPins(probed.tools);
    const server = {source: 'dir:test/fixtures/servers', image: image.tag, imageId: probed.imageId, command: ['node', '/srv/fixture-server.mjs'], args: ['good'], transport: 'stdio'};
    await dir.write('tools/kept/toolcell.json', {name: 'kept', version: '1.0.0', server: {...server, lifetime: 'principal', idleMs: IDLE_MS}, profile: PROFILE_NAME, tools});
    await dir.write('tools/percall/toolcell.json', {name: 'percall', version: '1.0.0', server, profile: PROFILE_NAME, tools});
    // A warm pool is asked for: egress servers must still start cold, bound to their call.
    runtime = await createRuntime({toolDirs: [`${dir.path}/tools`], profileDirs: [`${dir.path}/profiles`], audit: 'off', containerPool: 1});
  });
  after(async () => {
    await runtime?.close();
    await dir?.dispose();
    for (const l of listeners) l.close();
  });

  const call = (who: string, name: string, args: Record<string, unknown> = {}) =>
    callTool(runtime!, name, args, {principal: principal(who), transport: 'http', signal: AbortSignal.timeout(60_000)});

  test('lifetime "call": only the relay on 127.0.0.1:3128; no direct route to a host port (even the granted one) or the docker0 address; nothing left after', async () => {
    assert.equal(text(await call('alice', 'percall__net', {host: '127.0.0.1', port: 3128})), 'connected', 'the relay listens in the server\'s namespace');
    assert.notEqual(text(await call('alice', 'percall__net', {host: '127.0.0.1', port: hostPort})), 'connected');
    if (gateway) assert.notEqual(text(await call('alice', 'percall__net', {host: gateway, port: gatewayPort})), 'connected');
    assert.equal(hostHits, 0, 'no direct connection reached a host listener');
    assert.equal(runtime!.poolSizes().server ?? 0, 0, 'no pre-initialized member of an egress server is kept');
    await nothingLeft(15_000, 'after lifetime-call calls');
  });

  test('a call stopped at its deadline, and a server that exits, leave no relay or container', async () => {
    const spun = await call('alice', 'percall__spin');
    assert.equal((spun._meta?.['toolcell/error'] as {code?: string}).code, 'TIMEOUT');
    await nothingLeft(15_000, 'after a timed-out call');
    const crashed = await call('alice', 'percall__crash');
    assert.equal(crashed.isError, true);
    await nothingLeft(15_000, 'after a server that exited');
    assert.equal(text(await call('alice', 'percall__echo', {message: 'still serving'})), 'still serving');
  });

  test('lifetime "principal": each call gets its relay; the kept server has none between calls; idle end and shutdown leave nothing', async () => {
    assert.equal(text(await call('bob', 'kept__net', {host: '127.0.0.1', port: 3128})), 'connected');
    assert.equal((await ours()).length, 1, 'the principal\'s server is kept');
    assert.deepEqual(relays(), [], 'no relay while the kept server waits: it has no route between calls');
    assert.equal(text(await call('bob', 'kept__remember', {value: 'b1'})), '["b1"]');
    assert.equal(text(await call('bob', 'kept__net', {host: '127.0.0.1', port: 3128})), 'connected', 'a fresh relay for the next call of the same server');
    assert.equal(text(await call('bob', 'kept__recall')), '["b1"]', 'the same server process served these calls');
    assert.deepEqual(relays(), []);
    await nothingLeft(IDLE_MS + 15_000, 'after the kept server\'s idle end');
    await call('carol', 'kept__remember', {value: 'c1'});
    assert.equal((await ours()).length, 1);
    await runtime!.close();
    runtime = undefined;
    await nothingLeft(15_000, 'after shutdown');
  });
});
