// Pins of a hosted MCP server's tools: the canonical form of a definition, its SHA-256, and a readable diff.
import {createHash} from 'node:crypto';
import {isFrozenEntry} from '../backends/server/frozen-listing.ts';

/**
 * The fields of an MCP tool definition (MCP 2025-11-25, server/tools §Tool) that a pin covers.
 * Anything else a server sends (`icons`, `execution`, `_meta`, unknown keys) is not pinned, and
 * is never served either: toolcell lists only the pinned definition.
 */
export const PINNED_FIELDS = ['name', 'title', 'description', 'inputSchema', 'outputSchema', 'annotations'] as const;

/**
 * The fields a pin covers for each kind a hosted server lists (MCP 2025-11-25 server/resources
 * §Resource, §Resource Templates; server/prompts §Prompt). Not pinned: `size` (a resource's size
 * may change with its content), `icons`, `_meta` and unknown keys, none of which toolcell serves.
 * The key (name, uri, uriTemplate) is itself pinned: a renamed entry is a new one.
 */
export const PINNED_FIELDS_BY_KIND = Object.freeze({
  tool: PINNED_FIELDS,
  resource: ['uri', 'name', 'title', 'description', 'mimeType', 'annotations'],
  resourceTemplate: ['uriTemplate', 'name', 'title', 'description', 'mimeType', 'annotations'],
  prompt: ['name', 'title', 'description', 'arguments'],
} as const);

/** A kind of definition a hosted server lists and toolcell pins. */
export type PinnedKind = keyof typeof PINNED_FIELDS_BY_KIND;

/** One of {@link PINNED_FIELDS}. */
export type PinnedField = typeof PINNED_FIELDS[number];

/** A tool definition as a server lists it (parsed JSON); only {@link PINNED_FIELDS} are read. */
export type ServerToolDefinition = {readonly name: string} & {readonly [key: string]: unknown};

/** Greatest nesting depth {@link canonicalJson} accepts (objects and arrays), beyond which it throws. */
export const MAX_CANONICAL_DEPTH = 64;

/**
 * Serializes a JSON value with the keys of every object sorted (by UTF-16 code units, as RFC 8785
 * JCS §3.2.3 sorts them) and no whitespace. For values that came from JSON.parse this is the JCS
 * form (numbers and strings as ECMAScript's JSON.stringify writes them, RFC 8785 §3.2.2).
 * Object properties whose value is `undefined` are left out, as JSON.stringify does. A
 * `__proto__` key is an ordinary key here (the output is built as text, never as an object).
 * @throws Error for a value JSON cannot hold (function, symbol, bigint), a cycle, or nesting
 *   deeper than {@link MAX_CANONICAL_DEPTH}.
 */
export function canonicalJson(value: unknown, depth = 0): string {
  if (depth > MAX_CANONICAL_DEPTH) throw new Error(`a tool definition nests deeper than ${MAX_CANONICAL_DEPTH} levels`);
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string': return JSON.stringify(value);
    case 'boolean': return value ? 'true' : 'false';
    case 'number': return JSON.stringify(value);
    case 'object': break;
    default: throw new Error(`a tool definition holds a ${typeof value}, which JSON cannot`);
  }
  if (Array.isArray(value)) {
    return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item, depth + 1))).join(',')}]`;
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).filter((k) => record[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k], depth + 1)}`).join(',')}}`;
}

/**
 * The canonical form of a tool definition that its pin hashes: an object holding only the
 * {@link PINNED_FIELDS} present in `def` (absent or `undefined` ones omitted), every object's
 * keys sorted recursively, no whitespace ({@link canonicalJson}). Two definitions that differ only
 * in key order, whitespace or unpinned fields have the same canonical form.
 * `fields` picks another kind's pinned fields (resources, templates, prompts: {@link PINNED_FIELDS_BY_KIND}).
 * Does NOT normalize meaning: `{"type": "object"}` and `{"type": "object", "properties": {}}`
 * are different pins although they validate the same arguments.
 * @throws Error as {@link canonicalJson} does.
 */
export function canonicalDefinition(def: ServerToolDefinition, fields: readonly string[] = PINNED_FIELDS): string {
  const picked: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const field of fields) {
    if (Object.hasOwn(def, field) && def[field] !== undefined) picked[field] = def[field];
  }
  return canonicalJson(picked);
}

/**
 * SHA-256 (FIPS 180-4) of the UTF-8 bytes of {@link canonicalDefinition}, as 64 lowercase hex
 * digits: the `sha256` a hosted package stores for each tool.
 * @throws Error as {@link canonicalJson} does.
 */
export function definitionSha256(def: ServerToolDefinition, fields: readonly string[] = PINNED_FIELDS): string {
  return createHash('sha256').update(canonicalDefinition(def, fields), 'utf8').digest('hex');
}

/** Longest excerpt of a value shown in a diff line, in characters. */
const EXCERPT_CHARS = 60;
/** Most lines {@link diffDefinitions} returns; the last one then says how many were left out. */
export const MAX_DIFF_LINES = 20;

// Characters that do not show when printed: controls, format characters (zero-width, bidi
// controls, U+E0000 tags), separators other than the space, lone surrogates.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\u{E0000}-\u{E007F}]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/gu;

/** Makes invisible characters visible as `\u{…}` so that a diff shows them. */
function visible(text: string): string {
  return text.replace(INVISIBLE, (c) => `\\u{${c.codePointAt(0)!.toString(16).toUpperCase()}}`);
}

/** {@link canonicalJson}, or a marker for a value it refuses (too deep, not JSON). */
const NOT_CANONICAL = '(not canonical JSON: too deep or not JSON)';
function canonicalOrMarker(value: unknown): string {
  try {
    return canonicalJson(value);
  } catch {
    return NOT_CANONICAL;
  }
}

/** A short, visible rendering of a JSON value (strings quoted), cut to {@link EXCERPT_CHARS}. */
function short(value: unknown): string {
  if (value === undefined) return '(absent)';
  const text = visible(typeof value === 'string' ? JSON.stringify(value) : canonicalOrMarker(value));
  return (text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS - 1)}…` : text).toWellFormed();
}

