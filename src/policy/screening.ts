// Description screening: finds hidden instructions in a hosted server's tool (prompt, resource) definitions before an operator approves them.

/**
 * What a finding is about. `rule` names the kind of hidden instruction:
 * - `invisible-unicode`: characters a person does not see but a model reads: Unicode tag
 *   characters U+E0000–E007F (which spell ASCII invisibly), zero-width and other format
 *   characters (general category Cf: U+200B–U+200F, U+2060–U+2064, U+FEFF, U+00AD, ...),
 *   bidi controls (U+202A–U+202E, U+2066–U+2069), control characters other than tab, LF and
 *   CR (ANSI escapes can hide text on the operator's terminal), variation selectors that
 *   follow no visible character, U+E0100–E01EF, and blank fillers (U+115F, U+1160, U+3164,
 *   U+FFA0, U+2800);
 * - `model-markup`: tags and tokens aimed at a model (`<IMPORTANT>`, `<system>`,
 *   `<instructions>`, `<|im_start|>`, `[INST]`, `<<SYS>>`, HTML comments that a rendered
 *   description hides);
 * - `instruction-override`: "ignore previous instructions", "you are now", "system prompt";
 * - `secret-access`: names of secret files (`~/.ssh`, `id_rsa`, `.env`, `mcp.json`,
 *   `.aws/credentials`, `.npmrc`, ...) anywhere, and secret words (credentials, API key,
 *   token, password, private key) next to a verb that moves them (read, send, pass, include, ...);
 * - `tool-chaining`: text telling the model to call other tools or to change how other tools
 *   behave ("before using any other tool", "always call the x tool first", "when this tool is
 *   available");
 * - `conceal-from-user`: text telling the model to hide something from the user ("do not tell
 *   the user", "without the user's knowledge", "secretly");
 * - `oversize`: a description, title or other string, or the whole definition, over its limit
 *   (`ScreeningLimits`).
 */
export type ScreeningRule =
  | 'invisible-unicode'
  | 'model-markup'
  | 'instruction-override'
  | 'secret-access'
  | 'tool-chaining'
  | 'conceal-from-user'
  | 'oversize';

/** One thing to screen: a tool, prompt, resource or resource template as the server listed it. */
export interface ScreenTarget {
  kind: 'tool' | 'prompt' | 'resource' | 'resourceTemplate';
  /** The item's name as listed (may itself carry hidden characters; shown made visible). */
  name: string;
  /** The definition as the server sent it (JSON); every string and every key in it is screened. */
  definition: unknown;
}

/**
 * One finding: where (`kind` + `item` + `pointer`, an RFC 6901 JSON Pointer into the
 * definition; a pointer ending in a key names that member, `key: true` says the key itself was
 * flagged), which `rule`, and a short `excerpt` with invisible characters made visible as
 * `<U+XXXX>`. `hidden` holds the ASCII text that Unicode tag characters spell, when there is any.
 */
export interface ScreeningFinding {
  kind: ScreenTarget['kind'];
  item: string;
  pointer: string;
  key?: true;
  rule: ScreeningRule;
  excerpt: string;
  hidden?: string;
}

/**
 * Size limits, in UTF-16 code units (characters for ASCII) except `definitionBytes` (UTF-8 bytes
 * of the definition's JSON). Defaults: description 4096, title 256, any other string 4096,
 * definition 65536 bytes. The real `server-everything`, `server-filesystem` and
 * `server-memory` descriptions are under 500 characters.
 */
export interface ScreeningLimits {
  descriptionChars: number;
  titleChars: number;
  stringChars: number;
  definitionBytes: number;
}

export const DEFAULT_SCREENING_LIMITS: Readonly<ScreeningLimits> = Object.freeze({
  descriptionChars: 4096,
  titleChars: 256,
  stringChars: 4096,
  definitionBytes: 65_536,
});

