// Hazard: on a busy engine a paced call finds the pre-initialized pool empty while a member is still
// being created, and starts yet another server cold (seconds, and one more container on the shared
// engine) instead of taking the member already on its way. The member it takes must still serve only
// that call.
// invariant: server:pool:one-call-per-member
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {ServerJob} from '../../../src/backends/backend.ts';
import {ServerBackend} from '../../../src/backends/server/server-backend.ts';
import {docker, dockerAvailable, managedContainers, watchCreated} from '../../support/docker.ts';
import {fixtureSandbox, useFixtureServerImage} from '../../support/fixture-server.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const PROFILE = `test-pool-wait-${process.pid}`;

describe('hosted servers: a call waits for the member being created rather than starting a cold server', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  let backend: ServerBackend | undefined;
  let job: (id: string) => ServerJob;

  before(() => {
    backend = new ServerBackend({pool: {size: 1}, handshakeTimeoutMs: 30_000});
    job = (id) => {
      const sandbox = fixtureSandbox(image.imageId(), 'good', [], {profile: PROFILE});
      return {kind: 'server', id, sandbox, tool: 'whoami', args: {}, verifyListing: () => ({ok: true}), limits: sandbox.limits, packageName: 'fixture'};
    };
  });
  after(async () => {
    await backend?.close();
  });

  test('a call made while the only member is being created is served by that member; no cold server is started; nothing is left', {timeout: 120_000}, async () => {
    const b = backend!;
    const created = await watchCreated(`toolcell.profile=${PROFILE}`);
    try {
      b.prewarm(job('prewarm'));
      assert.deepEqual({ready: b.poolStats().ready, creating: b.poolStats().creating}, {ready: 0, creating: 1});
      const r = await b.run(job(`call-${process.pid}`), {signal: AbortSignal.timeout(60_000)});
      assert.equal(r.failed, false, JSON.stringify(r));
      const ids = created.ids();
      const jobs: Array<string | undefined> = await Promise.all(ids.map(async (id) => (await docker.getContainer(id).inspect().catch(() => undefined))?.Config.Labels['toolcell.job']));
      // Every container of this profile is a pool member (job "pool"): none was started cold for the call.
      assert.ok(jobs.every((j) => j === undefined || j === 'pool'), JSON.stringify(jobs));
      // A second call gets another server (the refill), never the one that served the first.
      const first = JSON.parse((JSON.parse(r.stdout) as {content: Array<{text: string}>}).content[0]!.text) as {instance: string};
      const r2 = await b.run(job(`call2-${process.pid}`), {signal: AbortSignal.timeout(60_000)});
      const second = JSON.parse((JSON.parse(r2.stdout) as {content: Array<{text: string}>}).content[0]!.text) as {instance: string};
      assert.notEqual(first.instance, second.instance);
    } finally {
      created.stop();
    }
    await b.close();
    backend = undefined;
    assert.deepEqual(await managedContainers(`toolcell.profile=${PROFILE}`), []);
  });
});
