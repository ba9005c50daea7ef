// A hosted server whose profile grants egress is refused before any container (no relay for servers yet).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {ContainerJob} from '../../../../src/backends/backend.ts';
import {ServerSandbox} from '../../../../src/backends/server/server-sandbox.ts';
import {parseEgressGrant} from '../../../../src/egress/policy.ts';
import {ToolcellError} from '../../../../src/errors.ts';

test('a hosted server with an egress grant is refused (BACKEND_UNAVAILABLE, egress-unavailable) before the engine is asked for anything', async () => {
  const spec: ContainerJob = {kind: 'container', id: 'j', image: 'sha256:x', argv: ['/bin/server'], network: {egress: parseEgressGrant({allow: ['api.example.com']})},
    limits: {timeoutMs: 1000, memoryMb: 64, outputBytes: 1024, cpus: 0.5, pids: 16}, readOnlyRoot: true, tmpfs: {}, mounts: [], runtime: 'runc', profile: 'srv-net'};
  const untouchable = new Proxy({}, {get: () => { throw new Error('the engine was asked'); }});
  await assert.rejects(ServerSandbox.start(untouchable as never, spec, {signal: new AbortController().signal, deadlineAt: Date.now() + 1000}),
    (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'egress-unavailable' && /srv-net/.test(e.message));
});
