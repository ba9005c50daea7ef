// Hazard: a hosted server's third-party image uses its own configuration to get what the profile never
// granted: a Dockerfile VOLUME (a writable, exec-allowed path on the engine's disk) or a HEALTHCHECK (an
// image-chosen command the engine runs inside the sandbox, outside argv and the allowlist).
// invariant: container:image:no-volume
// invariant: container:image:no-healthcheck
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {CallToolResult} from '@modelcontextprotocol/server';
import {probeServer} from '../../../src/backends/server/probe-server.ts';
import {callTool} from '../../../src/frontend/call-tool.ts';
import {localPrincipal} from '../../../src/policy/principal.ts';
import {createRuntime, type Runtime} from '../../../src/runtime.ts';
import {docker, dockerAvailable, leftAfter, managedContainers} from '../../support/docker.ts';
import {toolPins, useFixtureServerImage} from '../../support/fixture-server.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const PROFILE_NAME = `test-imgcfg-${process.pid}`;
const MASKED_NAME = `test-imgcfg-masked-${process.pid}`;
const PROFILE = {name: PROFILE_NAME, backend: 'container', limits: {timeoutMs: 8_000, memoryMb: 192, cpus: 0.5, pids: 48, outputBytes: 1_048_576},
  network: 'none', filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}, mounts: []}, commands: ['node'], runtime: 'runc'};
/** The operator's remedy for an image VOLUME: a tmpfs granted at the declared path. */
const MASKED = {...PROFILE, name: MASKED_NAME, filesystem: {...PROFILE.filesystem, tmpfs: {'/tmp': '8m', '/data': '1m'}}};
const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('');
const codeOf = (r: CallToolResult) => (r._meta?.['toolcell/error'] as {code?: string} | undefined)?.code;
const ours = async () => [...await managedContainers(`toolcell.profile=${PROFILE_NAME}`), ...await managedContainers(`toolcell.profile=${MASKED_NAME}`)];
/** Longest wait for one derived image build, in ms. */
const BUILD_TIMEOUT_MS = 120_000;

/** Builds `tag` from a one-file context holding `dockerfile` (deadline {@link BUILD_TIMEOUT_MS}); returns its image ID. */
async function build(dir: string, tag: string, dockerfile: string): Promise<string> {
  const {writeFile, mkdir} = await import('node:fs/promises');
  await mkdir(dir, {recursive: true});
  await writeFile(`${dir}/Dockerfile`, dockerfile);
  const stream = await docker.buildImage({context: dir, src: ['Dockerfile']},
    {t: tag, rm: true, forcerm: true, labels: {'toolcell.test': 'image-config'}, abortSignal: AbortSignal.timeout(BUILD_TIMEOUT_MS)} as object);
  let failure: string | undefined;
  await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve()),
    (e: {error?: string}) => { if (e.error) failure = e.error; }));
  if (failure) throw new Error(`building ${tag} failed: ${failure}`);
  return (await docker.getImage(tag).inspect()).Id;
}

describe('hosted servers: image configuration grants nothing', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  const VOL = `toolcell-test/imgcfg-volume:${process.pid}`;
  const HC = `toolcell-test/imgcfg-healthcheck:${process.pid}`;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let runtime: Runtime | undefined;
  let volId = '';
  let hcId = '';

  before(async () => {
    dir = await tempDir();
    volId = await build(`${dir.path}/vol`, VOL,
      `FROM ${image.tag}\nUSER 0\nRUN mkdir /data && chmod 1777 /data\nVOLUME /data\nUSER 65534:65534\n`);
    hcId = await build(`${dir.path}/hc`, HC,
      `FROM ${image.tag}\nHEALTHCHECK --interval=100ms --timeout=1s CMD ["/bin/sh", "-c", "id -u >> /tmp/hc"]\n`);
    await dir.write(`profiles/${PROFILE_NAME}.json`, PROFILE);
    await dir.write(`profiles/${MASKED_NAME}.json`, MASKED);
    const probed = await probeServer({image: hcId, command: ['/usr/local/bin/node', '/srv/fixture-server.mjs'], args: ['good'],
      profile: PROFILE as never, handshakeTimeoutMs: 20_000});
    const tools = toolPins(probed.tools);
    const pkg = (name: string, tag: string, imageId: string, profile: string) => ({name, version: '1.0.0',
      server: {source: 'dir:test/fixtures/servers', image: tag, imageId, command: ['node', '/srv/fixture-server.mjs'], args: ['good'], transport: 'stdio'},
      profile, tools});
    await dir.write('tools/vol/toolcell.json', pkg('vol', VOL, volId, PROFILE_NAME));
    await dir.write('tools/masked/toolcell.json', pkg('masked', VOL, volId, MASKED_NAME));
    await dir.write('tools/hc/toolcell.json', pkg('hc', HC, hcId, PROFILE_NAME));
    runtime = await createRuntime({toolDirs: [`${dir.path}/tools`], profileDirs: [`${dir.path}/profiles`], audit: 'off', containerPool: 0});
  }, {timeout: 2 * BUILD_TIMEOUT_MS + 60_000});
  after(async () => {
    await runtime?.close();
    await dir?.dispose();
    for (const tag of [VOL, HC]) await docker.getImage(tag).remove({force: true}).catch(() => undefined);
  });

  const call = (name: string, args: Record<string, unknown> = {}) =>
    callTool(runtime!, name, args, {principal: localPrincipal, transport: 'stdio', signal: AbortSignal.timeout(60_000)});

  test('an image VOLUME is refused before the server starts (naming the path); probing it is refused too; nothing is left', async () => {
    const before = new Set(await ours());
    const r = await call('vol__fsprobe');
    assert.equal(codeOf(r), 'BACKEND_UNAVAILABLE', text(r));
    assert.match(text(r), /declares a volume at "\/data"/);
    assert.doesNotMatch(text(r), /\/var\/lib\/docker/);
    await assert.rejects(probeServer({image: volId, command: ['/usr/local/bin/node', '/srv/fixture-server.mjs'], args: ['good'],
      profile: PROFILE as never, handshakeTimeoutMs: 20_000}), /declares a volume at "\/data"/);
    // The backend still answers.
    const hc = await call('hc__echo', {message: 'still here'});
    assert.equal(text(hc), 'still here');
    assert.deepEqual(await leftAfter(ours, before), []);
  });

  test('with a tmpfs granted at the declared path (the remedy), the call runs and /data is that bounded tmpfs', async () => {
    const r = await call('masked__fsprobe');
    assert.equal(codeOf(r), undefined, text(r));
    assert.equal((JSON.parse(text(r)) as {data: string}).data, 'WRITABLE');
    const info = await docker.getImage(VOL).inspect();
    assert.ok(Object.hasOwn(info.Config.Volumes ?? {}, '/data'), 'the fixture image really declares VOLUME /data');
  });

  test('the image HEALTHCHECK (every 100 ms, writes /tmp/hc) never runs during a 3 s call', async () => {
    const info = await docker.getImage(HC).inspect();
    assert.deepEqual((info.Config as {Healthcheck?: {Test?: string[]}}).Healthcheck?.Test?.[0], 'CMD', 'the fixture image really has a HEALTHCHECK');
    const r = await call('hc__fsprobe', {waitMs: 3_000});
    assert.equal(codeOf(r), undefined, text(r));
    assert.equal((JSON.parse(text(r)) as {hc: unknown}).hc, 'ENOENT');
  });
});
