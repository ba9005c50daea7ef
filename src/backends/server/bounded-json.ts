/**
 * Depth- and size-bounded views of untrusted JSON a hosted server sent (log data, results), so
 * nothing the server sends can make toolcell's own serializer recurse past the stack.
 */

/** Deepest nesting of arrays/objects relayed in a log notification's `data`; deeper parts become "…". */
export const MAX_LOG_DATA_DEPTH = 16;
/** Most characters of a relayed log notification's `data` text. */
export const MAX_LOG_DATA_CHARS = 8 * 1024;
/** Deepest nesting of arrays/objects accepted in a server's `tools/call` result. */
export const MAX_RESULT_DEPTH = 64;

const isContainer = (v: unknown): v is object => typeof v === 'object' && v !== null;

/**
 * The depth of `value` (0 for a primitive, 1 for `[]` or `{}`), counted without recursion so any
 * nesting is measured safely, stopping once it exceeds `limit` (then `limit + 1`).
 * Does NOT: look at sizes or cycles (JSON.parse output has none).
 */
export function jsonDepth(value: unknown, limit: number): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (!isContainer(v)) continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    if (max > limit) return limit + 1;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (isContainer(child)) stack.push([child, depth]);
  }
  return max;
}

/**
 * One-line JSON text of untrusted `value` for a log line: strings are returned as they are (cut
 * to `maxChars`), anything else is serialized with arrays/objects deeper than `maxDepth` replaced
 * by the string "…", and the text cut to `maxChars` characters (then ending in "…").
 * Never throws (a value that still cannot be serialized, e.g. a BigInt from a caller, gives
 * "[unserializable]"); the recursion is bounded by `maxDepth`, not by the input.
 * Does NOT: escape terminal control characters inside a string `value` (the caller quotes it).
 */
export function boundedJsonText(value: unknown, maxDepth = MAX_LOG_DATA_DEPTH, maxChars = MAX_LOG_DATA_CHARS): string {
  const cut = (s: string) => (s.length > maxChars ? `${s.slice(0, maxChars - 1)}…` : s);
  if (typeof value === 'string') return cut(value);
  let budget = maxChars;
  const prune = (v: unknown, depth: number): unknown => {
    if (!isContainer(v)) return v;
    if (depth >= maxDepth) return '…';
    // Stop copying once the copy is surely longer than what is kept (each member costs at least 2 chars).
    if ((budget -= 2) < 0) return '…';
    if (Array.isArray(v)) {
      const out: unknown[] = [];
      for (const item of v) {
        if (budget < 0) break;
        out.push(prune(item, depth + 1));
      }
      return out;
    }
    const out: Record<string, unknown> = {};
    for (const [k, item] of Object.entries(v)) {
      if (budget < 0) break;
      budget -= k.length;
      out[k] = prune(item, depth + 1);
    }
    return out;
  };
  try {
    return cut(JSON.stringify(prune(value, 0)) ?? 'null');
  } catch {
    return '[unserializable]';
  }
}

/**
 * `boundedJsonText` of `value` for a call whose output is scrubbed of secret values: the text is
 * scrubbed whole (`scrub`: egress/output-scrub.ts `OutputScrubber.text`) BEFORE it is cut to
 * `maxChars`, so a value straddling the cut cannot reach the client as a prefix (a cut may only
 * shorten a placeholder). Without `scrub`, exactly `boundedJsonText`.
 * Cost: the whole text up to `maxDepth` is serialized (bounded by the line the server sent).
 * Never throws (as `boundedJsonText`, unless `scrub` does).
 */
export function boundedScrubbedText(value: unknown, scrub: ((text: string) => string) | undefined, maxDepth = MAX_LOG_DATA_DEPTH, maxChars = MAX_LOG_DATA_CHARS): string {
  if (scrub === undefined) return boundedJsonText(value, maxDepth, maxChars);
  const whole = scrub(boundedJsonText(value, maxDepth, Number.POSITIVE_INFINITY));
  return whole.length > maxChars ? `${whole.slice(0, maxChars - 1)}…` : whole;
}

/** Most characters of a server's text quoted inside one of toolcell's own messages. */
export const MAX_QUOTED_CHARS = 200;

/**
 * Server text placed inside a toolcell-authored message, as data: `the server said: "…"`, JSON
 * string syntax on one line (newlines, control characters, U+2028/U+2029 escaped), cut to
 * `maxChars` characters ("…" marks a cut; a surrogate pair cut in half becomes U+FFFD). Pure.
 * Does NOT: stop a model from reading the quoted words as advice (it is labelled, not removed).
 */
export function quoteServerText(text: string, maxChars = MAX_QUOTED_CHARS): string {
  const cut = text.length > maxChars ? `${text.slice(0, maxChars).toWellFormed()}…` : text.toWellFormed();
  return `the server said: ${jsonLine(cut)}`;
}

/**
 * `text` as a JSON string literal that is one line for any renderer: besides what JSON.stringify
 * escapes (C0 controls, quote, backslash), DEL, C1 controls (NEL U+0085 among them) and
 * U+2028/U+2029 are escaped as `\uXXXX`. Pure.
 */
export function jsonLine(text: string): string {
  return JSON.stringify(text).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
