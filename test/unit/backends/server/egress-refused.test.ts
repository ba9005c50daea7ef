// A hosted server whose profile grants egress is refused before any container when no egress proxy is there, or under gVisor.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {ContainerJob} from '../../../../src/backends/backend.ts';
import {ServerSandbox} from '../../../../src/backends/server/server-sandbox.ts';
import {parseEgressGrant} from '../../../../src/egress/policy.ts';
import {EgressProxy} from '../../../../src/egress/proxy.ts';
import {ToolcellError} from '../../../../src/errors.ts';

const grant = parseEgressGrant({allow: ['api.example.com']});
const spec = (over: Partial<ContainerJob> = {}): ContainerJob => ({kind: 'container', id: 'j', image: 'sha256:x', argv: ['/bin/server'], network: {egress: grant},
  limits: {timeoutMs: 1000, memoryMb: 64, outputBytes: 1024, cpus: 0.5, pids: 16}, readOnlyRoot: true, tmpfs: {}, mounts: [], runtime: 'runc', profile: 'srv-net',
  egress: {callId: 'j', principal: 'p', tool: 't', profile: 'srv-net', grant}, ...over});
/** Deps whose engine parts throw when touched: only `egress` may be read. */
const deps = (egress?: EgressProxy) => new Proxy({}, {get: (_t, key) => {
  if (key === 'egress') return egress;
  throw new Error('the engine was asked');
}});
const opts = () => ({signal: new AbortController().signal, deadlineAt: Date.now() + 1000});

test('a hosted server with an egress grant and no egress proxy is refused (BACKEND_UNAVAILABLE, egress-unavailable) before the engine is asked for anything', async () => {
  await assert.rejects(ServerSandbox.start(deps() as never, spec(), opts()),
    (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'egress-unavailable' && /srv-net/.test(e.message));
});

test('a hosted server with an egress grant but no call context (who the egress belongs to) is refused before the engine is asked', async () => {
  const proxy = new EgressProxy();
  try {
    const {egress: _e, ...without} = spec();
    await assert.rejects(ServerSandbox.start(deps(proxy) as never, without, opts()),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'egress-unavailable');
  } finally {
    await proxy.close();
  }
});

test('a hosted server with an egress grant under runsc is refused (egress-runtime): the relay cannot enter gVisor\'s network stack', async () => {
  const proxy = new EgressProxy();
  try {
    await assert.rejects(ServerSandbox.start(deps(proxy) as never, spec({runtime: 'runsc'}), opts()),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && e.data.reason === 'egress-runtime');
  } finally {
    await proxy.close();
  }
});
