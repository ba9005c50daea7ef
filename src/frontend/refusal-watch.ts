/** Spots one principal refused again and again (DENIED by grants, pins, egress, secrets) from the audit stream, for metrics that never name the principal. */
import {createHash} from 'node:crypto';
import type {AuditEventV2, AuditSink} from '../audit/audit-event.ts';

/** How many refusals of one rule by one principal, within how long, make a burst. */
export interface RefusalBurstLimits {
  /** Refusals of one rule by one principal that make a burst. */
  threshold: number;
  /** Window they must fall in, in ms (fixed windows starting at the principal's first refusal). */
  windowMs: number;
}

/** Default: 10 refusals of one rule by one principal within 5 minutes. */
export const DEFAULT_REFUSAL_BURST: RefusalBurstLimits = {threshold: 10, windowMs: 5 * 60_000};

/**
 * Every rule label the watch can report for toolcell's own refusals, so the metrics can start
 * each series at 0 (Prometheus `increase()` misses the first increment of a series that
 * appears with value 1): `tool.call.denied` rules (`grants`, `unknown-tool`, `pin`, `egress`,
 * `secret`, `commands`), `egress.denied` rules that are labels (`allowlist`, `address`,
 * `resolve`, `protocol`; the limit names `maxRequests`... are not and count as `other`), and
 * `other`. Not guaranteed: a rule a later change adds must be added here, or its first
 * increment is missed the same way (its series still appears).
 */
export const REFUSAL_RULES = ['grants', 'unknown-tool', 'pin', 'egress', 'secret', 'commands', 'allowlist', 'address', 'resolve', 'protocol', 'other'] as const;

/** Principal/rule pairs remembered at once; past it the least recently refused is forgotten. */
export const MAX_TRACKED_REFUSERS = 10_000;
/** Distinct rule labels reported; further rules are reported as `other`. */
const MAX_RULES = 32;
const RULE_LABEL = /^[a-z][a-z0-9-]{0,31}$/;

interface Window {
  start: number;
  count: number;
  reported: boolean;
}

/**
 * Counts refusals (`DENIED`) per rule and notices when one principal is refused `threshold`
 * times for one rule within `windowMs` (a *burst*: probing for ungranted tools, a client
 * retrying a pinned tool that drifted, a tool trying hosts it may not reach or sending a secret
 * where it does not belong). Each burst is reported once per window. Reports carry the rule
 * only: the metric never names a principal (cardinality, and `/metrics` readers need not learn
 * who); the audit stream says who.
 *
 * Rules are labels of our own code (`grants`, `unknown-tool`, `pin`, `egress`, `secret`, ...);
 * anything that does not look like one, and any rule past the 32nd distinct one, is reported
 * as `other`. Memory: at most {@link MAX_TRACKED_REFUSERS} principal/rule windows, each keyed by
 * at most ~100 bytes (a principal id over 64 characters is keyed by its SHA-256) (the least
 * recently refused is forgotten, so a flood of fresh principals can hide one slow prober).
 * Not guaranteed: a principal refused just under the threshold per window forever is never
 * reported; refusals the audit sink suppressed in a flood are still counted here.
 */
export class RefusalWatch {
  readonly #limits: RefusalBurstLimits;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  readonly #rules = new Set<string>();
  readonly #onRefusal: (rule: string) => void;
  readonly #onBurst: (rule: string) => void;

  constructor(options: {onRefusal: (rule: string) => void; onBurst: (rule: string) => void; limits?: RefusalBurstLimits; now?: () => number}) {
    this.#limits = options.limits ?? DEFAULT_REFUSAL_BURST;
    this.#now = options.now ?? Date.now;
    this.#onRefusal = options.onRefusal;
    this.#onBurst = options.onBurst;
  }

  /** Records one refusal of `principal` by `rule` (undefined: `other`). */
  observe(principal: string, rule: string | undefined): void {
    const label = this.#label(rule);
    this.#onRefusal(label);
    // A token subject can be long: keys stay small (memory is MAX_TRACKED_REFUSERS keys of at most ~100 bytes).
    const key = `${label}\0${principal.length > 64 ? createHash('sha256').update(principal).digest('base64') : principal}`;
    const now = this.#now();
    let window = this.#windows.get(key);
    if (window === undefined || now - window.start >= this.#limits.windowMs) {
      window = {start: now, count: 0, reported: false};
    }
    // Re-insert: Map order is recency order, so the first key is the least recently refused.
    this.#windows.delete(key);
    this.#windows.set(key, window);
    if (this.#windows.size > MAX_TRACKED_REFUSERS) this.#windows.delete(this.#windows.keys().next().value!);
    window.count++;
    if (window.count >= this.#limits.threshold && !window.reported) {
      window.reported = true;
      this.#onBurst(label);
    }
  }

  /**
   * An audit sink that writes through to `sink` and observes every `tool.call.denied` event
   * (and any other `*.denied` event that names a principal).
   */
  tap(sink: AuditSink): AuditSink {
    return {
      write: (event) => {
        sink.write(event);
        const e = event as Partial<AuditEventV2> & {type: string};
        if (e.type.endsWith('.denied') && typeof e.principal === 'string') this.observe(e.principal, typeof e.rule === 'string' ? e.rule : undefined);
      },
      close: () => sink.close(),
    };
  }

  #label(rule: string | undefined): string {
    if (rule === undefined || !RULE_LABEL.test(rule)) return 'other';
    if (this.#rules.has(rule)) return rule;
    if (this.#rules.size >= MAX_RULES) return 'other';
    this.#rules.add(rule);
    return rule;
  }
}
