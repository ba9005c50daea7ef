/**
 * Attacks on the module rewrite (module-wrap.ts) that puts a tool's top level inside a
 * function the prelude calls: code that tries to break out of the wrapper or change its
 * meaning, and the export forms it must keep. Each runs through a real isolate backend;
 * after all of them the worker is the same one (no restart) and still answers.
 */
// invariant: isolate:errors:top-level-caught-in-isolate
// invariant: isolate:module-wrap:v8-judges-wrapper
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import ivm from 'isolated-vm';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {wrapToolModule} from '../../../src/backends/isolate/module-wrap.ts';
import {assertStillServes, job, run, startBackend} from '../../integration/isolate/helpers.ts';

const LIMITS = {timeoutMs: 10_000, memoryMb: 64};

/** Sources whose default export returns a value, and the JSON that value must have. */
const KEPT: Record<string, [string, unknown]> = {
  'a stray } in a string, regex, template and comments': ['const s = "}"; const r = /}/; const t = `}${"}"}`; /* } */ // }\nexport default () => s + r.source + t;', '}}}}'],
  'an export default inside a string': ['const s = "export default 5; }"; export default () => s;', 'export default 5; }'],
  'an expression default': ['export default (a) => a.n * 2;', 4],
  'the name of an anonymous default function': ['export default function () { return (0, eval)("1") && "x"; }', 'x'],
  'a named default function, hoisted': ['const r = f.name; export default function f() { return r; }', 'f'],
  'a default class (called without new, as before; named default)': ['export default class { static run() {} }\n', 'class'],
  'export {x as default}': ['let x = () => "late"; export {x as default}; x = () => "live";', 'live'],
  'export {x as "default"}': ['const x = () => 9; export {x as "default"};', 9],
  'other exports kept as declarations': ['export const k = 3; export function g() { return k; } export default () => g();', 3],
  'top-level await': ['const v = await Promise.resolve(3); export default () => v;', 3],
  // `arguments` at top level is the wrapper's own, empty (documented in module-wrap.ts).
  'this and arguments at top level': ['const t = [this === undefined, arguments.length]; export default () => t;', [true, 0]],
  'strict mode': ['const t = (function () { return this === undefined; })(); export default () => t;', true],
  'labels': ['let n = 0; outer: for (;;) { for (;;) { n++; break outer; } } export default () => n;', 1],
  'a call as the first statement (not a directive)': ['String(1); "use strict"; export default () => "call";', 'call'],
  'a hashbang line': ['#!/usr/bin/env node\nexport default () => "bang";', 'bang'],
  'a name like the wrapper\'s own': ['const $d0 = 1; const $toolcell = 2; export default () => $d0 + $toolcell;', 3],
  // V8 reads the `/` after the function expression as a division (acorn: a regex), so in
  // V8's reading the export is inside a template; the text still stays inside the wrapper.
  'a text V8 reads otherwise than acorn, whose reading stays inside the wrapper': ['x ? y : function(){}\n/`/g\nexport default 1\n//`', 'own error'],
};

/**
 * Texts that acorn reads as a closed module but V8 reads as code that closes the wrapper
 * (a `/` after a function expression after `:` or `await`: a division for V8, a regex for
 * acorn; red-team reproducers esc-real.js, esc2.js): the escaped code would run at module
 * evaluation and throw a value whose getter isolated-vm would read outside the time limit.
 */
const ESCAPES: Record<string, string> = {
  'after ?:': 'x ? y : function(){}\n/`/g\n"`}; throw {get message() { for (;;); }}; async function zz(){ //"\nexport default () => "fine";',
  'after await': 'await function(){}\n/`/g\n"`}; globalThis.ESCAPED = 1; throw {get message() { for (;;); }}; async function zz(){ //"\nexport default () => "fine";',
  'after ?: with the wrapper\'s tail absorbed': 'x ? y : function(){}\n/`/g\n"`}}); throw {get message() { for (;;); }}; async function zz(){ { //"\nexport default () => "fine";',
};

/** Sources refused cleanly with a SyntaxError (the wrapper cannot be broken out of). */
const REFUSED: Record<string, string> = {
  'a } that closes the wrapper': 'export default () => 1; } globalThis.x = 1; {',
  'return at top level': 'return 1; export default () => 1;',
  'new.target at top level': 'const t = new.target; export default () => t;',
  'with (sloppy mode only)': 'with ({}) {} export default () => 1;',
  'an unterminated template that would swallow the wrapper\'s end': 'export default () => `',
  'an unterminated comment': 'export default () => 1; /*',
  'the wrapper\'s reserved name': 'let $toolcell$d = 1; export default () => 1;',
  'the wrapper\'s reserved label, unicode-escaped': '\\u0024toolcell\\u{24}top: { break \\u0024toolcell$top; } export default () => 1;',
  // The wrapper's label, spelled with escapes of many leading zeros, in a function the text
  // opens after closing the wrapper in V8's reading: the wrapper's tail would break to it.
  'the wrapper\'s reserved label reopened after an early close, escaped with many leading zeros':
    '0 ? 0 : function(){}\n/`/g\n"`}}); throw {get message() { for (;;); }}; (async function zz(){ \\u{00000000024}toolcell$top: { //"\nexport default () => "fine";',
  'nesting deeper than the parser\'s stack': `const a = ${'['.repeat(200_000)}${']'.repeat(200_000)}; export default () => 1;`,
};

