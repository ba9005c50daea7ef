/**
 * Modules built to make the rewrite's parse quadratic: acorn 8 checked each declaration
 * against its scope's names with a linear search, so 100 K top-level `let`s (1 MB) held the
 * worker's rewrite thread for ~107 s (and every large call of that worker waited for it).
 * The checks are now hash lookups: 200 K `let`s, at top level or in one function, are
 * rewritten and run within their deadline, and the calls beside them succeed. Likewise
 * acorn's check of duplicate regex group names (groups² x nesting², minutes for the
 * 1.2 MB pattern below), now left to V8.
 *
 * And a parse does not hold the worker's large-compile slot: a large module already
 * parsed is compiled and run while another module's parse is still going on.
 */
// invariant: isolate:module-wrap:parse-linear
// invariant: isolate:module-wrap:parse-holds-no-compile-slot
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, freshSalt, GENEROUS_TIMEOUT_MS, largeAddOne, run, startBackend} from '../../integration/isolate/helpers.ts';

/** Declarations in each hostile module (stock acorn: ~4x the 107 s of 100 K). */
const DECLARATIONS = 200_000;
/** The hostile call's deadline, in ms: the fixed parse takes 1-3 s here (more on a busy host). */
const HOSTILE_TIMEOUT_MS = 30_000;
/** Wall clock the hostile call may take past its deadline: the isolate backstop (20 s) plus slack. */
const BACKSTOP_SLACK_MS = 25_000;

const lets = (salt: string) => Array.from({length: DECLARATIONS}, (_, i) => `let ${salt}${i.toString(36)};`).join('');
/** 300 alternatives, each one group `a` inside 1000 non-capturing groups (1.2 MB); V8 accepts duplicate names in separate alternatives. */
const groupNames = (salt: string) => `const r = /${Array.from({length: 300}, () => `${'(?:'.repeat(1000)}(?<a>x)${')'.repeat(1000)}`).join('|')}/;
// ${salt}\nexport default () => r.exec('x').groups.a;\n`;
const SHAPES: [string, (salt: string) => string, unknown][] = [
  ['lets at top level', (salt) => `${lets(salt)}\nexport default () => 'top';\n`, 'top'],
  ['lets in one function', (salt) => `function f() {${lets(salt)} return 'fn'; }\nexport default () => f();\n`, 'fn'],
  ['nested duplicate regex group names', groupNames, 'x'],
];

describe('the rewrite\'s parse is linear in the names declared in one scope', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  for (const [shape, build, expected] of SHAPES) {
    test(`${shape}: the call ends with its value in time; a large and a trivial call beside it succeed`, async () => {
      const pids = backend.workerPids();
      const salt = freshSalt();
      const hostile = run(backend, build(salt), {limits: {timeoutMs: HOSTILE_TIMEOUT_MS, memoryMb: 256}});
      // Rewritten on the same rewrite thread, after the hostile parse.
      const large = run(backend, largeAddOne(salt), {args: {n: 41}, limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
      const trivial = run(backend, 'export default (a) => a.n * 2', {args: {n: 21}, limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
      const [h, l, t] = await Promise.all([hostile, large, trivial]);
      assert.ok(h.elapsedMs < HOSTILE_TIMEOUT_MS + BACKSTOP_SLACK_MS, `hostile call took ${Math.round(h.elapsedMs)} ms`);
      assert.equal(h.failed, false, JSON.stringify({...h, stdout: h.stdout.slice(0, 200)}).slice(0, 500));
      assert.equal(JSON.parse(h.stdout), expected);
      assert.equal(l.failed, false, JSON.stringify(l).slice(0, 500));
      assert.equal(JSON.parse(l.stdout), 42);
      assert.equal(t.failed, false, JSON.stringify(t).slice(0, 500));
      assert.equal(JSON.parse(t.stdout), 42);
      assert.deepEqual(backend.workerPids(), pids);
      await assertStillServes(backend);
    });
  }

  test('a large module already parsed runs while another module is being parsed', async () => {
    const salt = freshSalt();
    const parsed = largeAddOne(salt);
    const first = await run(backend, parsed, {args: {n: 1}, limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
    assert.equal(first.failed, false, JSON.stringify(first).slice(0, 500));
    // A parse of 1-3 s here (a new source), then the parsed module: compiled and run
    // without waiting for that parse (which held the compile slot before).
    const order: string[] = [];
    const slow = run(backend, `${lets(salt)}\nexport default () => 'slow';\n`, {limits: {timeoutMs: HOSTILE_TIMEOUT_MS, memoryMb: 256}})
      .then((r) => (order.push('slow'), r));
    const quick = run(backend, parsed, {args: {n: 41}, limits: {timeoutMs: GENEROUS_TIMEOUT_MS}}).then((r) => (order.push('parsed'), r));
    const [s, q] = await Promise.all([slow, quick]);
    assert.equal(q.failed, false, JSON.stringify(q).slice(0, 500));
    assert.equal(JSON.parse(q.stdout), 42);
    assert.equal(s.failed, false, JSON.stringify(s).slice(0, 500));
    assert.deepEqual(order, ['parsed', 'slow']);
    await assertStillServes(backend);
  });

  test('an invalid pattern in a large module is refused by V8, naming the file, line and column', async () => {
    const r = await run(backend, `${largeAddOne(freshSalt())}const r = /(?<a>x)(?<a>y)/;\n`, {limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
    assert.equal(r.failed, true);
    assert.equal(r.error?.name, 'SyntaxError');
    assert.match(r.error?.message ?? '', /^Invalid regular expression: \/\(\?<a>x\)\(\?<a>y\)\/: Duplicate capture group name \[fixtures\/tool\.js:3:11\]$/);
    await assertStillServes(backend);
  });
});