/** Two strings around their first difference: `"…common prefix… before…" → "…after…"`. */
function stringChange(before: string, after: string): string {
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start++;
  const from = Math.max(0, start - 20);
  const cut = (s: string) => {
    const excerpt = visible(s.slice(from));
    const body = excerpt.length > EXCERPT_CHARS ? `${excerpt.slice(0, EXCERPT_CHARS - 1)}…` : excerpt;
    return `${from > 0 ? '"…' : '"'}${body}"`.toWellFormed();
  };
  return `${cut(before)} → ${cut(after)} (first difference at character ${start})`;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** An own property only: a `__proto__` or `constructor` key must not reach Object.prototype. */
const own = (o: Record<string, unknown>, key: string): unknown => (Object.hasOwn(o, key) ? o[key] : undefined);

function pathOf(parent: string, key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? `${parent}.${key}` : `${parent}[${JSON.stringify(visible(key))}]`;
}

function diffValues(path: string, before: unknown, after: unknown, out: string[], depth: number): void {
  const a = canonicalOrMarker(before ?? null);
  const b = canonicalOrMarker(after ?? null);
  if ((before === undefined) === (after === undefined) && a === b && a !== NOT_CANONICAL) return;
  if (before === undefined) {
    out.push(`${path} added: ${short(after)}`);
  } else if (after === undefined) {
    out.push(`${path} removed (was ${short(before)})`);
  } else if (typeof before === 'string' && typeof after === 'string') {
    out.push(`${path} changed: ${stringChange(before, after)}`);
  } else if (isRecord(before) && isRecord(after) && depth < MAX_CANONICAL_DEPTH) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    for (const key of keys) diffValues(pathOf(path, key), own(before, key), own(after, key), out, depth + 1);
  } else if (Array.isArray(before) && Array.isArray(after) && depth < MAX_CANONICAL_DEPTH) {
    if (before.length !== after.length) {
      out.push(`${path} changed: ${short(before)} → ${short(after)}`);
    } else {
      for (let i = 0; i < before.length; i++) diffValues(`${path}[${i}]`, before[i], after[i], out, depth + 1);
    }
  } else {
    out.push(`${path} changed: ${short(before)} → ${short(after)}`);
  }
}

/**
 * What changed between the definition an operator approved and the one a server lists now, as
 * human-readable lines naming the field (a path such as `inputSchema.properties.path.description`)
 * and a short before/after excerpt with invisible characters shown as `\u{…}`; e.g.
 * `description changed: "Echo the input." → "Echo the input. <IMPORTANT>…" (first difference at character 15)`.
 * Only {@link PINNED_FIELDS} are compared; `[]` means the pins match. At most
 * {@link MAX_DIFF_LINES} lines (the last then counts the rest).
 * Meant for operators and for the refusal message; it does NOT judge whether a change is
 * harmless: any line means the pin no longer holds.
 */
export function diffDefinitions(approved: ServerToolDefinition, seen: ServerToolDefinition, fields: readonly string[] = PINNED_FIELDS): string[] {
  const out: string[] = [];
  for (const field of fields) {
    const before = own(approved, field);
    const after = own(seen, field);
    diffValues(field, before, after, out, 0);
  }
  if (out.length > MAX_DIFF_LINES) {
    const rest = out.length - (MAX_DIFF_LINES - 1);
    return [...out.slice(0, MAX_DIFF_LINES - 1), `…and ${rest} more changes`];
  }
  return out;
}

/**
 * SHA-256 (lowercase hex) of a profile as loaded (defaults applied), in canonical JSON
 * ({@link canonicalJson}) without `$schema` and `description` (they grant nothing): the
 * `profileSha256` that `add`/`update` store in a hosted package's `server` section. Any change of
 * a limit, grant, mount, command or runtime changes it.
 * @throws Error as {@link canonicalJson} does.
 */