/** Deepest nesting walked; deeper values are reported as `oversize` rather than walked. */
const MAX_DEPTH = 64;
const EXCERPT_CHARS = 120;

// Characters a reader does not see. `\p{Cf}` covers zero-width (U+200B–U+200F), word joiner and
// invisible operators (U+2060–U+2064), bidi embeddings/isolates (U+202A–U+202E, U+2066–U+2069),
// BOM (U+FEFF), soft hyphen (U+00AD), U+061C, U+180E and tag characters U+E0001, U+E0020–E007F;
// the explicit range adds the unassigned tag code points. Controls other than \t \n \r,
// line/paragraph separators, supplementary variation selectors and blank fillers too.
const INVISIBLE_SOURCE = String.raw`\p{Cf}\u{E0000}-\u{E007F}\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u2028\u2029\u{E0100}-\u{E01EF}\u115F\u1160\u3164\uFFA0\u2800`;
const INVISIBLE = new RegExp(`[${INVISIBLE_SOURCE}]`, 'u');
const INVISIBLE_GLOBAL = new RegExp(`[${INVISIBLE_SOURCE}]`, 'gu');
/** A variation selector (U+FE00–FE0F, U+180B–U+180D) at the start or after another one. */
const STRAY_SELECTOR = /(?:^|[\uFE00-\uFE0F\u180B-\u180D])[\uFE00-\uFE0F\u180B-\u180D]/u;
const SELECTOR = /[\uFE00-\uFE0F\u180B-\u180D]/u;

interface PatternRule {
  rule: Exclude<ScreeningRule, 'invisible-unicode' | 'oversize'>;
  pattern: RegExp;
}

const SECRET_WORD = String.raw`(?:credentials?|api[-_ ]?keys?|secrets?|passwords?|passphrases?|private[-_ ]keys?|(?:access|auth|bearer|session|refresh|api)[-_ ]?tokens?|ssh[-_ ]keys?|cookies|seed phrases?|mnemonics?|wallet keys?)`;
const MOVE_VERB = String.raw`(?:read|reads|reading|cat|open|include|including|send|sending|pass|passing|attach|upload|provide|extract|copy|exfiltrate|collect|gather|leak|post|share|append|embed|forward|contents? of|dump|print)`;

/**
 * Pattern rules, matched case-insensitively against the text with invisible characters removed
 * and NFKC-normalized (so full-width letters and zero-width splits do not evade them).
 * Written to keep false positives low: real descriptions that say "Use read_text_file instead",
 * "Use this tool when ..." or "environment variables" do not match (see the screening tests).
 */
