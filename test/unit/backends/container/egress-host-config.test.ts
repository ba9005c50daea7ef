// A container with an egress grant keeps the same floor (no network interface) and only gains the proxy variables.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {ContainerJob} from '../../../../src/backends/backend.ts';
import {egressEnv, toCreateOptions, toHostConfig} from '../../../../src/backends/container/host-config.ts';
import {parseEgressGrant} from '../../../../src/egress/policy.ts';

const grant = parseEgressGrant({allow: ['api.example.com']});
const job = (overrides: Partial<ContainerJob> = {}): ContainerJob => ({
  kind: 'container', id: 'job-1', image: 'toolcell/python', argv: ['/usr/bin/python3', '-c', 'print(1)'],
  limits: {timeoutMs: 10_000, memoryMb: 256, outputBytes: 65_536, cpus: 0.5, pids: 64},
  network: {egress: grant}, readOnlyRoot: true, tmpfs: {}, mounts: [], runtime: 'runc', profile: 'net', ...overrides,
});

for (const [title, check] of [
  ['an egress grant still gets no network interface but loopback (NetworkMode none)', () => assert.equal(toHostConfig(job()).NetworkMode, 'none')],
  ['an egress grant still has networking disabled at the container level', () => assert.equal(toCreateOptions(job(), {owner: 'o'}).NetworkDisabled, true)],
  ['an egress grant adds no capability and no mount', () => {
    const hc = toHostConfig(job());
    assert.deepEqual(hc.CapAdd, []);
    assert.deepEqual(hc.Mounts, []);
  }],
  ['the proxy variables point at the relay on the sandbox loopback, NO_PROXY empty, Node told to honour them', () => {
    const env = toCreateOptions(job(), {owner: 'o'}).Env!;
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy']) assert.ok(env.includes(`${name}=http://127.0.0.1:3128`), name);
    assert.ok(env.includes('NO_PROXY=') && env.includes('no_proxy=') && env.includes('NODE_USE_ENV_PROXY=1'));
  }],
  ['a package env cannot point the proxy variables elsewhere or exempt hosts', () => {
    const env = toCreateOptions(job({env: {HTTP_PROXY: 'http://10.0.0.1:8080', NO_PROXY: '*', KEEP: '1'}}), {owner: 'o'}).Env!;
    assert.ok(env.includes('HTTP_PROXY=http://127.0.0.1:3128') && env.includes('NO_PROXY=') && env.includes('KEEP=1'));
    assert.ok(!env.some((e) => e.includes('10.0.0.1') || e === 'NO_PROXY=*'));
  }],
  ['without a grant: no proxy variable at all', () => {
    assert.deepEqual(egressEnv({network: 'none'}), {});
    assert.ok(!toCreateOptions(job({network: 'none'}), {owner: 'o'}).Env!.some((e) => /proxy/i.test(e)));
  }],
] as const) test(title, check);
