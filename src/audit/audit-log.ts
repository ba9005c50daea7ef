/** Where audit events go: JSON lines to a file or stderr (never stdout), or memory for tests; refusal events rate-limited per principal. */
import {createWriteStream, type WriteStream} from 'node:fs';
import {escapeJsonForTerminal} from '../terminal-text.ts';
import {newAuditId, isEgressEvent, type AuditEgressV1, type AuditEventV1, type AuditSink, type AuditSuppressedV1} from './audit-event.ts';

/** The audit rate for refusal events of one principal: a token bucket. */
export interface RefusalAuditLimits {
  /** Refusal events per second written for one principal, sustained. */
  ratePerSec: number;
  /** Refusal events written at once after a quiet period. */
  burst: number;
}

/**
 * Default refusal audit rate: 20 events/s per principal, bursts of 100. A principal's calls that
 * reach a tool are limited by its quota (20/s by default); refusals happen before the quota and
 * cost the client nothing, so without this a client could grow the audit file as fast as it can
 * send (11,000 events/s were measured).
 */
export const DEFAULT_REFUSAL_AUDIT_LIMITS: RefusalAuditLimits = {ratePerSec: 20, burst: 100};

/** Event types that record a refusal before the principal's quota was charged. */
const REFUSAL_TYPES: ReadonlySet<AuditEventV1['type']> = new Set(['tool.call.denied', 'tool.call.rate-limited', 'tool.call.rejected']);
/** Principals whose refusal buckets are remembered at once; past it the oldest is forgotten (it starts full again). */
const MAX_TRACKED_PRINCIPALS = 10_000;
/** How long after the first event left out its summary is written, in ms. */
const SUMMARY_DELAY_MS = 1000;

interface RefusalBucket {
  tokens: number;
  updated: number;
  /** Events left out since the last summary, by type; undefined when none. */
  suppressed?: Partial<Record<AuditEventV1['type'], number>>;
  since?: string;
  until?: string;
}

/**
 * Writes audit events as JSON lines to a file (appending, mode 0600) or to stderr
 * (`target === 'stderr'`), or drops them (`'off'`). Never to stdout: on stdio, stdout is the
 * protocol. Writes are asynchronous and ordered; a failing file is reported once on stderr
 * and then ignored, so that auditing cannot stop the server from answering.
 *
 * Refusal events (`tool.call.denied`, `tool.call.rate-limited`, `tool.call.rejected`) are
 * written at most at `refusalLimits` per principal; past it they are counted and, a second
 * after the first one left out, one `audit.suppressed` event (`AuditSuppressedV1`) says how many
 * of each type were left out, and when. Completed calls are never left out (the quota bounds
 * them). Nothing of this is visible to the client. Not guaranteed: which individual refusals are
 * written during a flood (the first ones are), nor their tool names.
 *
 * Every string is written well-formed: a lone UTF-16 surrogate (a client-chosen tool name, a
 * token subject) becomes U+FFFD, so that each line is valid UTF-8 JSON. Control characters
 * beyond JSON's own escapes (C1 controls such as CSI U+009B, DEL, bidi overrides, U+2028/9)
 * are written as `\uXXXX` escapes too: the line parses to the same event, and a client-chosen
 * name cannot act on the terminal of an operator who reads the stream (`tail -f`, stderr).
 */
export class JsonlAuditSink implements AuditSink {
  readonly #stream: WriteStream | NodeJS.WriteStream | undefined;
  readonly #limits: RefusalAuditLimits;
  readonly #now: () => number;
  readonly #buckets = new Map<string, RefusalBucket>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #failed = false;

