// Hazard: a symlink planted under the workspace (by a tool with a writable mount, or on the
// host) stops the next server from starting, or gets mounted. The runtime must leave out only
// the tools whose profile needs that mount, with a reason naming the profile, and serve the
// others; and refuse at load a grant that lies inside another grant's writable mount.
// invariant: container:mounts:load-refuses-redirectable
import assert from 'node:assert/strict';
import {chmod, mkdir, symlink, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import type {ContainerJob} from '../../../src/backends/backend.ts';
import {toJob} from '../../../src/policy/to-job.ts';
import {createRuntime, type Runtime} from '../../../src/runtime.ts';
import {dockerAvailable, noSignal} from '../../support/docker.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/shell']});

const LIMITS = {timeoutMs: 10000, memoryMb: 64, cpus: 0.5, pids: 32, outputBytes: 65536};
const profile = (name: string, mounts: object[]) => ({
  name, backend: 'container', limits: LIMITS, network: 'none',
  filesystem: {readOnlyRoot: true, tmpfs: {}, mounts}, commands: ['ls'], runtime: 'runc',
});
const tool = (name: string, profileName: string) => ({
  name, description: `ls with profile ${profileName}`,
  inputSchema: {type: 'object', properties: {dir: {type: 'string'}}, required: ['dir'], additionalProperties: false},
  profile: profileName, container: {image: 'toolcell/shell', command: ['ls', '{{dir}}'], output: 'text'},
});

describe('a planted or nested mount at load', {skip: !ok && 'no Docker engine'}, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let runtime: Runtime | undefined;
  before(async () => {
    dir = await tempDir('toolcell-planted-');
    const ws = join(dir.path, 'ws');
    await mkdir(join(ws, 'ok'), {recursive: true});
    await mkdir(join(ws, 'out/data'), {recursive: true});
    await chmod(ws, 0o755);
    await writeFile(join(ws, 'ok/visible.txt'), 'yes');
    await symlink('/proc', join(ws, 'planted')); // what call 1 of a writable grant could leave behind
    await dir.write('profiles/fine.json', profile('fine', [{source: '${workspace}/ok', target: '/ok', readOnly: true}]));
    await dir.write('profiles/planted.json', profile('planted', [{source: '${workspace}/planted', target: '/data', readOnly: true}]));
    await dir.write('profiles/nested.json', profile('nested', [
      {source: '${workspace}/out', target: '/out', readOnly: false}, {source: '${workspace}/out/data', target: '/data', readOnly: true},
    ]));
    await dir.write('tools/mt/toolcell.json', {
      name: 'mt', version: '1.0.0', description: 'mount test',
      tools: [tool('fine', 'fine'), tool('planted', 'planted'), tool('nested', 'nested')],
    });
  });
  after(async () => {
    await runtime?.close();
    await dir.dispose();
  });

  test('the server starts, serves the tool with a sound mount, and leaves out the others with the profile named', async () => {
    runtime = await createRuntime({
      toolDirs: [join(dir.path, 'tools')], profileDirs: [join(dir.path, 'profiles')], workspace: join(dir.path, 'ws'), audit: 'off',
    });
    assert.deepEqual([...runtime.tools.keys()].sort(), ['mt__fine']);
    const reasons = new Map(runtime.unavailable.map((u) => [u.tool, u.reason]));
    assert.match(reasons.get('mt__planted')!, /profile planted: mount source "\$\{workspace\}\/planted" resolves outside the allowed mount roots/);
    assert.match(reasons.get('mt__nested')!, /profile nested: mount source "\$\{workspace\}\/out\/data" \(at \/data\) lies inside its own writable mount/);

    // The served tool works and sees only its grant.
    const job = toJob(runtime.tools.get('mt__fine')!, {dir: '/ok'}, 'planted-serve-1', runtime.containerGrants.get('mt__fine')) as ContainerJob;
    const r = await runtime.dispatcher.run(job, noSignal());
    assert.equal(r.failed, false, r.stderr);
    assert.equal(r.stdout, 'visible.txt\n');
  });
});
