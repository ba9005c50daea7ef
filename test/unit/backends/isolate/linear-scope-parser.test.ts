/**
 * The rewrite's acorn parser with hash-backed scope names (`LinearScopeParser`): it accepts
 * and refuses exactly what stock acorn does, with the same error at the same position, and
 * its name checks search no list (the stock checks made a parse quadratic in the names
 * declared in one scope).
 */
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {Parser} from 'acorn';
import {LinearScopeParser, NameList, THREAD_WRAP_BUDGET, wrapToolModule} from '../../../../src/backends/isolate/module-wrap.ts';

type Outcome = {ok: true} | {ok: false; message: string; pos: number; raisedAt: number};

function outcome(parser: typeof Parser, source: string, sourceType: 'script' | 'module'): Outcome {
  try {
    parser.parse(source, {ecmaVersion: 'latest', sourceType});
    return {ok: true};
  } catch (error) {
    const e = error as SyntaxError & {pos: number; raisedAt: number};
    return {ok: false, message: e.message, pos: e.pos, raisedAt: e.raisedAt};
  }
}

/** Duplicate and near-duplicate declarations in every kind of scope acorn tracks. */
const CORPUS = [
  'let a; let a;', 'let a; var a;', 'var a; let a;', 'var a; var a;', 'const a = 1; let a;',
  'let a; { let a; }', '{ let a; } let a;', '{ var a; } let a;', 'let a; { var a; }', '{ { var a; } let a; }',
  '{ let a; { var a; } }', 'function a() {} var a;', 'var a; function a() {}', 'function a() {} function a() {}',
  'function a() {} let a;', 'let a; function a() {}', '{ function a() {} function a() {} }',
  '"use strict"; { function a() {} function a() {} }', '{ function a() {} var a; }', '{ var a; function a() {} }',
  '{ function a() {} let a; }', '{ async function a() {} function a() {} }', '{ function* a() {} function a() {} }',
  'function f() { function a() {} function a() {} var a; let b; }', 'function f(a) { let a; }', 'function f(a) { var a; }',
  'function f() { let a; { var a; } }', '(a) => { let a; }', '(a, a) => 1', 'function f(a, a) {}', '"use strict"; function f(a, a) {}',
  'try {} catch (e) { let e; }', 'try {} catch (e) { var e; }', 'try {} catch ([e]) { var e; }', 'try {} catch (e) { { var e; } }',
  'try {} catch (e) { function e() {} }', 'try {} catch (e) { for (var e of []) {} }', 'try {} catch (e) { for (var e in {}) {} }',
  'for (let a;;) { let a; }', 'for (let a;;) { var a; }', 'for (let a of []) { var a; }', 'for (var a;;) { let a; }',
  'switch (1) { case 1: let a; case 2: let a; }', 'switch (1) { case 1: let a; default: var a; }', 'switch (1) { case 1: function a() {} case 2: function a() {} }',
  'class A {} class A {}', 'class A {} let A;', 'let A; class A {}', 'class A { x = 1; x = 2; }', 'class A { #x; #x; }',
  'class A { static { var a; let a; } }', 'class A { static { let a; } static { let a; } }', 'class A { x = () => { let a; var a; }; }',
  'import a from "m"; let a;', 'import {a} from "m"; var a;', 'import {a, a} from "m";', 'import a, {b as a} from "m";', 'import * as a from "m"; function a() {}',
  'export let a; export let b; let c;', 'export {a}; let a;', 'export {a};', 'export {a}; var a;', 'export {a}; function a() {}', 'export {a as b, c as b}; let a, c;',
  'let a; export {a}; export default 1;', 'export default function a() {} let a;', 'export function a() {} function a() {}',
  'a: a: ;', 'a: { a: ; }', 'a: { b: ; } a: ;', 'a: while (1) { break a; }', 'while (1) { continue b; }',
  'let [a, a] = [];', 'let {a, b: a} = {};', 'var [a, a] = [];', 'let a, a;', 'const a = 1, a = 2;',
  'label: function a() {} var a;', 'if (1) function a() {} var a;', 'let let = 1;', 'var let; let a;', 'let a = 1; { function a() {} }',
];

describe('LinearScopeParser reads sources exactly as stock acorn does', () => {
  for (const sourceType of ['script', 'module'] as const) {
    test(`same accept/reject, message and position (${sourceType})`, () => {
      let refused = 0;
      for (const source of CORPUS) {
        const expected = outcome(Parser, source, sourceType);
        assert.deepEqual(outcome(LinearScopeParser, source, sourceType), expected, `${sourceType}: ${source}`);
        if (!expected.ok) refused++;
      }
      // The corpus exercises both answers (a parse that refused nothing proves little).
      assert.ok(refused > 20 && refused < CORPUS.length - 20, `refused ${refused} of ${CORPUS.length}`);
    });
  }

  test('NameList keeps array order, duplicates and first-index semantics', () => {
    const list = new NameList();
    list.push('a', 'b', 'a');
    assert.deepEqual([...list], ['a', 'b', 'a']);
    assert.equal(list.length, 3);
    assert.equal(list[0], 'a');
    assert.equal(list.indexOf('a'), 0);
    assert.equal(list.indexOf('b'), 1);
    assert.equal(list.indexOf('c'), -1);
    assert.equal(list.indexOf('a', 1), 2);
    assert.ok(!(list.slice(0) instanceof NameList));
    // Past SCAN_MAX the list is indexed: first indexes stay right, also for names pushed after.
    for (let i = 0; i < 50; i++) list.push(`n${i % 20}`);
    assert.equal(list.indexOf('n5'), 3 + 5);
    assert.equal(list.indexOf('a'), 0);
    list.push('late', 'late');
    assert.equal(list.indexOf('late'), 53);
    assert.equal(list.indexOf('n19'), 3 + 19);
    assert.equal(list.indexOf('missing'), -1);
  });
});

