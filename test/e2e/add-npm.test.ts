// `toolcell add npm:@modelcontextprotocol/server-everything@2026.8.31` for real: resolved from the npm registry, built, probed in its sandbox, not flagged, pinned.
import assert from 'node:assert/strict';
import {execFile} from 'node:child_process';
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {promisify} from 'node:util';
import {HostedPackageManifest} from '../../src/policy/manifest-schema.ts';
import {docker, dockerAvailable} from '../support/docker.ts';
import {CLI} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

const SOURCE = 'npm:@modelcontextprotocol/server-everything@2026.8.31';
/** The registry's dist.integrity of that version (npm view … dist.integrity). */
const INTEGRITY = 'sha512-5U3OZh8Xq0Li4nA26l6uNvV9/1suMDuWSn+NjLZIhzinhMY6N3A4DCrxVecBGPf2PsNFKTEv5krxGPRwzxc7jQ==';
/** Resolve + npm ci in the image build + probe, on a slow shared host with a cold cache. */
const ADD_TIMEOUT_MS = 600_000;

/** Whether the npm registry answers (network to it is allowed for this install only). Never skipped under CI. */
async function registryReachable(): Promise<string | undefined> {
  try {
    await promisify(execFile)('npm', ['view', '@modelcontextprotocol/server-everything@2026.8.31', 'version'], {timeout: 60_000});
    return undefined;
  } catch (err) {
    const why = `the npm registry is not reachable (${(err as Error).message.split('\n')[0]})`;
    if (process.env.CI === 'true' || process.env.CI === '1') throw new Error(`add npm: cannot run in CI: ${why}`);
    process.stderr.write(`\n*** add npm: test SKIPPED: ${why} ***\n\n`);
    return why;
  }
}

const dockerOk = await dockerAvailable({images: ['toolcell/node']});
const registryProblem = dockerOk ? await registryReachable() : undefined;

describe('toolcell add npm:', {skip: (!dockerOk && 'no Docker engine or toolcell/node') || registryProblem || false}, () => {
  const name = `t${process.pid}-everything`;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    dir = await tempDir('toolcell-add-npm-');
  });
  after(async () => {
    await dir?.dispose();
    await docker.getImage(`toolcell/srv-${name}:2026.8.31`).remove().catch(() => undefined);
  });

  test('server-everything 2026.8.31 is resolved to its registry integrity, installed, probed, not flagged and pinned', {timeout: ADD_TIMEOUT_MS + 30_000}, async () => {
    let r: {code: number; stderr: string};
    try {
      r = {code: 0, ...await promisify(execFile)(process.execPath, ['--no-node-snapshot', CLI, 'add', SOURCE, '--name', name, '--tools', dir.path, '--yes'],
        {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, timeout: ADD_TIMEOUT_MS, maxBuffer: 64 * 2 ** 20})};
    } catch (e) {
      r = e as {code: number; stderr: string};
    }
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    assert.doesNotMatch(r.stderr, /screening flagged/);
    // The build's own integrity check (verify.cjs) printed this when the install layer was built; a cached layer was checked when it was made.
    assert.match(r.stderr, /image toolcell\/srv-t\d+-everything:2026\.8\.31 \(sha256:/);
    const manifest = HostedPackageManifest.parse(JSON.parse(readFileSync(join(dir.path, name, 'toolcell.json'), 'utf8')));
    assert.equal(manifest.version, '2026.8.31');
    assert.equal(manifest.server.source, SOURCE);
    assert.equal(manifest.server.integrity, INTEGRITY);
    assert.deepEqual(manifest.server.command, ['node', '/opt/toolcell/server/node_modules/@modelcontextprotocol/server-everything/dist/index.js']);
    assert.equal((await docker.getImage(manifest.server.image).inspect()).Id, manifest.server.imageId);
    const names = manifest.tools.map((t) => t.name);
    for (const tool of ['echo', 'get-sum', 'trigger-long-running-operation', 'get-structured-content']) assert.ok(names.includes(tool), `${tool} in ${names.join(', ')}`);
  });
});
