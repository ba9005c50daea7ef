/**
 * Bounds of the rewrite's parse on the isolate worker's rewrite thread: a parse over its
 * CPU time budget is ended (its thread terminated) and its module refused, and the
 * rewrites queued behind it go on, on a new thread; a regular expression built to make
 * acorn's duplicate group name check quadratic is left to V8 (red-team finding on the
 * isolate hardening: one such module held the thread, and every large call of the worker,
 * for minutes).
 */
// invariant: isolate:module-wrap:parse-cpu-bounded
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {namedBackreferencePairs, possibleUnicodeSetsFlag, REGEX_BUDGET, regexPropertyUnits, THREAD_WRAP_BUDGET, wrapToolModule} from '../../../../src/backends/isolate/module-wrap.ts';
import {parseCpuBudgetMs, WrapThread} from '../../../../src/backends/isolate/module-wrap-thread.ts';
import {WRAPPED_CACHE_CHARS} from '../../../../src/backends/isolate/run-in-isolate.ts';
import {MAX_ENTRY_BYTES} from '../../../../src/policy/load-packages.ts';

/** About 4 MB of small declarations: 0.4-1 s of parse here, far over a 20 ms budget. */
const SLOW = `${Array.from({length: 400_000}, (_, i) => `const v${i} = [${i}];`).join('\n')}\nexport default () => 1;`;
/** A small module, parsed well within any budget below. */
const QUICK = 'const q = 2;\nexport default () => q;';

/**
 * 300 alternatives, each one group `a` inside 1000 non-capturing groups (1.2 MB): stock
 * acorn 8.19 checks each pair of `a`s through both nestings, about 300²/2 x 1000² steps,
 * twice (6.6 s for 60 alternatives here, so minutes for these); V8 accepts it (duplicate
 * names in separate alternatives) in a few ms.
 */
const NESTED_GROUP_NAMES = `const r = /${Array.from({length: 300}, () => `${'(?:'.repeat(1000)}(?<a>x)${')'.repeat(1000)}`).join('|')}/;\nexport default () => r.exec('x').groups.a;`;

/** CPU time the rewrite of `NESTED_GROUP_NAMES` may take, in µs: 200 times what it takes here. */
const MAX_REWRITE_CPU_US = 10_000_000;

describe('the rewrite thread', () => {
  test('a parse over its CPU budget is refused (its regexes went unchecked); a rewrite queued behind it runs on a new thread', {timeout: 120_000}, async () => {
    const thread = new WrapThread({cpuBudgetMs: (chars) => (chars > 2 ** 20 ? 20 : 60_000)});
    const slow = thread.wrap(SLOW, 'slow.js');
    const quick = thread.wrap(QUICK, 'quick.js');
    const refused = await slow;
    assert.ok('error' in refused, JSON.stringify(refused).slice(0, 200));
    assert.match(refused.error.message, /^The module cannot be run: its rewrite took more than its CPU time budget of 20 ms .* \[slow\.js\]$/);
    assert.equal(thread.overBudget, 1);
    const wrapped = await quick;
    assert.ok('source' in wrapped, JSON.stringify(wrapped).slice(0, 200));
    assert.match(wrapped.source, /const q = 2;/);
    // And the thread keeps serving: a slow source within its budget is wrapped.
    const generous = new WrapThread({cpuBudgetMs: () => 60_000});
    const again = await generous.wrap(SLOW, 'slow.js');
    assert.ok('source' in again);
    assert.equal(generous.overBudget, 0);
  });

  test('the worker keeps the rewrite of a largest entry (so a 16 MiB module is parsed once per worker, not per call)', () => {
    const plain = 'export default () => 1;';
    const wrapped = wrapToolModule(plain, 'x.js', THREAD_WRAP_BUDGET);
    assert.ok('source' in wrapped);
    const overhead = wrapped.source.length - plain.length;
    assert.ok(WRAPPED_CACHE_CHARS >= MAX_ENTRY_BYTES + overhead + 64, `${WRAPPED_CACHE_CHARS} < ${MAX_ENTRY_BYTES} + ${overhead}`);
  });

  test('the default budget: 2 s plus 0.5 s per Mi characters', () => {
    assert.equal(parseCpuBudgetMs(0), 2000);
    assert.equal(parseCpuBudgetMs(16 * 2 ** 20), 10_000);
  });
});