/**
 * Elements Array.prototype.indexOf examines during `run`, counted by wrapping it (this is
 * what made the stock checks quadratic: each declaration searched all earlier names).
 */
function searchedElements(run: () => void): number {
  const original = Array.prototype.indexOf;
  let searched = 0;
  Array.prototype.indexOf = function (this: unknown[], ...args: Parameters<typeof original>) {
    searched += this.length;
    return original.apply(this, args);
  } as typeof original;
  try { run(); } finally { Array.prototype.indexOf = original; }
  return searched;
}

describe('LinearScopeParser\'s name checks search no list', () => {
  const lets = (n: number) => Array.from({length: n}, (_, i) => `let a${i};`).join('');
  for (const [shape, build] of [['top level', lets], ['one function', (n: number) => `function f() {${lets(n)}}`]] as const) {
    test(`20 K and 80 K lets at ${shape}: elements searched stay linear`, () => {
      for (const n of [20_000, 80_000]) {
        const source = build(n);
        const searched = searchedElements(() => LinearScopeParser.parse(source, {ecmaVersion: 'latest', sourceType: 'module'}));
        // Stock acorn searches ~n²/2 elements here (2e8 at 20 K); linear is a few per declaration.
        assert.ok(searched <= 4 * n, `${n} lets at ${shape}: ${searched} elements searched`);
      }
    });
  }

  test('the instrumentation sees stock acorn\'s quadratic search (the check above can fail)', () => {
    const n = 2000;
    const searched = searchedElements(() => Parser.parse(lets(n), {ecmaVersion: 'latest', sourceType: 'module'}));
    assert.ok(searched > n * n / 4, `stock acorn searched ${searched}`);
  });
});

describe('acorn constants the rewrite relies on', () => {
  test('binding kinds and var-scope flags match acorn\'s (read from its dist)', async () => {
    const {readFile} = await import('node:fs/promises');
    const dist = await readFile(new URL(import.meta.resolve('acorn')), 'utf8');
    assert.match(dist, /BIND_LEXICAL = 2,/);
    assert.match(dist, /BIND_FUNCTION = 3,/);
    assert.match(dist, /BIND_SIMPLE_CATCH = 4,/);
    assert.match(dist, /SCOPE_TOP = 1,[\s\S]*SCOPE_FUNCTION = 2,[\s\S]*SCOPE_CLASS_STATIC_BLOCK = 256,[\s\S]*SCOPE_VAR = SCOPE_TOP \| SCOPE_FUNCTION \| SCOPE_CLASS_STATIC_BLOCK;/);
  });
});

describe('a var nested in many blocks is bounded by the thread\'s budget', () => {
  test('{ x 1,000 around 50 K vars is not rewritten (runs unwrapped); shallow vars are; the bound is exact', () => {
    const nested = `${'{'.repeat(1000)}${Array.from({length: 50_000}, (_, i) => `var v${i};`).join('')}${'}'.repeat(1000)}\nexport default 1;\n`;
    // Stock acorn: 195 s and 50 M records; the budget stops the parse after 500 K records (0.3 s here).
    assert.deepEqual(wrapToolModule(nested, 'nested.js', THREAD_WRAP_BUDGET), {unwrapped: true});
    const shallow = `function f() { for (var i = 0; i < 1; i++) { ${Array.from({length: 50_000}, (_, i) => `var v${i};`).join('')} } }\nexport default 1;\n`;
    assert.ok('source' in wrapToolModule(shallow, 'shallow.js', THREAD_WRAP_BUDGET));
    // Exactly at the budget it is rewritten, one record over it is not (inside a function, so
    // the module scope's own names, also counted, stay few).
    const budget = {statementTokens: THREAD_WRAP_BUDGET.statementTokens, moduleItems: 1000};
    const atBudget = `function f() {{${'var a;'.repeat(budget.moduleItems)}}}\nexport default 1;\n`;
    assert.ok('source' in wrapToolModule(atBudget, 'at.js', budget));
    const overBudget = `function f() {{${'var a;'.repeat(budget.moduleItems + 1)}}}\nexport default 1;\n`;
    assert.deepEqual(wrapToolModule(overBudget, 'over.js', budget), {unwrapped: true});
  });
});
