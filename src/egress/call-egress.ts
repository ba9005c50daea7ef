// The egress of one call, built by the call spine from the profile's grant: placeholders, per-call limits, the isolate fetch, and its audit events.
import {performance} from 'node:perf_hooks';
import type {AuditEgressV2} from '../audit/audit-event.ts';
import {newAuditId} from '../audit/audit-event.ts';
import type {IsolateEgress} from '../backends/backend.ts';
import type {EgressCa} from './ca.ts';
import {isolateEgress} from './isolate-fetch.ts';
import {resolveEgress, type EgressGrant, type EgressLookup} from './policy.ts';
import type {CallSecrets, SecretStore} from './secrets.ts';
import type {EgressBudget, EgressDecision} from './tls-intercept.ts';

/** What the runtime holds for egress, once: the operator's secrets and trust, and where decisions go. */
export interface EgressServices {
  /** The operator's secrets (`serve --secrets FILE`; empty without it). */
  secrets: SecretStore;
  /** Extra CA certificates (PEM) trusted for upstreams (`--upstream-ca FILE`). */
  upstreamCa?: string;
  /** Resolver for tests (default: the host's). */
  lookup?: EgressLookup;
  /** The egress CA, present only when a container profile grants secrets (container-secrets.ts); never mounted with its key. */
  ca?: EgressCa;
  /** Writes one audit event. */
  audit(event: AuditEgressV2): void;
  /** Counts one decision (`toolcell_egress_total{tool, outcome}`), optional. */
  count?(tool: string, outcome: 'allowed' | 'denied' | 'limit' | 'failed'): void;
}

/** Who a call's egress belongs to. */
export interface EgressCallInfo {
  jobId: string;
  principal: string;
  /** The MCP tool name. */
  tool: string;
  profile: string;
}

/**
 * A counter of one call's requests and bytes against its grant (`maxRequests`, `maxBytesOut`,
 * `maxBytesIn`); each method answers the refusal text naming the profile and the limit once over.
 */
export function grantBudget(grant: EgressGrant, profile: string): EgressBudget {
  let requests = 0;
  let out = 0;
  let inBytes = 0;
  const over = (limit: 'maxRequests' | 'maxBytesOut' | 'maxBytesIn') =>
    `the profile "${profile}" allows ${limit} = ${grant[limit]} ${limit === 'maxRequests' ? 'requests' : 'bytes'} per call (${limit})`;
  return {
    request: () => (++requests > grant.maxRequests ? over('maxRequests') : undefined),
    out: (bytes) => ((out += bytes) > grant.maxBytesOut ? over('maxBytesOut') : undefined),
    in: (bytes) => ((inBytes += bytes) > grant.maxBytesIn ? over('maxBytesIn') : undefined),
  };
}

/**
 * The egress of one isolate call whose profile grants `{egress}`: fresh placeholders for the
 * granted secrets, a budget for the grant's limits, `resolveEgress` as the policy, and one
 * audit event per decision (`egress.allowed` with the allow entry as rule, or `egress.denied`
 * with the rule; secret names only). `close()` ends the placeholders: call it when the call
 * ends, whatever happened.
 */
export function isolateCallEgress(services: EgressServices, grant: EgressGrant, secretNames: readonly string[], call: EgressCallInfo, memoryMb: number):
  {egress: IsolateEgress; secrets: CallSecrets; close(): void} {
  const secrets = services.secrets.forCall(secretNames);
  const started = new Map<string, number>();
  const matched = new Map<string, {address: string; rule: string}>();
  const egress = isolateEgress({
    secrets,
    budget: grantBudget(grant, call.profile),
    requestTimeoutMs: grant.requestTimeoutMs,
    maxBytesOut: grant.maxBytesOut,
    memoryMb,
    ...(services.upstreamCa ? {upstreamCa: services.upstreamCa} : {}),
    resolve: async (host, port) => {
      started.set(`${host}:${port}`, performance.now());
      const r = await resolveEgress(grant, host, port, {...(services.lookup ? {lookup: services.lookup} : {}), timeoutMs: Math.min(5000, grant.requestTimeoutMs)});
      if (!r.allowed) return {refused: `toolcell egress: refused by the profile "${call.profile}": ${r.reason}`};
      matched.set(`${host}:${port}`, {address: r.address, rule: r.rule});
      return {address: r.address};
    },
    onDecision: (d: EgressDecision) => {
      const key = `${d.host}:${d.port}`;
      const hit = matched.get(key);
      const rule = d.allowed ? hit?.rule ?? 'allowlist' : d.rule === 'timeout' ? 'requestTimeoutMs' : d.rule === 'egress' && /is not in|allows only|resolves to|could not be resolved|has no address/.test(d.reason ?? '') ? 'allowlist'
        : d.rule === 'egress' && /\((maxRequests|maxBytesOut|maxBytesIn)\)/.test(d.reason ?? '') ? /\((max\w+)\)/.exec(d.reason!)![1]! : d.rule ?? 'egress';
      const outcome = d.allowed ? 'allowed' : /^max|requestTimeoutMs/.test(rule) ? 'limit' : d.rule === 'upstream' || d.rule === 'upstream-tls' ? 'failed' : 'denied';
      services.count?.(call.tool, outcome);
      services.audit({
        v: 2, type: d.allowed ? 'egress.allowed' : 'egress.denied', at: new Date().toISOString(), auditId: newAuditId(),
        jobId: call.jobId, principal: call.principal, tool: call.tool, profile: call.profile,
        host: d.host.slice(0, 100), port: d.port, ...(d.allowed && hit ? {address: hit.address} : {}), method: d.method || 'GET',
        status: d.status ?? (d.allowed ? 200 : 0), bytesOut: d.bytesOut, bytesIn: d.bytesIn, rule,
        ...(d.secrets ? {secrets: d.secrets} : {}),
        durationMs: Math.round(performance.now() - (started.get(key) ?? performance.now())),
      });
    },
  });
  return {egress, secrets, close: () => secrets.close()};
}