describe('regular expressions in the rewrite', () => {
  test('nested duplicate group names are left to V8 with a budget (no pairwise walk)', () => {
    // CPU time of this thread, not wall clock: the rewrite takes about 0.05 s here, stock acorn 160 s.
    const before = process.threadCpuUsage();
    const wrapped = wrapToolModule(NESTED_GROUP_NAMES, 'groups.js', THREAD_WRAP_BUDGET);
    const used = process.threadCpuUsage(before);
    assert.ok(used.user + used.system < MAX_REWRITE_CPU_US, `the rewrite took ${Math.round((used.user + used.system) / 1000)} ms of CPU`);
    assert.ok('source' in wrapped, JSON.stringify(wrapped).slice(0, 200));
    // The regular expression is unchanged inside the wrapper, where V8 checks it.
    assert.ok(wrapped.source.includes(NESTED_GROUP_NAMES.slice(0, 5000)));
  });

  test('property escape units: counted only with u or v, escaped backslashes skipped, properties of strings weigh more', () => {
    const cases: Array<[string, string, number]> = [
      [String.raw`\\p{L}`, 'u', 0],
      [String.raw`\p{L}`, '', 0],
      [String.raw`\p{L}\P{Script=Greek}[\p{RGI_Emoji}]`, 'v', 2 + REGEX_BUDGET.stringPropertyUnits],
      [String.raw`\p{RGI_Emoji}`, 'u', REGEX_BUDGET.stringPropertyUnits],
      [String.raw`\p{L}[^\P{N}]`, 'ui', 2 * REGEX_BUDGET.caseInsensitiveUnits],
      [String.raw`\p{RGI_Emoji}`, 'vi', REGEX_BUDGET.stringPropertyUnits],
      [String.raw`(?i:\p{Lu})`, 'u', REGEX_BUDGET.caseInsensitiveUnits],
      [String.raw`(?<i>x)\p{Lu}`, 'u', 1],
      [String.raw`\p{L`, 'u', 1],
      [String.raw`\p`, 'u', 0],
      [`\\p{${'x'.repeat(100_000)}`, 'u', 1],
    ];
    for (const [pattern, flags, units] of cases) assert.equal(regexPropertyUnits(pattern, flags), units, `/${pattern.slice(0, 40)}/${flags}`);
  });

  test('named group x backreference pairs: lookbehinds and escaped parentheses are not groups, escaped backslashes not references', () => {
    const cases: Array<[string, number]> = [
      [String.raw`(?<a>x)|(?<a>y)\k<a>\k<a>`, 4],
      [String.raw`(?<=x)(?<!y)\k<a>`, 0],
      [String.raw`\(?<a>x)\k<a>`, 0],
      [String.raw`(?<a>x)\\k<a>`, 0],
      [String.raw`(?<\u0061>x)\k<a>`, 1],
      [`(?:${Array(4600).fill('(?<a>)').join('|')})${String.raw`\k<a>`.repeat(6500)}`, 4600 * 6500],
    ];
    for (const [pattern, pairs] of cases) assert.equal(namedBackreferencePairs(pattern), pairs, pattern.slice(0, 40));
  });

  test('a module over its parse budget (so run unwrapped) is bounded on its raw text, which no tokenizer guess can lead astray (third and fourth red teams)', () => {
    // 550 K records of vars nested in blocks: over moduleItems within 4 KB.
    const bomb = `${'{'.repeat(500)}var ${Array(1100).fill('a').join(',')};${'}'.repeat(500)}\n`;
    const emoji = String.raw`\p{RGI_Emoji}`;
    const refusals: Array<[string, RegExp]> = [
      [`/${emoji.repeat(400)}/v;`, /may contain a regular expression with the v flag.* \[b\.js:2:\d+\]$/],
      [Array.from({length: 2500}, (_, i) => `/${emoji}${i}/v;`).join('\n'), /v flag/],
      // Where acorn's tokenizer alone reads a division and V8 a pattern; the quote would hide the rest from a tokenizer.
      [`await /'${emoji.repeat(100)}'/u;`, /its \\p\{\.\.\.\} and \\P\{\.\.\.\} .* more than 256 units\. \[b\.js\]$/],
      [`export default function(){}\n/'${emoji.repeat(100)}'/u;`, /more than 256 units/],
      [`const s = '${String.raw`\p{L}`.repeat(65)}';`, /more than 256 units/],
      [`const r = /(?:${Array(600).fill('(?<a>)').join('|')})${String.raw`\k<a>`.repeat(600)}/;`, /named groups times its named backreferences .* more than 262144\. \[b\.js\]$/],
      ['const x = a/v;', /v flag/],
    ];
    for (const [tail, refusal] of refusals) {
      const wrapped = wrapToolModule(`${bomb}${tail}\nexport default () => 1;`, 'b.js', THREAD_WRAP_BUDGET);
      assert.ok('error' in wrapped, `${tail.slice(0, 40)}: ${JSON.stringify(wrapped).slice(0, 200)}`);
      assert.match(wrapped.error.message, /^The module is too large to rewrite, so its regular expressions are bounded on its whole text: /);
      assert.match(wrapped.error.message, refusal);
    }
    for (const tail of [`const ok = /${String.raw`\p{L}`.repeat(64)}/ui;`, "fetch('/v1/x'); const t = 'text/vnd.a'; const h = '</video>';"]) {
      assert.deepEqual(wrapToolModule(`${bomb}${tail}\nexport default () => 1;`, 'b.js', THREAD_WRAP_BUDGET), {unwrapped: true}, tail);
    }
  });

  test('possibleUnicodeSetsFlag: a / then flag letters with v then a character that ends them', () => {
    const cases: Array<[string, number]> = [['a /x/v;', 4], ['/x/gvi)', 2], ['/v', 0], ['text/vnd', -1], ['/v1/', -1], ['</video>', -1], ['/x/u;', -1], [`/x/${'d'.repeat(20)}v;`, -1]];
    for (const [text, at] of cases) assert.equal(possibleUnicodeSetsFlag(text), at, text);
  });

  test('the bounds hold on every parse (worker, build, check), at the literal that crosses them', () => {
    const over = `const a = /${String.raw`\p{L}`.repeat(REGEX_BUDGET.moduleUnits)}/u;\nconst b = /\\p{N}/u;\nexport default 1;`;
    for (const wrapped of [wrapToolModule(over, 'm.js', THREAD_WRAP_BUDGET), wrapToolModule(over, 'm.js')]) {
      assert.ok('error' in wrapped);
      assert.match(wrapped.error.message, /at most 256 units per module.* \[m\.js:2:12\]$/);
    }
    const within = `const a = /${String.raw`\p{L}`.repeat(REGEX_BUDGET.moduleUnits)}/u;\nconst b = /\\p{N}/;\nexport default 1;`;
    assert.ok('source' in wrapToolModule(within, 'm.js', THREAD_WRAP_BUDGET));
    const longV = `const v = /${'a'.repeat(REGEX_BUDGET.unicodeSetsPatternChars + 1)}/v;\nexport default 1;`;
    const refused = wrapToolModule(longV, 'v.js');
    assert.ok('error' in refused);
    assert.match(refused.error.message, /at most 8192 are allowed .* \[v\.js:1:12\]$/);
    assert.ok('source' in wrapToolModule(`const u = /${'a'.repeat(REGEX_BUDGET.unicodeSetsPatternChars + 1)}/u;\nexport default 1;`, 'u.js'));
  });

  test('with a budget an invalid pattern passes the rewrite (V8 refuses it); without one acorn refuses it', () => {
    const bad = 'const r = /(?<a>x)(?<a>y)/;\nexport default () => 1;';
    assert.ok('source' in wrapToolModule(bad, 'bad.js', THREAD_WRAP_BUDGET));
    const refused = wrapToolModule(bad, 'bad.js');
    assert.ok('error' in refused);
    assert.match(refused.error.message, /Duplicate capture group name \[bad\.js:1:\d+\]/);
  });
});