describe('the module rewrite keeps the tool\'s meaning and cannot be broken out of', () => {
  let backend: IsolateBackend;
  let pids: number[];
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
    pids = backend.workerPids();
  });
  after(() => backend.close());

  for (const [name, [source, expected]] of Object.entries(KEPT)) {
    test(`${name}`, async () => {
      const result = await run(backend, source, {args: {n: 2}, limits: LIMITS});
      if (expected === 'class') {
        assert.match(result.error?.message ?? '', /^Class constructor default cannot be invoked without 'new'$/, JSON.stringify(result));
        return;
      }
      if (expected === 'own error') {
        // The tool shadowed the wrapper's name on purpose: it can only break its own default export.
        assert.equal(result.failed, true, JSON.stringify(result));
        assert.equal(result.error?.name, 'ReferenceError', JSON.stringify(result));
        return;
      }
      assert.equal(result.failed, false, JSON.stringify(result));
      assert.deepEqual(JSON.parse(result.stdout), expected);
    });
  }

  for (const [name, source] of Object.entries(REFUSED)) {
    test(`${name}: refused with a SyntaxError`, async () => {
      const result = await run(backend, source, {limits: LIMITS});
      assert.equal(result.failed, true, JSON.stringify(result));
      assert.equal(result.error?.name, 'SyntaxError', JSON.stringify(result));
      assert.ok((result.error?.message.length ?? 0) <= 4096);
    });
  }

  for (const [name, source] of Object.entries(ESCAPES)) {
    test(`acorn and V8 disagree on a / (${name}): refused by V8's compile, nothing runs at module top level`, async () => {
      const result = await run(backend, source, {limits: {timeoutMs: 2000, memoryMb: 64}});
      assert.equal(result.failed, true, JSON.stringify(result));
      assert.equal(result.error?.name, 'SyntaxError', JSON.stringify(result));
      assert.match(result.error?.message ?? '', /V8 does not read this module as its rewrite's parser/, JSON.stringify(result));
      assert.deepEqual(backend.workerPids(), pids);
      assert.equal(backend.stats().restarts, 0);
    });
  }

  test('a text whose V8 reading returns its own value from the wrapper: its getter is never called by the prelude', async () => {
    const source = '0 ? 0 : function(){}\n/`/g\n"`; return {get d() { for (;;); }}; //"\nexport default () => 1;';
    const result = await run(backend, source, {limits: {timeoutMs: 2000, memoryMb: 64}});
    assert.equal(result.failed, true, JSON.stringify(result));
    assert.equal(result.timedOut, false, JSON.stringify(result));
    assert.match(result.error?.message ?? '', /no default export function/, JSON.stringify(result));
  });

  test('a refusal names the file of each call, not the first call\'s (the wrap cache is shared)', async () => {
    const source = 'export default () => 1;\nconst = 2;';
    const messages: string[] = [];
    for (const filename of ['pkgA/a.js', 'pkgB/b.js']) {
      const result = await backend.run({...job(source, {}, LIMITS), filename}, {signal: new AbortController().signal});
      assert.equal(result.error?.name, 'SyntaxError', JSON.stringify(result));
      messages.push(result.error?.message ?? '');
    }
    assert.match(messages[0]!, /\[pkgA\/a\.js:2:7\]$/);
    assert.match(messages[1]!, /\[pkgB\/b\.js:2:7\]$/);
  });

  test('an export ... from and an import are refused as imports', async () => {
    for (const source of ['export * from "x"; export default () => 1;', 'export {a} from "y"; export default () => 1;', 'import "z"; export default () => 1;']) {
      const result = await run(backend, source, {limits: LIMITS});
      assert.match(result.error?.message ?? '', /^Imports are not available to isolate tools/, source);
    }
  });

  test('a source over 64 Ki chars (the off-main-thread compile) runs, and its lines are the author\'s', async () => {
    const source = `${'// filler line\n'.repeat(20_000)}const e = new Error("x");\nexport default () => e.stack.split("\\n")[1];\n`;
    assert.ok(source.length > 64 * 1024);
    const result = await run(backend, source, {limits: LIMITS});
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.match(JSON.parse(result.stdout) as string, /:20001:11\)?$/);
  });

  test('the wrapper is compiled eagerly: its code is in the V8 code cache (no parse of the tool per call)', async () => {
    const source = `const big = [${'(x) => x + 1,'.repeat(2000)}]; export default () => big.length;`;
    const first = await run(backend, source, {limits: LIMITS});
    assert.equal(first.failed, false, JSON.stringify(first));
    const stats = backend.stats().codeCacheHits;
    await run(backend, source, {limits: LIMITS});
    assert.equal(backend.stats().codeCacheHits, stats + 1);
    const wrapped = wrapToolModule(source, 'f.js');
    assert.ok('source' in wrapped);
    // An arrow wrapper gave about 1 KB of cached code here (its body compiled lazily, per call).
    const isolate = new ivm.Isolate({memoryLimit: 32});
    try {
      const compiled = isolate.compileModuleSync(wrapped.source, {filename: 'f.js', produceCachedData: true}) as unknown as {cachedData: ivm.ExternalCopy<ArrayBuffer>};
      assert.ok(compiled.cachedData.copy().byteLength > 20_000, `cached code: ${compiled.cachedData.copy().byteLength} bytes`);
    } finally {
      isolate.dispose();
    }
  });

  test('the rewrite moves no line and no column of a named or blanked export', () => {
    const source = 'export const a = 1;\nexport {a as default};\n  x();';
    const wrapped = wrapToolModule(source, 'f.js');
    assert.ok('source' in wrapped);
    const lines = wrapped.source.split('\n');
    assert.equal(lines[3], '  x();');
    assert.equal(lines[1]!.indexOf('const a'), source.indexOf('const a'));
  });

  test('no call above cost a worker restart, and the backend answers', async () => {
    assert.deepEqual(backend.workerPids(), pids);
    assert.equal(backend.stats().restarts, 0);
    await assertStillServes(backend);
  });
});
