// Hazard: a stateful hosted server kept per principal ("lifetime": "principal") leaks one principal's
// state to another, outlives its idleMs, or survives a failed call; with "lifetime": "call" nothing survives a call.
// invariant: server:lifetime:principal-isolated
// invariant: server:call:fresh-process
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {CallToolResult} from '@modelcontextprotocol/server';
import {probeServer} from '../../../src/backends/server/probe-server.ts';
import {callTool} from '../../../src/frontend/call-tool.ts';
import type {Principal} from '../../../src/policy/principal.ts';
import {createRuntime, type Runtime} from '../../../src/runtime.ts';
import {dockerAvailable, managedContainers} from '../../support/docker.ts';
import {toolPins, useFixtureServerImage} from '../../support/fixture-server.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const PROFILE_NAME = `test-lifetime-${process.pid}`;
const PROFILE = {name: PROFILE_NAME, backend: 'container', limits: {timeoutMs: 3_000, memoryMb: 192, cpus: 0.5, pids: 48, outputBytes: 1_048_576},
  network: 'none', filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: []}, commands: ['node'], runtime: 'runc'};
/** Longer than any cold start on a loaded host: the isolation checks must never race the idle timer. */
const IDLE_MS = 30_000;
/** A second package and profile whose kept sandbox expires quickly, to show idleMs removes it. */
const BRIEF_PROFILE = `${PROFILE_NAME}-brief`;
const BRIEF_IDLE_MS = 2_000;
const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('');
const ours = () => managedContainers(`toolcell.profile=${PROFILE_NAME}`);
const oursBrief = () => managedContainers(`toolcell.profile=${BRIEF_PROFILE}`);
const principal = (id: string): Principal => ({id, kind: 'api-key', scopes: [], packages: '*'});

describe('hosted servers: lifetime', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let runtime: Runtime | undefined;

  before(async () => {
    dir = await tempDir();
    await dir.write(`profiles/${PROFILE_NAME}.json`, PROFILE);
    await dir.write(`profiles/${BRIEF_PROFILE}.json`, {...PROFILE, name: BRIEF_PROFILE});
    const probed = await probeServer({image: image.tag, command: ['/usr/local/bin/node', '/srv/fixture-server.mjs'], args: ['good'], profile: PROFILE as never, handshakeTimeoutMs: 20_000});
    const tools = toolPins(probed.tools);
    const server = {source: 'dir:test/fixtures/servers', image: image.tag, imageId: probed.imageId, command: ['node', '/srv/fixture-server.mjs'], args: ['good'], transport: 'stdio'};
    await dir.write('tools/kept/toolcell.json', {name: 'kept', version: '1.0.0', server: {...server, lifetime: 'principal', idleMs: IDLE_MS}, profile: PROFILE_NAME, tools});
    await dir.write('tools/brief/toolcell.json', {name: 'brief', version: '1.0.0', server: {...server, lifetime: 'principal', idleMs: BRIEF_IDLE_MS}, profile: BRIEF_PROFILE, tools});
    await dir.write('tools/percall/toolcell.json', {name: 'percall', version: '1.0.0', server, profile: PROFILE_NAME, tools});
    runtime = await createRuntime({toolDirs: [`${dir.path}/tools`], profileDirs: [`${dir.path}/profiles`], audit: 'off', containerPool: 0});
  });
  after(async () => {
    await runtime?.close();
    await dir?.dispose();
  });

  const call = async (who: string, name: string, args: Record<string, unknown> = {}) => {
    const r = await callTool(runtime!, name, args, {principal: principal(who), transport: 'http', signal: AbortSignal.timeout(60_000)});
    return r;
  };

  test('"lifetime": "call": nothing a call leaves in the server survives it', async () => {
    assert.equal(text(await call('alice', 'percall__remember', {value: 'secret'})), '["secret"]');
    assert.equal(text(await call('alice', 'percall__recall')), '[]');
  });

  test('"lifetime": "principal": kept for one principal, invisible to another', async () => {
    assert.equal(text(await call('alice', 'kept__remember', {value: 'a1'})), '["a1"]');
    assert.equal(text(await call('alice', 'kept__remember', {value: 'a2'})), '["a1","a2"]');
    assert.equal(text(await call('bob', 'kept__recall')), '[]', 'another principal never sees alice\'s server');
    assert.equal(text(await call('bob', 'kept__remember', {value: 'b1'})), '["b1"]');
    assert.equal(text(await call('alice', 'kept__recall')), '["a1","a2"]');
    // Concurrent calls of one principal run one at a time in the same server.
    const both = await Promise.all([call('alice', 'kept__remember', {value: 'c1'}), call('alice', 'kept__remember', {value: 'c2'})]);
    assert.deepEqual(both.map((r) => (JSON.parse(text(r)) as string[]).length).sort(), [3, 4]);
    assert.equal((await ours()).length, 2, 'one sandbox per principal');
  });

  test('"lifetime": "principal": a kept sandbox is removed after idleMs without a call, and its state with it', async () => {
    assert.equal(text(await call('alice', 'brief__remember', {value: 'z'})), '["z"]');
    // Removed BRIEF_IDLE_MS after the call; the removal itself gets a deadline of its own on a busy engine.
    const deadline = Date.now() + BRIEF_IDLE_MS + 20_000;
    let left = await oursBrief();
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      left = await oursBrief();
    }
    assert.deepEqual(left, [], `the kept sandbox outlived idleMs (${BRIEF_IDLE_MS} ms) by 20 s`);
    assert.equal(text(await call('alice', 'brief__recall')), '[]');
  });

  test('a failed call (timeout) removes the principal\'s sandbox: its next call starts fresh', async () => {
    assert.equal(text(await call('carol', 'kept__remember', {value: 'x'})), '["x"]');
    const r = await call('carol', 'kept__spin');
    assert.equal((r._meta?.['toolcell/error'] as {code?: string}).code, 'TIMEOUT');
    assert.equal(text(await call('carol', 'kept__recall')), '[]');
  });

  test('closing the runtime removes every kept sandbox', async () => {
    await call('dave', 'kept__remember', {value: 'y'});
    assert.ok((await ours()).length >= 1);
    await runtime!.close();
    runtime = undefined;
    assert.deepEqual(await ours(), []);
    assert.deepEqual(await oursBrief(), []);
  });
});
