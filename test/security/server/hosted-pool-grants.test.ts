// Hazard: a pre-initialized pool member runs the server's code before any call exists, unaudited and
// attributed to no principal; with a read-write mount it could change (or watch) shared host files
// outside any call. Such profiles must never be pooled: their calls run cold.
// invariant: server:pool:no-writable-grants
import assert from 'node:assert/strict';
import {mkdir} from 'node:fs/promises';
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
const RO_NAME = `test-poolgrant-ro-${process.pid}`;
const RW_NAME = `test-poolgrant-rw-${process.pid}`;
const base = {backend: 'container', limits: {timeoutMs: 6_000, memoryMb: 128, cpus: 0.5, pids: 48, outputBytes: 1_048_576},
  network: 'none', commands: ['node'], runtime: 'runc'};
const RO = {...base, name: RO_NAME, filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: [{source: '${workspace}/in', target: '/in', readOnly: true}]}};
const RW = {...base, name: RW_NAME, filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: [{source: '${workspace}/out', target: '/workspace', readOnly: false}]}};
const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('');

/** Waits (at most `ms`) until `cond` holds. */
async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!(await cond()) && Date.now() < end) await new Promise((r) => setTimeout(r, 250));
  return cond();
}

describe('hosted servers: profiles with writable grants are never pre-initialized', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let runtime: Runtime | undefined;

  before(async () => {
    dir = await tempDir();
    await mkdir(`${dir.path}/ws/in`, {recursive: true});
    await mkdir(`${dir.path}/ws/out`, {recursive: true, mode: 0o777});
    await dir.write(`profiles/${RO_NAME}.json`, RO);
    await dir.write(`profiles/${RW_NAME}.json`, RW);
    const probed = await probeServer({image: image.tag, command: ['/usr/local/bin/node', '/srv/fixture-server.mjs'], args: ['good'],
      profile: {...base, name: 'probe', filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: []}} as never, handshakeTimeoutMs: 20_000});
    const tools = toolPins(probed.tools);
    const pkg = (name: string, profile: string) => ({name, version: '1.0.0',
      server: {source: 'dir:test/fixtures/servers', image: image.tag, imageId: probed.imageId, command: ['node', '/srv/fixture-server.mjs'], args: ['good'], transport: 'stdio'},
      profile, tools});
    await dir.write('tools/ro/toolcell.json', pkg('ro', RO_NAME));
    await dir.write('tools/rw/toolcell.json', pkg('rw', RW_NAME));
    runtime = await createRuntime({toolDirs: [`${dir.path}/tools`], profileDirs: [`${dir.path}/profiles`], audit: 'off', containerPool: 2,
      workspace: `${dir.path}/ws`});
  });
  after(async () => {
    await runtime?.close();
    await dir?.dispose();
  });

  test('with --container-pool 2, the read-only profile gets members, the read-write one none; its call still works cold', async () => {
    assert.ok(runtime!.tools.has('rw__echo'), JSON.stringify({rejected: runtime!.rejected, unavailable: runtime!.unavailable}));
    // The pool is on: the read-only package's members appear (a control, so "none" below means something).
    assert.ok(await until(async () => (await managedContainers(`toolcell.profile=${RO_NAME}`)).length >= 1, 90_000), 'the read-only package was pre-initialized');
    assert.deepEqual(await managedContainers(`toolcell.profile=${RW_NAME}`), [], 'no member of the read-write package exists before a call');
    const r = await callTool(runtime!, 'rw__echo', {message: 'cold'}, {principal: localPrincipal, transport: 'stdio', signal: AbortSignal.timeout(60_000)});
    assert.equal(text(r), 'cold');
    assert.ok(await until(async () => (await managedContainers(`toolcell.profile=${RW_NAME}`)).length === 0, 15_000), 'the cold server was removed, no refill');
  });
});
