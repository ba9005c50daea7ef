// Rewrites a tool module so that its top level runs inside a function the prelude calls and catches: a thrown value never reaches isolated-vm's copy.
import {getLineInfo, Parser, type Node as AcornNode} from 'acorn';

/**
 * A tool module rewritten by `wrapToolModule`: compile `source` as a module with
 * isolated-vm's `lineOffset: WRAP_LINE_OFFSET`, so that every line and column V8 reports
 * (syntax errors, stacks) is the one the tool author wrote.
 */
export interface WrappedModule {
  source: string;
}

/** A module `wrapToolModule` refuses, described as V8 would describe it (name, message with `[filename:line:column]`). */
export interface WrapRefusal {
  error: {name: string; message: string};
}

/**
 * A module too large to rewrite (its parse went over its `WrapBudget`, or the rewrite
 * thread ended during it): it runs unwrapped, as before the rewrite (`UNWRAPPED_SETTLE_SOURCE`).
 */
export interface NotWrapped {
  unwrapped: true;
}

/** The `lineOffset` to compile a `WrappedModule` with: its first line is the wrapper's own. */
export const WRAP_LINE_OFFSET = -1;

/**
 * The specifier under which `UNWRAPPED_SETTLE_SOURCE` imports a tool module that runs
 * unwrapped (`NotWrapped`); that module itself resolves no specifier.
 */
export const TOOL_SPECIFIER = 'toolcell:tool';

/**
 * A module of ours that imports an unwrapped tool module and exports, like a wrapped one,
 * an async function resolving `{d: <default export>}`. V8 runs this body only once the
 * tool module's evaluation (top-level await included) has settled, so until then its
 * `default` is in its temporal dead zone (the prelude then waits for ever, ended as
 * TIMEOUT by the idle probe). A value the unwrapped top level throws is copied out by
 * isolated-vm, outside the time limit, as before the rewrite.
 */
export const UNWRAPPED_SETTLE_SOURCE = `import * as t from '${TOOL_SPECIFIER}'; const d = t.default; export default async () => ({__proto__: null, d});`;

