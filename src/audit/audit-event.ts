/** The audit event (v2): one per decision and outcome of a call, never the arguments, chained per stream (seq, prev, optional sig); and the sink interface events go to. */
import {createHash, randomUUID} from 'node:crypto';

/**
 * How a call ended, as the audit stream records it. `tool-error`: the tool ran and answered with `isError: true` (its own error,
 * relayed as it said it; no toolcell code); `failed`: toolcell's `TOOL_FAILED`/`PIDS_LIMIT`.
 */
export type AuditOutcome = 'ok' | 'tool-error' | 'failed' | 'timed-out' | 'canceled' | 'oom' | 'output-limit' | 'denied' | 'rate-limited' | 'busy' | 'invalid-arguments' | 'unavailable' | 'error';

/**
 * Audit event, version 2: one event per decision that refused a call and one per call
 * outcome. Separate from the debug log; never carries the raw arguments, only their
 * SHA-256. Who / what / where / when / outcome, after toolhive's audit events.
 * Version 2 = version 1's fields plus the chain fields (`AuditChainFields`) the JSONL sink
 * adds to every line it writes.
 */
export interface AuditEventV2 {
  v: 2;
  type: 'tool.call.completed' | 'tool.call.denied' | 'tool.call.rate-limited' | 'tool.call.rejected';
  /** ISO-8601 UTC time the event was written. */
  at: string;
  /** Unique id of this event. */
  auditId: string;
  /** The call's job id; joins the debug log. */
  jobId: string;
  /** Who: the principal id (`local`, `key:NAME`, `sub:SUBJECT`). */
  principal: string;
  /** Transport the call came in on. */
  transport: 'stdio' | 'http' | 'cli';
  /** What: the MCP tool name as the client sent it (cut at 128 characters, marked `…`, when no such tool is served). */
  tool: string;
  /**
   * The MCP method when it is not `tools/call`: `prompts/get` (then `tool` is the prompt's MCP
   * name) or `resources/read` (then `tool` is the pinned resource URI or URI template that routed
   * the read; the URI itself is recorded only in `inputSha256`).
   */
  method?: 'prompts/get' | 'resources/read';
  /** Where: the profile and backend, when the tool was found (granted or not). */
  profile?: string;
  backend?: 'isolate' | 'container';
  /** Outcome of the call. */
  outcome: AuditOutcome;
  /** The error code when the outcome is not `ok`. */
  code?: string;
  /**
   * Which policy rule decided a denial: `grants` (the tool is not granted to the principal),
   * `unknown-tool` (no such tool is served), `commands` (argv[0] not allowlisted), ...
   */
  rule?: string;
  /** For `rule: "pin"`: what changed since the operator approved the hosted server's tool (policy/pins.ts diff lines, at most 20). */
  changes?: string[];
  /** Time from receipt to result, in ms. */
  durationMs: number;
  /** SHA-256 (hex) of the canonical JSON of the arguments; never the arguments. */
  inputSha256: string;
}

/**
 * Written instead of refusal events a principal sent faster than the audit rate for refusals
 * (`JsonlAuditSink`): how many events of each type were left out for that principal between
 * `since` and `until`. At most one per principal per second.
 */
export interface AuditSuppressedV2 {
  v: 2;
  type: 'audit.suppressed';
  /** ISO-8601 UTC time the summary was written. */
  at: string;
  auditId: string;
  principal: string;
  /** ISO-8601 UTC times of the first and the last event left out. */
  since: string;
  until: string;
  /** Events left out, by event type (`tool.call.denied`, `tool.call.rate-limited`, `tool.call.rejected`). */
  suppressed: Partial<Record<AuditEventV2['type'], number>>;
}

/**
 * What makes the audit stream tamper-evident, on every line the JSONL sink writes (schema
 * version 2; `audit/audit-chain.ts` writes them, `audit/verify-chain.ts` checks them):
 * - `stream`: the chain's id (a UUID), chosen when the chain starts: a new file, stderr at each
 *   process start. A sink that appends to a file whose last line is a v2 event continues that
 *   event's stream (same id, next seq, prev = its hash), so a file holds one chain across restarts.
 * - `seq`: 1 for the chain's first event, then +1 per line, without gaps.
 * - `prev`: SHA-256 (lower-case hex) of the previous line of the stream, its exact bytes
 *   without the newline; `AUDIT_GENESIS` (64 zeros) for seq 1.
 * - `sig` (only with `audit.signingKey`): Ed25519 signature (RFC 8032), base64, over the exact
 *   bytes of the line as it would be without `,"sig":"…"`, which is always its last member.
 */
export interface AuditChainFields {
  stream: string;
  seq: number;
  prev: string;
  sig?: string;
}

/** `prev` of a stream's first event (seq 1). */
export const AUDIT_GENESIS = '0'.repeat(64);

/**
 * One egress decision of a call (egress/proxy.ts, and the isolate `fetch`): a request or tunnel
 * allowed (written when it ended, with its status and bytes) or refused (written at once, with the
 * rule that refused it). Never a body, a header value, a path or a query: host, port, method only.
 */
export interface AuditEgressV2 {
  v: 2;
  type: 'egress.allowed' | 'egress.denied';
  at: string;
  auditId: string;
  /** The call's job id. */
  jobId: string;
  principal: string;
  /** The MCP tool name. */
  tool: string;
  profile: string;
  /** Destination as the sandbox named it (a host name or an IP literal) and port. */
  host: string;
  port: number;
  /** The address connected to (allowed only). */
  address?: string;
  /** HTTP method, or `CONNECT` for a tunnel. */
  method: string;
  /** HTTP status sent to the sandbox (200 for an established tunnel; 403/413/429/502/504 for refusals and failures). */
  status: number;
  /** Bytes of request body / tunnel payload sent upstream, and of response body / payload received. */
  bytesOut: number;
  bytesIn: number;
  /**
   * What decided: for `egress.allowed` the allow entry that matched (as written in the profile);
   * for `egress.denied` `allowlist` (no entry matches), `address` (the name resolves to a refused
   * range), `resolve` (no answer), or the limit (`maxRequests`, `maxBytesOut`, `maxBytesIn`,
   * `requestTimeoutMs`), `protocol` (not a proxy request toolcell serves), or `secret` (a placeholder
   * sent to a host its secret does not belong to, or over plain HTTP).
   */
  rule: string;
  /**
   * Secret names, never values: for `rule: "secret"` the secret whose placeholder was sent where
   * it does not belong (attempted exfiltration); for `egress.allowed` the secrets put into the request.
   */
  secrets?: string[];
  /** Time from the request to its end, in ms. */
  durationMs: number;
}

/** Whether an event is an egress decision (`AuditEgressV2`). */
export function isEgressEvent(event: AuditEventV2 | AuditEgressV2): event is AuditEgressV2 {
  return event.type === 'egress.allowed' || event.type === 'egress.denied';
}

/** SHA-256 hex of `JSON.stringify(value)` (undefined hashes as `null`). */
export function sha256Json(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value ?? null)).digest('hex');
}

/** A fresh audit id. */
export const newAuditId = (): string => randomUUID();

/** Destination of audit events (the sink adds the chain fields). Implementations must not throw from `write`. */
export interface AuditSink {
  write(event: AuditEventV2 | AuditEgressV2): void;
  close(): Promise<void>;
}