const PATTERN_RULES: readonly PatternRule[] = [
  {rule: 'model-markup', pattern: /<\s*\/?\s*(?:important|system|sys|instructions?|assistant|human|hidden|secret|admin|system[-_ ]?prompt|tool[-_ ]?calls?|function[-_ ]?calls?|thinking|critical|urgent|override|developer|prompt|policy)\b[^<>]{0,200}>/i},
  {rule: 'model-markup', pattern: /<\|[a-z_]{2,40}\|>|\[\/?INST\]|<<\/?SYS>>|<!--/i},
  {rule: 'model-markup', pattern: /(?:^|\n)\s*(?:#{1,6}\s*)?(?:system|assistant|human)\s*:/i},
  {rule: 'instruction-override', pattern: /\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,30}\b(?:previous|prior|above|earlier|preceding|all|any|other|system|your|safety)\b[^.\n]{0,30}\b(?:instructions?|prompts?|rules|guidelines|directions|directives|messages|policies)\b/i},
  {rule: 'instruction-override', pattern: /\byou are now\b|\bsystem prompt\b|\bnew instructions?\s*:|\bfrom now on,? you\b/i},
  {rule: 'secret-access', pattern: /~\/\.ssh\b|\.ssh\/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\bmcp\.json\b|claude_desktop_config|\.cursor\/|\.aws\/(?:credentials|config)\b|\.git-credentials\b|\.npmrc\b|\.pypirc\b|\.netrc\b|\.kube\/config\b|\.docker\/config\.json\b|\/etc\/(?:shadow|passwd|sudoers)\b|\.gnupg\b|\.(?:bash|zsh)_history\b|(?:^|[\s'"`(/])\.env(?:\.[a-z]+)?(?![\w-])/i},
  {rule: 'secret-access', pattern: new RegExp(String.raw`\b${MOVE_VERB}\b[^.\n]{0,60}\b${SECRET_WORD}\b|\b${SECRET_WORD}\b[^.\n]{0,40}\b(?:must|should|shall)\s+be\s+(?:sent|passed|included|attached|uploaded|provided)\b`, 'i')},
  {rule: 'tool-chaining', pattern: /\b(?:before|after|whenever|each time|every time|instead of)\b[^.\n]{0,40}\b(?:call|calls|calling|use|uses|using|invoke|invoking|run|running)\b[^.\n]{0,30}\b(?:any|all|every|another|other)\s+(?:\w+\s+)?tools?\b/i},
  {rule: 'tool-chaining', pattern: /\b(?:all|every|any)\s+other\s+tools?\b|\banother\s+tool\b[^.\n]{0,40}\b(?:must|should|shall|always|never)\b/i},
  {rule: 'tool-chaining', pattern: /\b(?:must|always|also|first)\s+(?:call|invoke|use|run|execute|trigger)\s+(?:the\s+)?[`'"]?(?!this\b)[A-Za-z0-9_.-]+[`'"]?\s+(?:tool|function)\b/i},
  {rule: 'tool-chaining', pattern: /\b(?:call|invoke)\s+(?:the\s+)?[`'"]?(?!this\b)[A-Za-z0-9_.-]+[`'"]?\s+(?:tool|function)\s+(?:first|before|afterwards|as well|too)\b/i},
  {rule: 'tool-chaining', pattern: /\bwhen(?:ever)?\s+this\s+tool\s+is\s+(?:available|present|loaded|installed|enabled)\b/i},
  {rule: 'conceal-from-user', pattern: /\b(?:do not|don't|dont|never|without)\s+(?:tell|telling|inform|informing|mention|mentioning|reveal|revealing|show|showing|notify|notifying|alert|alerting|let|letting|disclose|disclosing|explain|explaining|ask|asking)\b[^.\n]{0,30}\b(?:user|users|human|operator|anyone)\b/i},
  {rule: 'conceal-from-user', pattern: /\b(?:hide|hidden|conceal|keep|kept)\b[^.\n]{0,40}\bfrom\s+(?:the\s+)?(?:user|users|human|operator)\b|\b(?:user|users|human)\s+(?:must|should|shall|need|needs|will)\s*(?:not|n't)\s+(?:know|see|notice|learn|find out|be (?:told|informed|aware))\b|\bwithout\s+(?:the\s+)?(?:user'?s?|their|human'?s?|operator'?s?)\s+(?:knowledge|noticing|awareness|knowing)\b|\b(?:secretly|covertly|surreptitiously)\b/i},
];

/**
 * Screens each target (a tool, prompt, resource or resource template definition) for hidden
 * instructions and returns every finding, in walk order (empty: nothing flagged). Pure: no I/O.
 *
 * Walks every string value and every object key of `definition` (name, title, description,
 * inputSchema and outputSchema including property descriptions, enum values, defaults and
 * examples, annotations, _meta), to depth 64.
 *
 * Does NOT guarantee: that a definition without findings is harmless. It is a screen for the
 * known shapes of tool poisoning (Invariant Labs' tool-poisoning and shadowing write-ups,
 * ASCII smuggling with tag characters), matched on English text; paraphrases, other languages,
 * homoglyphs (Cyrillic letters for Latin ones) and instructions split across fields pass it.
 * The operator's confirmation, the pins and the profile's limits are the other layers.
 */
export function screenDefinitions(targets: readonly ScreenTarget[], limits: ScreeningLimits = DEFAULT_SCREENING_LIMITS): ScreeningFinding[] {
  const findings: ScreeningFinding[] = [];
  for (const target of targets) {
    const item = makeVisible(target.name);
    const add = (f: Omit<ScreeningFinding, 'kind' | 'item'>) => findings.push({kind: target.kind, item, ...f});
    let bytes = 0;
    try {
      bytes = Buffer.byteLength(JSON.stringify(target.definition) ?? '', 'utf8');
    } catch {
      bytes = Number.POSITIVE_INFINITY;
    }
    if (bytes > limits.definitionBytes) {
      add({pointer: '', rule: 'oversize', excerpt: `definition is ${Number.isFinite(bytes) ? `${bytes} bytes` : 'not serializable'}; the limit is ${limits.definitionBytes} bytes`});
    }
    walk(target.definition, '', 0, limits, add);
  }
  return findings;
}

/** Shorthand for `screenDefinitions` over tools (each needs a string `name`). */
export function screenTools(tools: readonly {name: string}[], limits: ScreeningLimits = DEFAULT_SCREENING_LIMITS): ScreeningFinding[] {
  return screenDefinitions(tools.map((t) => ({kind: 'tool' as const, name: t.name, definition: t})), limits);
}

function walk(value: unknown, pointer: string, depth: number, limits: ScreeningLimits,
  add: (f: Omit<ScreeningFinding, 'kind' | 'item'>) => void): void {
  if (depth > MAX_DEPTH) {
    add({pointer, rule: 'oversize', excerpt: `nested deeper than ${MAX_DEPTH} levels; not screened below this point`});
    return;
  }
  if (typeof value === 'string') {
    screenString(value, pointer, limitFor(pointer, limits), false, add);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => walk(v, `${pointer}/${i}`, depth + 1, limits, add));
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const p = `${pointer}/${escapePointer(k)}`;
      screenString(k, p, limits.stringChars, true, add);
      walk(v, p, depth + 1, limits, add);
    }
  }
}

function limitFor(pointer: string, limits: ScreeningLimits): number {
  const last = pointer.slice(pointer.lastIndexOf('/') + 1);
  if (last === 'description') return limits.descriptionChars;
  if (pointer === '/title' || pointer === '/annotations/title') return limits.titleChars;
  return limits.stringChars;
}

function screenString(text: string, pointer: string, maxChars: number, isKey: boolean,
  add: (f: Omit<ScreeningFinding, 'kind' | 'item'>) => void): void {
  const key = isKey ? {key: true as const} : {};
  if (text.length > maxChars) {
    add({pointer, ...key, rule: 'oversize', excerpt: `${text.length} characters; the limit here is ${maxChars}: ${excerptAt(text, 0, 0)}`});
  }
  const invisibleAt = firstInvisible(text);
  if (invisibleAt >= 0) {
    const hidden = decodeTags(text);
    add({pointer, ...key, rule: 'invisible-unicode', excerpt: excerptAt(text, invisibleAt, 1), ...(hidden ? {hidden} : {})});
  }
  const clean = normalizeForMatching(text);
  const seen = new Set<string>();
  for (const {rule, pattern} of PATTERN_RULES) {
    if (seen.has(rule)) continue;
    const m = pattern.exec(clean);
    if (m) {
      seen.add(rule);
      add({pointer, ...key, rule, excerpt: excerptAt(clean, m.index, m[0].length)});
    }
  }
}

/** Index of the first invisible character (or stray variation selector) in `text`, or -1. */
function firstInvisible(text: string): number {
  const a = text.search(INVISIBLE);
  const b = text.search(STRAY_SELECTOR);
  if (a < 0) return b;
  if (b < 0) return a;
  return Math.min(a, b);
}

/** True when `text` carries a character `invisible-unicode` flags. */
export function hasInvisible(text: string): boolean {
  return firstInvisible(text) >= 0;
}

/**
 * `text` with every invisible character (as `invisible-unicode` defines it) replaced by
 * `<U+XXXX>`, so that an operator reading it on a terminal sees it (and no ANSI escape acts).
 */
export function makeVisible(text: string): string {
  let out = '';
  let previousVisible = false;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    const isSelector = SELECTOR.test(ch);
    if (INVISIBLE.test(ch) || (isSelector && !previousVisible)) {
      out += `<U+${cp.toString(16).toUpperCase().padStart(4, '0')}>`;
      previousVisible = false;
    } else {
      out += ch;
      previousVisible = !isSelector;
    }
  }
  return out;
}

/**
 * `text` without any invisible character (as `invisible-unicode` defines it, keeping tab, LF and
 * CR and selectors after a visible character). For what is shown or served after an operator
 * allowed a flagged server: it removes the carrier, not the meaning of visible text.
 */
export function stripInvisible(text: string): string {
  return text.replace(INVISIBLE_GLOBAL, '').replace(/(^|[\uFE00-\uFE0F\u180B-\u180D])[\uFE00-\uFE0F\u180B-\u180D]+/gu, '$1');
}

/** The ASCII that Unicode tag characters (U+E0020–E007E) in `text` spell, or '' if none. */
export function decodeTags(text: string): string {
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xe0020 && cp <= 0xe007e) out += String.fromCharCode(cp - 0xe0000);
  }
  return out;
}

function normalizeForMatching(text: string): string {
  return stripInvisible(text).normalize('NFKC').replace(/[ \t]+/g, ' ');
}

/** A window of about EXCERPT_CHARS around [index, index + length), made visible, one line. */
function excerptAt(text: string, index: number, length: number): string {
  const before = 30;
  const start = Math.max(0, index - before);
  const end = Math.min(text.length, Math.max(index + length, start + EXCERPT_CHARS - 20) + 10, start + EXCERPT_CHARS * 2);
  let slice = makeVisible(text.slice(start, end)).replace(/\r?\n/g, ' ');
  if (slice.length > EXCERPT_CHARS) slice = `${slice.slice(0, EXCERPT_CHARS)}`;
  return `${start > 0 ? '…' : ''}${slice}${end < text.length || slice.length >= EXCERPT_CHARS ? '…' : ''}`;
}

/** RFC 6901 §3: "~" → "~0", "/" → "~1". */
function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** One line naming a finding for the operator: `tool "x" /description: invisible-unicode: "…"`. */
export function formatFinding(f: ScreeningFinding): string {
  const where = `${f.kind} "${f.item}" ${f.pointer || '(whole definition)'}${f.key ? ' (key)' : ''}`;
  return `${where}: ${f.rule}: "${f.excerpt}"${f.hidden ? ` (tag characters spell: "${makeVisible(f.hidden.slice(0, 200))}")` : ''}`;
}

/**
 * A copy of a JSON Schema in which every string under a `title` or `description` key (at any
 * depth) has its invisible characters removed ({@link stripInvisible}); everything else (types,
 * enum values, defaults, patterns) is kept as is, so validation means the same. For what is
 * served of a hosted tool: its pin keeps the definition byte for byte.
 * Does NOT clean enum values, defaults or examples (changing them would change what the server
 * accepts); screening flags those at add.
 */
export function withoutInvisibleText<T>(schema: T, depth = 0): T {
  if (depth > MAX_DEPTH || schema === null || typeof schema !== 'object') return schema;
  if (Array.isArray(schema)) return schema.map((v) => withoutInvisibleText(v, depth + 1)) as T;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema as Record<string, unknown>)) {
    const value = (k === 'title' || k === 'description') && typeof v === 'string' ? stripInvisible(v) : withoutInvisibleText(v, depth + 1);
    Object.defineProperty(out, k, {value, enumerable: true, writable: true, configurable: true});
  }
  return out as T;
}