export function profileSha256(profile: Readonly<Record<string, unknown>>): string {
  const {$schema: _schema, description: _description, ...grants} = profile;
  return createHash('sha256').update(canonicalJson(grants), 'utf8').digest('hex');
}

/** A pinned tool as a hosted package stores it. */
export interface ToolPin {
  readonly sha256: string;
  readonly definition: ServerToolDefinition;
}

/** Policy's verdict on a server's `tools/list` for one call (the shape backends/backend.ts `ListingVerdict` has). */
export type PinVerdict =
  | {ok: true; drift?: string[]}
  | {ok: false; message: string; changes: string[]; drift?: string[]};

/** Most change lines quoted in a refusal message (all go to the log and the audit event). */
const MESSAGE_CHANGES = 3;

/**
 * Tool pin hashes ({@link definitionSha256}, or undefined when the entry cannot be hashed) of
 * listing entries deep-frozen by `freezeListing` (backends/server/frozen-listing.ts): such an
 * entry can no longer change, so its hash is computed once (the warm pool does it when a member
 * is ready, off the call's path) and reused by the call that takes the member. Entries that are
 * not frozen are hashed at every {@link verifyListing}. Keyed by identity; keeps nothing alive.
 */
const frozenEntryHashes = new WeakMap<object, string | undefined>();

/** {@link definitionSha256} of a listed tool entry (cached for frozen entries); undefined when it cannot be hashed. */
function listedToolSha256(def: Readonly<Record<string, unknown>>): string | undefined {
  const cacheable = isFrozenEntry(def);
  if (cacheable && frozenEntryHashes.has(def)) return frozenEntryHashes.get(def);
  let sha: string | undefined;
  try {
    sha = definitionSha256(def as ServerToolDefinition);
  } catch {
    sha = undefined;
  }
  if (cacheable) frozenEntryHashes.set(def, sha);
  return sha;
}

/**
 * Compares the `tools/list` a fresh server answered with the pins, for a call of `tool` (the
 * server's own tool name; `mcpName` names it in the message). The call may go on only when the
 * server lists `tool` exactly once and its canonical definition hashes to the pin. Changes of
 * *other* tools (changed, vanished, or listed but never approved) are returned as `drift`, for
 * the log: they do not refuse this call (each is refused when it is called, and an unapproved
 * tool is never served). Pure (the hashes of entries deep-frozen by `freezeListing` are computed
 * once and kept: see {@link frozenEntryHashes}).
 * @returns `{ok: false, message, changes}` naming what changed (diffDefinitions lines) when the pin breaks.
 */
export function verifyListing(tool: string, mcpName: string, pins: ReadonlyMap<string, ToolPin>,
  listed: ReadonlyArray<Readonly<Record<string, unknown>>>): PinVerdict {
  const byName = new Map<string, Array<Readonly<Record<string, unknown>>>>();
  for (const entry of listed) {
    const name = typeof entry.name === 'string' ? entry.name : '';
    byName.set(name, [...(byName.get(name) ?? []), entry]);
  }
  const hash = listedToolSha256;
  const drift: string[] = [];
  for (const [name, pin] of pins) {
    if (name === tool) continue;
    const seen = byName.get(name);
    if (!seen) drift.push(`tool ${JSON.stringify(name)} is no longer listed`);
    else if (seen.length > 1 || hash(seen[0]!) !== pin.sha256) drift.push(`tool ${JSON.stringify(name)} changed`);
  }
  for (const name of byName.keys()) if (!pins.has(name)) drift.push(`tool ${JSON.stringify(visible(name.slice(0, 64)))} is listed but was never approved`);
  const driftPart = drift.length > 0 ? {drift: drift.slice(0, MAX_DIFF_LINES)} : {};

  const pin = pins.get(tool);
  const seen = byName.get(tool);
  let changes: string[];
  if (pin === undefined) changes = ['the tool has no pin'];
  else if (seen === undefined) changes = ['the server no longer lists this tool'];
  else if (seen.length > 1) changes = [`the server lists this tool ${seen.length} times`];
  else if (hash(seen[0]!) === pin.sha256) return {ok: true, ...driftPart};
  else {
    changes = diffDefinitions(pin.definition, seen[0] as ServerToolDefinition);
    if (changes.length === 0) changes = ['the definition no longer matches its SHA-256 pin'];
  }
  return {
    ok: false,
    message: `The tool "${mcpName}" is refused: the hosted server's definition of it differs from the one approved (pin): ${changes.slice(0, MESSAGE_CHANGES).join('; ')}${changes.length > MESSAGE_CHANGES ? `; and ${changes.length - MESSAGE_CHANGES} more` : ''}.`,
    changes,
    ...driftPart,
  };
}