/** The message of a refused import, the same at load, check and call time. */
export function importRefusal(specifier: string): string {
  const shown = JSON.stringify(specifier.length > 200 ? `${specifier.slice(0, 200)}…` : specifier);
  return `Imports are not available to isolate tools (the module imports ${shown}); bundle the tool into one self-contained ES module.`;
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

type Loose = AcornNode & Record<string, any>;

/** What the rewrite needs of a top-level statement; the rest of its tree is dropped at once. */
function summarize(node: Loose): Loose {
  const small: Loose = {type: node.type, start: node.start, end: node.end} as Loose;
  if (node.source) small.source = {value: node.source.value};
  if (node.declaration) {
    const d = node.declaration as Loose;
    small.declaration = {type: d.type, start: d.start, end: d.end, id: d.id ? {name: d.id.name} : null};
  }
  if (Array.isArray(node.specifiers)) {
    small.specifiers = (node.specifiers as Loose[]).map((sp) => ({
      exported: sp.exported ? {type: sp.exported.type, name: sp.exported.name, value: sp.exported.value} : undefined,
      local: sp.local ? {name: sp.local.name} : undefined,
    }));
  }
  // Kept for acorn's directive check (a string literal only: small).
  if (node.type === 'ExpressionStatement') small.expression = node.expression.type === 'Literal' ? node.expression : {type: node.expression.type};
  return small;
}

/**
 * Bounds of one rewrite's parse, in acorn tokens, for a parse whose heap is bounded (the
 * rewrite thread's, module-wrap-thread.ts). Over either bound the parse stops and the
 * module runs unwrapped (`NotWrapped`), a decision that depends on the source only.
 *
 * Why tokens: the memory a parse holds grows with the tokens it has read, and no input
 * makes a token cost much: acorn's tree of one statement measured 15-105 bytes per token
 * here over 27 shapes (array literals of numbers, strings, regular expressions, empty
 * arrays or holes, template literals, member, call and optional chains, sequences,
 * object literals and patterns, arrows, functions, class fields; typescript.js, one
 * statement of 1.32 M tokens: 90 bytes per token). A regular expression literal is one
 * token whose cost (acorn builds it with `new RegExp`, as V8 does when it compiles the
 * module) is bounded apart, by `REGEX_BUDGET`.
 */
export interface WrapBudget {
  /** Tokens one top-level statement may span (its whole tree is held until it ends). */
  statementTokens: number;
  /**
   * Items held for the whole parse: names declared in the module's scope, plus the tokens
   * of its import and export statements (kept for the rewrite), checked after each
   * top-level statement.
   */
  moduleItems: number;
}

/**
 * The budget of a parse on the rewrite thread (256 MB heap; also given to the worker's
 * main-thread parse of sources up to 64 Ki characters, where only its count of nested
 * `var` records can be reached): about 105 MB for the largest
 * statement's tree, at most about 50 MB for what the whole parse keeps, plus the source
 * itself (32 MB at 16 Mi UTF-16 units). Node ends a thread that reaches its heap limit
 * only on a best-effort basis: depending on the shape of the allocation that meets the
 * limit, V8 aborts the whole process instead ("Reached heap limit", nodejs/node#47224 and
 * #65019; seen here: a 15 MB array literal aborted the isolate worker under CPU load after
 * 10-55 s of garbage collection), so the parse must stay well below it. Does NOT bound the
 * parse's time, which is linear in the source (0.2-1 s per MB here; names declared in one
 * scope are checked by hash lookup, `LinearScopeParser`), but for a `var` nested in
 * blocks, which acorn records in each enclosing block scope (cost: nesting depth per `var`).
 */
export const THREAD_WRAP_BUDGET: WrapBudget = {statementTokens: 1_000_000, moduleItems: 500_000};

/**
 * Bounds of the regular expression literals of one module, which V8 parses when it
 * compiles the module (uninterruptibly: on the worker's main thread for sources up to
 * 64 Ki characters, else holding the worker's compile slot), in time and native memory
 * that neither `memoryMb` nor the call's deadline bounds. Measured with V8 13 (Node 24):
 * a Unicode property escape costs 0.02-0.06 ms (`\p{L}`; 0.1-0.4 ms with `i`), a property of strings
 * (`\p{RGI_Emoji}`, `v` flag) 0.8 ms and 0.9 MB of native memory per occurrence in one
 * literal (a red team's 64 KB module of them took 6 s, one literal of 5000 took over 1 GB
 * and got the worker killed); a `v` flag class of ranges with `i` grows faster than its
 * length (16 000 ranges, 300 KB: 0.57 s; 1000: 3 ms); duplicate named groups times named
 * backreferences cost both (`modulePairs`). A module over a bound is refused
 * before V8 sees it (a refusal naming the bound and the literal's line:column), as
 * `toolcell build` and `check` refuse it.
 * Does NOT bound: other V8 pattern costs (not audited beyond those above and `u`/non-`u`
 * classes and alternations, linear here), nor the cost of a pattern built at run time
 * with `new RegExp` (inside the isolate, under the call's own limits and the worker's RSS
 * ceiling).
 */
export const REGEX_BUDGET = {
  /**
   * Property escape units per module: `\p{…}`/`\P{…}` in a `u` or `v` pattern count 1,
   * `caseInsensitiveUnits` with the `i` flag or an `(?i:…)` group (`[\p{L}]` with `vi`: 0.3-0.4 ms, so a full
   * budget of them is about 25 ms), a property of strings `stringPropertyUnits`.
   */
  moduleUnits: 256,
  /** Units of an ordinary property escape in a pattern with the `i` flag. */
  caseInsensitiveUnits: 4,
  /** Units of one property of strings (`PROPERTIES_OF_STRINGS`), with or without `i`: 8 of them fill a module's budget. */
  stringPropertyUnits: 32,
  /** Longest `v` flag pattern, in UTF-16 units. */
  unicodeSetsPatternChars: 8192,
  /**
   * Named groups times named backreferences (`\k<name>`) of each pattern, summed over the
   * module (`namedBackreferencePairs`): V8 resolves a backreference to every group of its
   * name (duplicate names in separate alternatives), in time and memory proportional to
   * the pairs (4600 groups x 6500 references, 64.7 KB: 0.6-0.9 s and 700 MB; 1000 x 1000:
   * 37 ms and 17 MB). 2^18 pairs: about 10 ms.
   */
  modulePairs: 2 ** 18,
} as const;

/** ECMAScript's binary Unicode properties of strings (ES2024, `v` flag only). */
const PROPERTIES_OF_STRINGS = new Set([
  'Basic_Emoji', 'Emoji_Keycap_Sequence', 'RGI_Emoji_Modifier_Sequence', 'RGI_Emoji_Flag_Sequence',
  'RGI_Emoji_Tag_Sequence', 'RGI_Emoji_ZWJ_Sequence', 'RGI_Emoji',
]);
/** Longest property name (with `=value`) looked for after `\p{`, in UTF-16 units. */
const PROPERTY_NAME_MAX = 64;

/**
 * Property escape units (`REGEX_BUDGET`) of one regular expression literal's `pattern`
 * with `flags`: 0 without `u` or `v` (there `\p` is a plain `p`). One linear pass: an
 * escaped backslash is skipped with what it escapes, a name is looked for only within
 * `PROPERTY_NAME_MAX` units. Counts what V8 would read as an escape; a malformed one is
 * counted too (V8 then refuses the pattern anyway).
 */
export function regexPropertyUnits(pattern: string, flags: string): number {
  if (!flags.includes('u') && !flags.includes('v')) return 0;
  const each = flags.includes('i') || addsIgnoreCase(pattern) ? REGEX_BUDGET.caseInsensitiveUnits : 1;
  let units = 0;
  for (let i = 0; i < pattern.length - 1; i++) {
    if (pattern.charCodeAt(i) !== 0x5c /* \ */) continue;
    i++;
    const escaped = pattern.charCodeAt(i);
    if ((escaped !== 0x70 /* p */ && escaped !== 0x50 /* P */) || pattern.charCodeAt(i + 1) !== 0x7b /* { */) continue;
    let end = i + 2;
    while (end < pattern.length && end - i - 2 <= PROPERTY_NAME_MAX && pattern.charCodeAt(end) !== 0x7d /* } */) end++;
    units += PROPERTIES_OF_STRINGS.has(pattern.slice(i + 2, end)) ? REGEX_BUDGET.stringPropertyUnits : each;
  }
  return units;
}

/**
 * Named capture groups (`(?<`, not a lookbehind) times named backreferences (`\k<`) of one
 * pattern, counted in one linear pass (an escaped character is skipped with its
 * backslash): an upper bound of the pairs V8 resolves (`REGEX_BUDGET.modulePairs`), since
 * a name may be spelled with escapes and a group in a class is counted too.
 */
export function namedBackreferencePairs(pattern: string): number {
  let groups = 0;
  let references = 0;
  for (let i = 0; i < pattern.length - 2; i++) {
    const code = pattern.charCodeAt(i);
    if (code === 0x5c /* \ */) {
      if (pattern.charCodeAt(i + 1) === 0x6b /* k */ && pattern.charCodeAt(i + 2) === 0x3c /* < */) references++;
      i++;
    } else if (code === 0x28 /* ( */ && pattern.charCodeAt(i + 1) === 0x3f /* ? */ && pattern.charCodeAt(i + 2) === 0x3c /* < */) {
      const after = pattern.charCodeAt(i + 3);
      if (after !== 0x3d /* = */ && after !== 0x21 /* ! */) groups++;
    }
  }
  return groups * references;
}

/**
 * Whether `pattern` may turn on `i` in a group (ES2025 pattern modifiers: `(?i:…)`; one
 * that turns it off, `(?m-i:…)`, is counted too): a `(?` followed by up to 7 flag
 * letters or `-` that include an `i`, then `:`. Over-approximate (also inside a class or
 * after an escaped parenthesis) and linear.
 */
function addsIgnoreCase(pattern: string): boolean {
  for (let at = pattern.indexOf('(?'); at >= 0; at = pattern.indexOf('(?', at + 2)) {
    const head = /^[a-z-]{1,7}:/.exec(pattern.slice(at + 2, at + 10));
    if (head?.[0].includes('i')) return true;
  }
  return false;
}

/** What acorn hands `validateRegExpPattern`: the literal's pattern, flags and position (after its `/`). */
interface RegexState {
  start: number;
  source: string;
  flags: string;
}

/** What one module's patterns have used of `REGEX_BUDGET`. */
interface RegexCharge {
  units: number;
  pairs: number;
}

/**
 * Charges one regular expression literal to its module's `charge`.
 * @throws RegexTooCostly when the literal, or the module with it, goes over `REGEX_BUDGET`.
 */
function chargeRegex(charge: RegexCharge, state: RegexState): void {
  const {source, flags} = state;
  if (flags.includes('v') && source.length > REGEX_BUDGET.unicodeSetsPatternChars) {
    throw new RegexTooCostly(`A regular expression with the v flag is ${source.length} characters long; at most ${REGEX_BUDGET.unicodeSetsPatternChars} are allowed (its cost to compile grows faster than its length).`, state.start);
  }
  charge.units += regexPropertyUnits(source, flags);
  if (charge.units > REGEX_BUDGET.moduleUnits) {
    throw new RegexTooCostly(`The module's regular expressions use too many Unicode property escapes (\\p{...} or \\P{...} with the u or v flag): at most ${REGEX_BUDGET.moduleUnits} units per module, where each counts 1 (${REGEX_BUDGET.caseInsensitiveUnits} with the i flag) and a property of strings such as \\p{RGI_Emoji} counts ${REGEX_BUDGET.stringPropertyUnits}.`, state.start);
  }
  charge.pairs += namedBackreferencePairs(source);
  if (charge.pairs > REGEX_BUDGET.modulePairs) {
    throw new RegexTooCostly(`The module's regular expressions pair too many named groups with named backreferences (\\k<name>): named groups times backreferences of each pattern, summed over the module, at most ${REGEX_BUDGET.modulePairs}.`, state.start);
  }
}

/** Thrown inside the parse at the regular expression literal (`pos`) that goes over `REGEX_BUDGET`. */
class RegexTooCostly extends Error {
  readonly pos: number;
  constructor(message: string, pos: number) {
    super(message);
    this.pos = pos;
  }
}

/** acorn 8's binding kinds and var-scope flags (dist/acorn.mjs, not exported; checked by test/unit/backends/isolate/linear-scope-parser.test.ts). */
export const BIND_LEXICAL = 2, BIND_FUNCTION = 3, BIND_SIMPLE_CATCH = 4, SCOPE_VAR = 1 | 2 | 256;

/** Thrown inside the parse when it goes over its `WrapBudget`. */
class OverBudget extends Error {}

type ParserClass = {parse(input: string, options: Record<string, unknown>): Loose};

/** The top-level statements a rewrite reads again: only its imports and exports are kept. */
const isModuleDeclaration = (node: Loose): boolean => node.type === 'ImportDeclaration'
  || node.type === 'ExportNamedDeclaration' || node.type === 'ExportDefaultDeclaration' || node.type === 'ExportAllDeclaration';

/**
 * `Program.body` of a rewrite's parse: acorn pushes every top-level statement; only
 * imports and exports are kept (a module of 15 M empty statements would otherwise hold
 * 15 M nodes).
 */
class ModuleDeclarations extends Array<Loose> {
  override push(...nodes: Loose[]): number {
    for (const node of nodes) if (isModuleDeclaration(node)) super.push(node);
    return this.length;
  }
}

/**
 * A scope's list of declared names (acorn's `Scope.var`, `lexical`, `functions`) whose
 * `indexOf` is a hash lookup instead of a linear search. acorn 8 checks every declaration
 * against these arrays (`declareName`, `checkLocalExport`), which made a parse quadratic in
 * the names declared in one scope (100 K top-level `let`s, 1 MB: 107 s). Keeps the array
 * itself, in acorn's order and with its duplicates, so every other reader (`lexical[0]` for
 * a simple catch parameter, `.length` for `WrapBudget.moduleItems`) sees what it saw.
 * `indexOf(name)` returns the first index of `name`, as Array's does, for a string; any
 * other argument, or a `fromIndex`, falls back to Array's search.
 * Does NOT change the walk of a `var` up through its enclosing block scopes (acorn pushes
 * it into each, so its cost is the nesting depth per `var`).
 */
export class NameList extends Array<string> {
  /** Built at the first search of a list longer than `NameList.SCAN_MAX` (a list nobody searches costs no index). */
  #first: Map<string, number> | undefined;
  /** Lists up to this length are searched by Array's own search (a few comparisons). */
  static readonly SCAN_MAX = 8;
  override push(...names: string[]): number {
    for (const name of names) {
      if (this.#first !== undefined && !this.#first.has(name)) this.#first.set(name, this.length);
      super.push(name);
    }
    return this.length;
  }
  override indexOf(name: string, fromIndex?: number): number {
    if (typeof name !== 'string' || fromIndex !== undefined) return super.indexOf(name, fromIndex);
    if (this.#first === undefined) {
      if (this.length <= NameList.SCAN_MAX) return super.indexOf(name);
      this.#first = new Map();
      for (let i = 0; i < this.length; i++) if (!this.#first.has(this[i]!)) this.#first.set(this[i]!, i);
    }
    return this.#first.get(name) ?? -1;
  }
  /** Array methods that build a new array (`map`, `slice`...) build a plain one. */
  static override get [Symbol.species](): ArrayConstructor { return Array; }
}

/**
 * acorn's parser with each scope's names in `NameList`s: declaring a name costs a hash
 * lookup, not a search of the scope's names. acorn's own `declareName` still decides
 * (same accepted sources, same errors at the same positions). Every parse of the rewrite
 * goes through it (`TopLevelParser` extends it).
 */
export const LinearScopeParser = Parser.extend((Base) => class extends (Base as any) {
  enterScope(flags: number): void {
    super.enterScope(flags);
    const scope = this.scopeStack[this.scopeStack.length - 1] as {var: string[]; lexical: string[]; functions: string[]};
    scope.var = new NameList();
    scope.lexical = new NameList();
    scope.functions = new NameList();
  }
} as unknown as typeof Parser);

/**
 * acorn's parser, keeping of each top-level statement only its `summarize`d shape, and of
 * the program only its imports and exports: the tree of a statement is garbage as soon as
 * it is parsed, so a parse holds at most the tree of the largest top-level statement
 * (acorn's full tree is about 55 times the source's size: 515 MB for a 9.3 MB module
 * here), not of the whole module. With a `budget` option (`WrapBudget`) it throws
 * `OverBudget` when a statement spans more tokens, or the program keeps more items, than
 * allowed.
 */
const TopLevelParser = LinearScopeParser.extend((Base) => class extends (Base as any) {
  readonly budget: WrapBudget | undefined;
  statementTokens = 0;
  keptTokens = 0;
  constructor(options: {budget?: WrapBudget}, input: string, startPos?: number) {
    super(options, input, startPos);
    this.budget = options.budget;
  }

  /**
   * acorn records a `var` in every block scope from the current one up to its function's
   * (or the module's) scope: depth times declarations, so `{` x 1,000 around 50 K `var`s
   * (540 KB) held 50 M records (195 s here, far over the thread's heap). With a budget,
   * the records in block scopes (all of the parse's, also those already freed: this bounds
   * the walk's time too) count against `moduleItems`, checked before acorn walks: over it
   * the module runs unwrapped (`OverBudget`). A `var` directly in its function's or the
   * module's scope costs none. Without a budget (`toolcell check`'s probe) nothing is
   * counted; the isolate worker passes `THREAD_WRAP_BUDGET` on both of its paths.
   */
  varRecords = 0;
  declareName(name: string, bindingType: number, pos: number): void {
    if (this.budget !== undefined && bindingType !== BIND_LEXICAL && bindingType !== BIND_FUNCTION && bindingType !== BIND_SIMPLE_CATCH) {
      const stack = this.scopeStack as {flags: number}[];
      for (let i = stack.length - 1; i >= 0 && !(stack[i]!.flags & SCOPE_VAR); i--) {
        if (++this.varRecords > this.budget.moduleItems) throw new OverBudget();
      }
    }
    super.declareName(name, bindingType, pos);
  }

  /**
   * acorn's check of a regular expression literal's pattern, skipped with a budget (the
   * isolate worker's parses; `toolcell build` and `check` keep it, to refuse a bad
   * pattern before any call). V8 checks every pattern when it compiles the module, which
   * the callers do before any of it runs (see `wrapToolModule`): the same grammar, its own
   * messages ("Invalid regular expression: /(?<a>x)(?<a>y)/: Duplicate capture group name
   * [tool.js:2:11]"). acorn's check of duplicate group names compares each named group
   * with every earlier one of its name, walking both groups' enclosing alternatives
   * (acorn 8.19 `BranchID.separatedFrom`): about groups² x nesting² steps, without bound in
   * the source. Measured here: 14 000 `(?<a>x)` alternatives (110 KB) 0.6 s, 60
   * alternatives of one group nested 1000 deep (240 KB) 6.6 s; V8 checked each in at most
   * 0.14 s, and refuses over 32 Ki capture groups. The literal's extent, which the rewrite
   * relies on, is read by the tokenizer (`readRegexp`), not by this check.
   */
  validateRegExpPattern(state: RegexState): void {
    // Every parse (worker, build, check) bounds what V8 will pay for the module's patterns.
    chargeRegex(this.regexCharge, state);
    if (this.budget === undefined) super.validateRegExpPattern(state);
  }
  /** What the module's patterns have used of `REGEX_BUDGET` so far. */
  readonly regexCharge: RegexCharge = {units: 0, pairs: 0};

  next(ignoreEscapeSequenceInKeyword?: boolean): void {
    if (this.budget !== undefined && ++this.statementTokens > this.budget.statementTokens) throw new OverBudget();
    super.next(ignoreEscapeSequenceInKeyword);
  }

  parseTopLevel(node: Loose): Loose {
    node.body = new ModuleDeclarations();
    return super.parseTopLevel(node);
  }

  parseStatement(context: unknown, topLevel: boolean, exports: unknown): Loose {
    if (topLevel) this.statementTokens = 0;
    const node = super.parseStatement(context, topLevel, exports) as Loose;
    if (!topLevel) return node;
    if (this.budget !== undefined) {
      if (isModuleDeclaration(node)) this.keptTokens += this.statementTokens;
      const scope = this.scopeStack[0] as {var: unknown[]; lexical: unknown[]; functions: unknown[]};
      if (this.keptTokens + scope.var.length + scope.lexical.length + scope.functions.length > this.budget.moduleItems) throw new OverBudget();
    }
    return summarize(node);
  }
} as unknown as typeof Parser) as unknown as ParserClass;

/** `filename:line:column` of offset `pos` in `text`, as V8 names a place (1-based column). */
function place(text: string, filename: string, pos: number): string {
  const {line, column} = getLineInfo(text, pos);
  return `${filename}:${line}:${column + 1}`;
}

/** The refusal of a module whose patterns went over `REGEX_BUDGET`, at the literal `error` names. */
function regexRefusal(text: string, filename: string, error: RegexTooCostly): WrapRefusal {
  return {error: {name: 'Error', message: `${error.message} [${place(text, filename, error.pos)}]`}};
}

/**
 * The check of a module whose parse went over its `WrapBudget` (it then runs unwrapped,
 * and V8 still compiles every pattern in it), on its raw text: no tokenizer, whose guess
 * of what is a regular expression a hostile text can lead astray (a fourth red team hid
 * `/\p{RGI_Emoji}.../v` after `await` and after `export default function(){}`, where
 * acorn's tokenizer alone reads a division and V8 a pattern; the parse corrects that
 * guess, the tokenizer does not). Over-approximates, counting strings and comments too:
 * every `\p{…}`/`\P{…}` as if in a pattern with `i` (`regexPropertyUnits` with `ui`), every
 * named group and named backreference as if in one pattern (`namedBackreferencePairs`),
 * and a possible `v` flag (a `/` followed by flag letters including `v` and then a
 * character that cannot continue them) refuses the module, since where its pattern
 * starts, and so its length, is not known.
 * @returns the refusal, or undefined when the text is within `REGEX_BUDGET` so counted.
 */
function chargeRawText(text: string, filename: string): WrapRefusal | undefined {
  const refuse = (message: string, pos?: number): WrapRefusal => {
    const where = pos === undefined ? filename : place(text, filename, pos);
    return {error: {name: 'Error', message: `The module is too large to rewrite, so its regular expressions are bounded on its whole text: ${message} [${where}]`}};
  };
  const v = possibleUnicodeSetsFlag(text);
  if (v >= 0) return refuse('it may contain a regular expression with the v flag, which only a module that can be rewritten may use (smaller top-level statements).', v);
  if (regexPropertyUnits(text, 'ui') > REGEX_BUDGET.moduleUnits) {
    return refuse(`its \\p{...} and \\P{...} (anywhere in the text, ${REGEX_BUDGET.caseInsensitiveUnits} units each, ${REGEX_BUDGET.stringPropertyUnits} for a property of strings) come to more than ${REGEX_BUDGET.moduleUnits} units.`);
  }
  if (namedBackreferencePairs(text) > REGEX_BUDGET.modulePairs) {
    return refuse(`its named groups times its named backreferences (\\k<name>), anywhere in the text, come to more than ${REGEX_BUDGET.modulePairs}.`);
  }
  return undefined;
}

/** Flag letters a regular expression literal may end with (ES2025). */
const FLAG_LETTERS = new Set('dgimsuyv');

/**
 * Offset of the first `/` in `text` followed by regular expression flag letters that
 * include `v` and then a character that cannot continue an identifier (ASCII letters,
 * digits, `_`, `$` and `\` can; any other character ends V8's flags, or makes them invalid),
 * or -1. One linear pass; `text/vnd`, `/v1/` and `</video>` do not match.
 */
export function possibleUnicodeSetsFlag(text: string): number {
  for (let at = text.indexOf('/'); at >= 0; at = text.indexOf('/', at + 1)) {
    let end = at + 1;
    let v = false;
    while (end < text.length && end - at <= FLAG_LETTERS.size && FLAG_LETTERS.has(text[end]!)) {
      if (text[end] === 'v') v = true;
      end++;
    }
    if (v && (end >= text.length || !/[A-Za-z0-9_$\\]/.test(text[end]!))) return at;
  }
  return -1;
}

/**
 * `text` where every character but a line terminator becomes a space, then the head
 * replaced by `head` (written over spaces only): a removal that moves no later line or
 * column. Falls back to `head` + the line terminators when `head` does not fit before the
 * first line terminator (the rest of that line then moves).
 */
function overwrite(text: string, head: string): string {
  const blank = text.replace(/[^\n\r\u2028\u2029]/g, ' ');
  const firstBreak = blank.search(/[\n\r\u2028\u2029]/);
  if (firstBreak === -1 ? blank.length >= head.length : firstBreak >= head.length) return head + blank.slice(head.length);
  return head + blank.replace(/ /g, '');
}

/**
 * Prefix of the names the wrapper declares (`WRAP_DEFAULT`, `WRAP_LABEL`): a source that
 * contains it, written plainly or with `\u` escapes, is refused (`reservedRefusal`), so
 * no name of the tool's can be one of ours. Checked in one linear pass, with no search for
 * a free name (a search per candidate was quadratic in the source's size).
 */
export const RESERVED_PREFIX = '$toolcell$';
/** The wrapper's variable holding an anonymous default export. */
const WRAP_DEFAULT = `${RESERVED_PREFIX}d`;
/**
 * The label of the block that holds the tool's whole top level inside the wrapper. The
 * wrapper's tail, after the tool's last character, says `break WRAP_LABEL`: V8 accepts that
 * only when the tail is inside the labelled block of the wrapper's head, in the same
 * function (a label is never visible across a function boundary), so V8's own compile
 * proves that nothing the tool wrote closed the wrapper early, whatever acorn thought.
 */
export const WRAP_LABEL = `${RESERVED_PREFIX}top`;

/** `\uXXXX` and `\u{X...}`, as in an identifier (also matched inside strings: over-refusal is fine). */
const UNICODE_ESCAPE = /\\u(?:\{([0-9a-fA-F]+)\}|([0-9a-fA-F]{4}))/g;

/**
 * The refusal of a source that contains `RESERVED_PREFIX` in any spelling, or undefined.
 * Linear in the source's length: one search, and one more over the text with its unicode
 * escapes decoded when it has any.
 */
function reservedRefusal(text: string, filename: string): WrapRefusal | undefined {
  let found = text.includes(RESERVED_PREFIX);
  if (!found && text.includes('\\u')) {
    const decoded = text.replace(UNICODE_ESCAPE, (whole, braced: string | undefined, four: string | undefined) => {
      const code = Number.parseInt(braced ?? four ?? '', 16);
      return code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    });
    found = decoded.includes(RESERVED_PREFIX);
  }
  if (!found) return undefined;
  return {error: {name: 'SyntaxError', message: `The names starting with ${RESERVED_PREFIX} are reserved for toolcell's module wrapper; the module contains that text (maybe as unicode escapes) [${filename}]`}};
}

/**
 * The refusal of a wrapped module whose compile V8 refused because the wrapper's tail was
 * not inside the wrapper's labelled block (`WRAP_LABEL`): V8 and acorn read the module's
 * text differently (for example a `/` after a function expression: V8 reads a division,
 * acorn a regular expression), or undefined for any other compile error.
 * @param error what `compileModule` threw for a `WrappedModule`
 */
export function wrapperBreakRefusal(error: unknown, filename: string): {name: string; message: string} | undefined {
  const message = error instanceof Error ? error.message : '';
  if (!message.includes(WRAP_LABEL)) return undefined;
  return {
    name: 'SyntaxError',
    message: `V8 does not read this module as its rewrite's parser (acorn) does: in V8's reading its code ends toolcell's module wrapper early (a "/" after a function expression is a division for V8); refused [${filename}]`,
  };
}

/**
 * Rewrites the ES module `source` (a tool's isolate entry) into a module whose only
 * export, `default`, is an async function running the tool's whole top level and
 * resolving a null-prototype record `{d: <the tool's default export>}`. The prelude calls
 * it inside the isolate in a try/catch, so a value the top level throws (or its top-level
 * await rejects with) is described by the prelude (own data properties only, bounded)
 * and never copied out by isolated-vm, whose copy runs outside the time limit.
 *
 * Parsed with acorn 8 (`ecmaVersion: 'latest'`, `sourceType: 'module'`), which also
 * refuses what a module may not contain at top level (`return`, `new.target`, duplicate
 * exports, undeclared exports), so the body can be moved into an async function called
 * with `this` undefined without changing its meaning, but for one thing: a top-level
 * `arguments` is the wrapper's own (empty) arguments object instead of a ReferenceError.
 * A function expression in parentheses, not an arrow: V8 compiles it eagerly (its
 * "possibly invoked function expression" heuristic), so its code is in the V8 code cache
 * (measured: mathjs's 682 KB bundle gave 387 KB of cached code this way, 1 KB as an
 * arrow, whose body V8 then parsed again in every call's fresh isolate). Rewrites, each in place (blanks of the same length, so no line
 * and, but for the cases below, no column moves; the wrapper's first line is compensated
 * by `WRAP_LINE_OFFSET`):
 * - `export` before a declaration is blanked;
 * - `export {a, b as default}` is blanked; a `default` among its names is read at the end;
 * - `export default function f() {}` / `class F {}` keep the declaration (hoisted as
 *   before); `f` is read at the end;
 * - `export default <expression>` and anonymous `function`/`class` become
 *   `$toolcell$d=({default: <it>}).default;` (the object literal keeps the name `default` an
 *   anonymous default export gets); code after it on the same line moves right by up to
 *   11 columns;
 * - a hashbang line becomes a `//` comment.
 *
 * The tool's whole top level is the labelled block `WRAP_LABEL: {...}` inside the wrapper,
 * and the wrapper's tail says `break WRAP_LABEL` after the tool's last character: V8's
 * compile of the result then fails ("Undefined label", see `wrapperBreakRefusal`) unless V8
 * itself reads the tail inside the wrapper, so a text that acorn and V8 read differently
 * (a `/` after a function expression) cannot end the wrapper early and run at module top
 * level. The callers compile the result with V8 before any of it runs. A source containing
 * `RESERVED_PREFIX` (also as unicode escapes) is refused.
 * What it does NOT guarantee: that a text acorn and V8 read differently means the same
 * inside the wrapper as the author meant (it stays inside the wrapper, where V8 reads it).
 * Parsing runs on the calling thread, about 0.2-0.4 s per MB of source on this host.
 *
 * @param filename shown in refusals as V8 shows it (`[filename:line:column]`).
 * @param budget bounds of the parse (`WrapBudget`, e.g. `THREAD_WRAP_BUDGET` on the
 *   rewrite thread); without it the parse holds what the source needs.
 * @returns the wrapped module, or a refusal: a SyntaxError (a reserved name, acorn's message, or not
 *   enough stack for deeply nested code) or an import (`import`, `export ... from`),
 *   refused with `importRefusal`'s message; with a `budget`, `{unwrapped: true}` when the
 *   parse went over it.
 */
export function wrapToolModule(source: string, filename: string): WrappedModule | WrapRefusal;
export function wrapToolModule(source: string, filename: string, budget: WrapBudget): WrappedModule | WrapRefusal | NotWrapped;
export function wrapToolModule(source: string, filename: string, budget?: WrapBudget): WrappedModule | WrapRefusal | NotWrapped {
  let text = source;
  if (text.startsWith('#!')) text = `//${text.slice(2)}`;
  let program: Loose;
  try {
    program = TopLevelParser.parse(text, {ecmaVersion: 'latest', sourceType: 'module', preserveParens: true, locations: false, budget});
  } catch (error) {
    if (error instanceof OverBudget) return chargeRawText(text, filename) ?? {unwrapped: true};
    if (error instanceof RegexTooCostly) return regexRefusal(text, filename, error);
    const raw = error instanceof Error ? error.message : String(error);
    const loc = (error as {loc?: {line: number; column: number}}).loc;
    const message = raw.replace(/ \(\d+:\d+\)$/, '');
    return {error: {name: 'SyntaxError', message: loc ? `${message} [${filename}:${loc.line}:${loc.column + 1}]` : message}};
  }
  const reserved = reservedRefusal(text, filename);
  if (reserved) return reserved;
  const name = WRAP_DEFAULT;
  const edits: Edit[] = [];
  let defaultRead: string | undefined;
  for (const node of program.body as Loose[]) {
    if (node.type === 'ImportDeclaration' || ((node.type === 'ExportNamedDeclaration' || node.type === 'ExportAllDeclaration') && node.source)) {
      return {error: {name: 'Error', message: importRefusal(String(node.source.value))}};
    }
    if (node.type === 'ExportNamedDeclaration') {
      if (node.declaration) {
        edits.push({start: node.start, end: node.declaration.start, text: overwrite(text.slice(node.start, node.declaration.start), '')});
      } else {
        for (const s of node.specifiers as Loose[]) {
          const exported = s.exported.type === 'Identifier' ? s.exported.name : String(s.exported.value);
          if (exported === 'default') defaultRead = s.local.name as string;
        }
        edits.push({start: node.start, end: node.end, text: overwrite(text.slice(node.start, node.end), '')});
      }
    } else if (node.type === 'ExportDefaultDeclaration') {
      const d = node.declaration as Loose;
      const head = text.slice(node.start, d.start);
      if ((d.type === 'FunctionDeclaration' || d.type === 'ClassDeclaration') && d.id) {
        edits.push({start: node.start, end: d.start, text: overwrite(head, '')});
        defaultRead = d.id.name as string;
      } else {
        // `export default <expression>;` ends at its semicolon when it has one.
        const expressionEnd = d.end as number;
        edits.push({start: node.start, end: d.start, text: overwrite(head, `${name}=({default:`)});
        edits.push({start: expressionEnd, end: expressionEnd, text: '}).default;'});
        defaultRead = name;
      }
    }
  }
  let body = '';
  let at = 0;
  for (const e of edits.sort((a, b) => a.start - b.start)) {
    body += text.slice(at, e.start) + e.text;
    at = e.end;
  }
  body += text.slice(at);
  const result = defaultRead === undefined ? 'undefined' : defaultRead;
  return {
    source: `let ${name};export default (async function(){${WRAP_LABEL}:{\n${body}\n;return {__proto__:null,d:${result}};break ${WRAP_LABEL};}});`,
  };
}