  /**
   * @param target a file path, `'stderr'`, or `'off'`
   * @param options.refusalLimits the per-principal rate for refusal events (default `DEFAULT_REFUSAL_AUDIT_LIMITS`)
   * @param options.now monotonic clock in ms (tests); default `performance.now()`
   * @throws RangeError when a limit is not a positive number
   */
  constructor(target: string, options: {refusalLimits?: RefusalAuditLimits; now?: () => number} = {}) {
    this.#limits = {...(options.refusalLimits ?? DEFAULT_REFUSAL_AUDIT_LIMITS)};
    if (!(this.#limits.ratePerSec > 0) || !(this.#limits.burst >= 1)) throw new RangeError('refusal audit limits: ratePerSec must be > 0 and burst >= 1');
    this.#now = options.now ?? (() => performance.now());
    if (target === 'off') return;
    if (target === 'stderr') {
      this.#stream = process.stderr;
      return;
    }
    const stream = createWriteStream(target, {flags: 'a', mode: 0o600});
    stream.on('error', (err) => {
      if (!this.#failed) process.stderr.write(`toolcell: audit log ${target} failed: ${err.message}\n`);
      this.#failed = true;
    });
    this.#stream = stream;
  }

  write(event: AuditEventV1 | AuditEgressV1): void {
    if (this.#stream === undefined || this.#failed) return;
    // Egress events are bounded per call by the grant's maxRequests (egress/proxy.ts), not here.
    if (!isEgressEvent(event) && REFUSAL_TYPES.has(event.type) && !this.#admitRefusal(event)) return;
    this.#line(event);
  }

  async close(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const [principal, bucket] of this.#buckets) this.#summarize(principal, bucket);
    const stream = this.#stream;
    if (stream === undefined || stream === process.stderr) return;
    await new Promise<void>((resolve) => (stream as WriteStream).end(resolve));
  }

  #line(event: AuditEventV1 | AuditEgressV1 | AuditSuppressedV1): void {
    if (this.#stream === undefined || this.#failed) return;
    this.#stream.write(`${escapeJsonForTerminal(JSON.stringify(event, wellFormed))}\n`);
  }

  /** Takes a token from the principal's refusal bucket; when there is none, counts the event for the summary. */
  #admitRefusal(event: AuditEventV1): boolean {
    const now = this.#now();
    let bucket = this.#buckets.get(event.principal);
    if (bucket === undefined) {
      if (this.#buckets.size >= MAX_TRACKED_PRINCIPALS) {
        const [oldest, old] = this.#buckets.entries().next().value!;
        this.#summarize(oldest, old);
        this.#buckets.delete(oldest);
      }
      bucket = {tokens: this.#limits.burst, updated: now};
      this.#buckets.set(event.principal, bucket);
    }
    bucket.tokens = Math.min(this.#limits.burst, bucket.tokens + ((now - bucket.updated) / 1000) * this.#limits.ratePerSec);
    bucket.updated = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return true;
    }
    if (bucket.suppressed === undefined) {
      bucket.suppressed = {};
      bucket.since = event.at;
      const principal = event.principal;
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        const current = this.#buckets.get(principal);
        if (current !== undefined) this.#summarize(principal, current);
      }, SUMMARY_DELAY_MS);
      timer.unref();
      this.#timers.add(timer);
    }
    bucket.suppressed[event.type] = (bucket.suppressed[event.type] ?? 0) + 1;
    bucket.until = event.at;
    return false;
  }

  /** Writes the `audit.suppressed` event of a principal, if anything was left out, and starts counting afresh. */
  #summarize(principal: string, bucket: RefusalBucket): void {
    if (bucket.suppressed === undefined) return;
    this.#line({
      v: 1,
      type: 'audit.suppressed',
      at: new Date().toISOString(),
      auditId: newAuditId(),
      principal,
      since: bucket.since!,
      until: bucket.until!,
      suppressed: bucket.suppressed,
    });
    delete bucket.suppressed;
    delete bucket.since;
    delete bucket.until;
  }
}

/** `JSON.stringify` replacer: strings with lone surrogates become well-formed (U+FFFD). */
function wellFormed(_key: string, value: unknown): unknown {
  return typeof value === 'string' ? value.toWellFormed() : value;
}

/**
 * Keeps every event in memory, unbounded, in write order; for tests that assert what was
 * audited. Not for a server: nothing is ever evicted, and nothing is rate-limited.
 */
export class MemoryAuditSink implements AuditSink {
  readonly events: AuditEventV1[] = [];
  /** Egress decisions (`egress.allowed` / `egress.denied`), apart so `events` keeps its one shape. */
  readonly egress: AuditEgressV1[] = [];
  write(event: AuditEventV1 | AuditEgressV1): void {
    if (isEgressEvent(event)) this.egress.push(event);
    else this.events.push(event);
  }
  async close(): Promise<void> {}
}
