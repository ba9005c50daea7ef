// Egress servers are never pre-initialized, and a call's egress context (its id, principal) is not a sandbox setting.
// invariant: egress:hosted:per-call-session
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {ContainerJob} from '../../../../src/backends/backend.ts';
import {poolable, serverPoolKey} from '../../../../src/backends/server/server-pool.ts';
import {parseEgressGrant} from '../../../../src/egress/policy.ts';

const grant = parseEgressGrant({allow: ['api.example.com']});
const base: ContainerJob = {kind: 'container', id: 'j1', image: 'sha256:x', argv: ['/bin/server'], network: 'none',
  limits: {timeoutMs: 1000, memoryMb: 64, outputBytes: 1024, cpus: 0.5, pids: 16}, readOnlyRoot: true, tmpfs: {}, mounts: [], runtime: 'runc', profile: 'p'};
const withEgress = (id: string, principal: string): ContainerJob => ({...base, id, network: {egress: grant}, egress: {callId: id, principal, tool: 't', profile: 'p', grant}});

test('a server with an egress grant is not poolable (its session could not be bound to a call before its code runs); one without is', () => {
  assert.equal(poolable(base), true);
  assert.equal(poolable(withEgress('j1', 'alice')), false);
});

test('the settings key ignores the call\'s egress context (a kept "principal" server is found again) but not the grant', () => {
  assert.equal(serverPoolKey(withEgress('j1', 'alice')), serverPoolKey(withEgress('j2', 'alice')));
  assert.notEqual(serverPoolKey(withEgress('j1', 'alice')), serverPoolKey(base));
  const other = parseEgressGrant({allow: ['other.example.com']});
  assert.notEqual(serverPoolKey(withEgress('j1', 'alice')), serverPoolKey({...withEgress('j1', 'alice'), network: {egress: other}}));
});
