// Hazard: a hosted server that dies right after its handshake makes the pre-initialized pool refill on
// every call with members that die again: each call pays a cold start plus two more containers on the
// shared engine. The pool must back off after members die unused.
// invariant: server:pool:backoff
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {ServerJob} from '../../../src/backends/backend.ts';
import {ServerBackend} from '../../../src/backends/server/server-backend.ts';
import {dockerAvailable, managedContainers} from '../../support/docker.ts';
import {fixtureSandbox, useFixtureServerImage} from '../../support/fixture-server.ts';

const ok = await dockerAvailable({images: ['toolcell/node']});
const PROFILE = `test-pool-backoff-${process.pid}`;

/** Waits (at most `ms`) until `cond` holds. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  return cond();
}

describe('hosted servers: the pool backs off after members die unused', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const image = useFixtureServerImage();
  let backend: ServerBackend | undefined;
  let job: (id: string) => ServerJob;

  before(() => {
    backend = new ServerBackend({pool: {size: 2}, handshakeTimeoutMs: 20_000});
    job = (id) => {
      const sandbox = fixtureSandbox(image.imageId(), 'die-after-list', [], {profile: PROFILE});
      return {kind: 'server', id, sandbox, tool: 'echo', args: {message: 'x'}, verifyListing: () => ({ok: true}), limits: sandbox.limits, packageName: 'dying'};
    };
  });
  after(async () => {
    await backend?.close();
  });

  test('4 calls after the members died: no refill right after a call, and far fewer than 2 new members per call; nothing left', async () => {
    const b = backend!;
    b.prewarm(job('prewarm'));
    assert.ok(await until(() => b.poolStats().started === 2 && b.poolStats().creating === 0, 90_000), JSON.stringify(b.poolStats()));
    // Both members exit 100 ms after their handshake; give the engine time to report it.
    await new Promise((r) => setTimeout(r, 2_000));
    const outcomes: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await b.run(job(`call-${i}`), {signal: AbortSignal.timeout(60_000)});
      outcomes.push(r.error?.name ?? (r.failed ? 'failed' : 'ok'));
      if (i === 0) {
        // The call found dead members: the pool did not start replacements at once.
        const s = b.poolStats();
        assert.equal(s.ready + s.creating, 0, JSON.stringify(s));
      }
    }
    // Without back-off: 2 + 2 per call = 10. With it (5 s, doubling): at most one refill per back-off period.
    const started = b.poolStats().started;
    assert.ok(started <= 6, `pool members started: ${started} (outcomes ${outcomes.join(', ')})`);
    await b.close();
    assert.deepEqual(await managedContainers(`toolcell.profile=${PROFILE}`), []);
  });
});
