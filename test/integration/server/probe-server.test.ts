// probeServer starts a hosted MCP server once in its sandbox, lists its tools (following nextCursor) and removes it.
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {probeServer} from '../../../src/backends/server/probe-server.ts';
import {dockerAvailable, managedContainers} from '../../support/docker.ts';
import {FIXTURE_TOOL_NAMES, useFixtureServerImage} from '../../support/fixture-server.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const PROFILE_NAME = `test-server-${process.pid}`;
const ours = () => managedContainers(`toolcell.profile=${PROFILE_NAME}`);
const profile = {name: PROFILE_NAME, limits: {timeoutMs: 5_000, memoryMb: 128, cpus: 0.5, pids: 32, outputBytes: 1_048_576}, network: 'none' as const,
  filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}}, runtime: 'runc' as const};
const command = ['/usr/local/bin/node', '/srv/fixture-server.mjs'];

describe('probeServer', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();

  test('lists every tool over two pages, reports the handshake and the image ID, and leaves no container', async () => {
    const before = new Set(await ours());
    const r = await probeServer({image: image.tag, command, args: ['good'], profile, handshakeTimeoutMs: 20_000});
    assert.equal(r.protocolVersion, '2025-11-25');
    assert.deepEqual(r.serverInfo, {name: 'fixture', version: '1.0.0'});
    assert.equal(r.imageId, image.imageId());
    assert.deepEqual(r.tools.map((t) => t.name), FIXTURE_TOOL_NAMES);
    assert.ok(FIXTURE_TOOL_NAMES.length > 10, 'the fixture lists more tools than one page holds');
    assert.equal(r.resources, undefined);
    const after = (await ours()).filter((id) => !before.has(id));
    assert.deepEqual(after, []);
  });

  test('a server answering ping during its handshake gets an empty result and goes on', async () => {
    const r = await probeServer({image: image.tag, command, args: ['ping-server'], profile, handshakeTimeoutMs: 20_000});
    assert.equal(r.tools.length, FIXTURE_TOOL_NAMES.length);
  });

  for (const [mode, expected] of [
    ['garbage', /not JSON/],
    ['exit-early', /ended before it answered initialize/],
    ['silent', /did not complete the MCP handshake/],
    ['flood-handshake', /more than 1048576 bytes|longer than|not JSON/],
  ] as const) {
    test(`a server that ${mode === 'silent' ? 'never answers' : mode} fails the probe with TOOL_FAILED naming why, and leaves no container`, async () => {
      const before = new Set(await ours());
      await assert.rejects(probeServer({image: image.tag, command, args: [mode], profile, handshakeTimeoutMs: 3_000}), (err: unknown) => {
        assert.equal((err as {code?: string}).code, 'TOOL_FAILED', String(err));
        assert.match((err as Error).message, expected);
        return true;
      });
      assert.deepEqual((await ours()).filter((id) => !before.has(id)), []);
    });
  }

  test('a missing image is BACKEND_UNAVAILABLE', async () => {
    await assert.rejects(probeServer({image: 'toolcell-test/no-such-image:0', command, profile}), (err: unknown) => (err as {code?: string}).code === 'BACKEND_UNAVAILABLE');
  });
});
