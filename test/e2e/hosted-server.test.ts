// A real MCP client (SDK, stdio) lists and calls the tools of a hosted MCP server through `toolcell serve`;
// each call runs in a fresh server process in its own container.
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import {probeServer} from '../../src/backends/server/probe-server.ts';
import {dockerAvailable, leftAfter, managedContainers} from '../support/docker.ts';
import {toolPins, useFixtureServerImage} from '../support/fixture-server.ts';
import {connectStdio, errorCode, textOf} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const PROFILE_NAME = `e2e-server-${process.pid}`;
const PROFILE = {name: PROFILE_NAME, backend: 'container', limits: {timeoutMs: 5_000, memoryMb: 192, cpus: 0.5, pids: 48, outputBytes: 1_048_576},
  network: 'none', filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: []}, commands: ['node'], runtime: 'runc'};

describe('toolcell serve with a hosted MCP server', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let session: Awaited<ReturnType<typeof connectStdio>> | undefined;

  before(async () => {
    dir = await tempDir();
    await dir.write(`profiles/${PROFILE_NAME}.json`, PROFILE);
    const probed = await probeServer({image: image.tag, command: ['/usr/local/bin/node', '/srv/fixture-server.mjs'], args: ['good'], profile: PROFILE as never, handshakeTimeoutMs: 20_000});
    const tools = toolPins(probed.tools.filter((t) => t.name === 'echo' || t.name === 'whoami' || t.name === 'slow'));
    await dir.write('tools/fixture/toolcell.json', {name: 'fixture', version: '1.0.0',
      server: {source: 'dir:test/fixtures/servers', image: image.tag, imageId: probed.imageId, command: ['node', '/srv/fixture-server.mjs'], args: ['good'], transport: 'stdio'},
      profile: PROFILE_NAME, tools});
    session = await connectStdio(['--no-bundled-tools', '--tools', `${dir.path}/tools`, '--profiles', `${dir.path}/profiles`, '--audit-log', 'off']);
  }, {timeout: 120_000});
  after(async () => {
    await session?.close();
    await dir?.dispose();
  });

  test('the client lists only the approved tools, with their pinned definitions', async () => {
    const {tools} = await session!.client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['fixture__echo', 'fixture__slow', 'fixture__whoami'], session!.stderr());
    assert.equal(tools.find((t) => t.name === 'fixture__echo')?.description, 'Echo the input.');
  });

  test('calls are answered, each by a server process in a container of its own', async () => {
    const r = await session!.client.callTool({name: 'fixture__echo', arguments: {message: 'hello from a sandbox'}});
    assert.equal(textOf(r), 'hello from a sandbox', session!.stderr());
    const a = JSON.parse(textOf(await session!.client.callTool({name: 'fixture__whoami', arguments: {}}))) as {instance: string};
    const b = JSON.parse(textOf(await session!.client.callTool({name: 'fixture__whoami', arguments: {}}))) as {instance: string};
    assert.notEqual(a.instance, b.instance);
    const bad = await session!.client.callTool({name: 'fixture__echo', arguments: {message: 42}});
    assert.equal(errorCode(bad), 'INVALID_ARGUMENTS');
    assert.deepEqual(await leftAfter(() => managedContainers(`toolcell.profile=${PROFILE_NAME}`)), []);
  });

  test('the server\'s progress reaches the client through its progress token', async () => {
    const seen: number[] = [];
    const r = await session!.client.callTool({name: 'fixture__slow', arguments: {steps: 3}}, {onprogress: (p) => { seen.push(p.progress); }});
    assert.equal(textOf(r), 'done');
    assert.ok(seen.includes(3), JSON.stringify(seen));
  });
});
