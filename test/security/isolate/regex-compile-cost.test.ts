/**
 * Regular expression literals built to make V8's compile of a module slow and large
 * (red-team finding on the rewrite change): V8 parses every literal when it compiles the
 * module, uninterruptibly and outside `memoryMb`. `\p{RGI_Emoji}` with the `v` flag costs
 * about 0.8 ms and 0.9 MB each: a 64 KB module of them held the worker's main thread 6 s
 * per call (innocent calls beside it waited up to 30 s, one ended TIMEOUT), a 512 KB one
 * held the worker's compile slot (other tenants' large modules ended TIMEOUT), and one
 * literal of 5000 pushed the worker over its 1 GB ceiling (killed, with its quarantine
 * worker); such a literal now meets the `v` flag's length bound first, one of 600 the
 * escape bound. Each is now refused before V8 sees it, naming the bound; the innocent calls
 * beside it succeed and the worker is never restarted. A module within the bounds runs.
 */
// invariant: isolate:regex:compile-cost-bounded
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, freshSalt, GENEROUS_TIMEOUT_MS, largeAddOne, run, startBackend} from '../../integration/isolate/helpers.ts';

const LIMITS = {timeoutMs: GENEROUS_TIMEOUT_MS, memoryMb: 64};
const EMOJI = String.raw`\p{RGI_Emoji}`;
/** Lines of `/` + 30 `\p{RGI_Emoji}` + `/vi`, a fresh `salt` each (no cache helps), up to `chars` UTF-16 units. */
function emojiModule(salt: string, chars: number): string {
  let text = `// ${salt}\nexport default (a) => a;\n`;
  for (let i = 0; text.length < chars - 600; i++) text += `/${EMOJI.repeat(30)}${i.toString(36)}/vi;\n`;
  return text;
}
/** One pattern of `groups` empty groups named a, in separate alternatives, then `references` `\k<a>`. */
const backreferences = (salt: string, groups: number, references: number) =>
  `// ${salt}\nconst r = /(?:${Array(groups).fill('(?<a>)').join('|')})${String.raw`\k<a>`.repeat(references)}/;\nexport default () => 1;\n`;
const PAIRS_REFUSAL = /^The module's regular expressions pair too many named groups with named backreferences .*at most 262144\. \[fixtures\/tool\.js:2:12\]$/;
/** 500 nested blocks around 1100 vars: 550 K records, over the parse's 500 K items budget (the module then runs unwrapped). */
const OVER_PARSE_BUDGET = `${'{'.repeat(500)}var ${Array(1100).fill('a').join(',')};${'}'.repeat(500)}\n`;
const RAW_REFUSAL = /^The module is too large to rewrite, so its regular expressions are bounded on its whole text: .* \[fixtures\/tool\.js(:\d+:\d+)?\]$/;
const UNITS_REFUSAL = /^The module's regular expressions use too many Unicode property escapes .*at most 256 units per module.*\\p\{RGI_Emoji\} counts 32\. \[fixtures\/tool\.js:\d+:\d+\]$/;

describe('the compile cost of a module\'s regular expressions is bounded before V8 compiles it', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  const cases: Array<[string, (salt: string) => string, RegExp]> = [
    ['a 64 Ki module of \\p{RGI_Emoji} (main-thread compile)', (salt) => emojiModule(salt, 64 * 1024), UNITS_REFUSAL],
    ['a 512 KB module of \\p{RGI_Emoji} (compile slot)', (salt) => emojiModule(salt, 512 * 1024), UNITS_REFUSAL],
    // 7800 characters: within the v flag's length; about 540 MB of native memory to compile.
    ['one literal of 600 \\p{RGI_Emoji} (native memory)', (salt) => `// ${salt}\nconst r = /${EMOJI.repeat(600)}/v;\nexport default () => 1;\n`, UNITS_REFUSAL],
    ['a v flag class of 16 000 ranges with i', (salt) => `// ${salt}\nconst r = /[${Array.from({length: 16_000}, (_, i) => String.raw`\u{${(i * 50).toString(16)}}-\u{${(i * 50 + 20).toString(16)}}`).join('')}]/vi;\nexport default () => 1;\n`,
      /^A regular expression with the v flag is \d+ characters long; at most 8192 are allowed .* \[fixtures\/tool\.js:2:12\]$/],
    // V8 resolves each `\k<a>` to every group named a: 0.6-0.9 s and 700 MB for 64.7 KB (found by a second red team).
    ['4600 duplicate named groups x 6500 backreferences (64.7 KB)', (salt) => backreferences(salt, 4600, 6500), PAIRS_REFUSAL],
    ['12 000 duplicate named groups x 16 000 backreferences (164 KB: over the 1 GB ceiling)', (salt) => backreferences(salt, 12_000, 16_000), PAIRS_REFUSAL],
    // A parse over its budget runs unwrapped; its raw text is then bounded (a third red team
    // had this skip every check: 1.2-1.4 s of the main thread per call; a fourth hid the
    // patterns from acorn's tokenizer after `await`, killing the worker twice per call).
    ['a module over its parse budget with 2500 \\p{RGI_Emoji} literals (57 KB, unwrapped)', (salt) => `// ${salt}\n${OVER_PARSE_BUDGET}${Array.from({length: 2500}, (_, i) => `/${EMOJI}${i}/v;`).join('\n')}\nexport default () => 1;\n`, RAW_REFUSAL],
    ['a module over its parse budget with one literal of 3000 \\p{RGI_Emoji} (over 64 Ki)', (salt) => `// ${salt}\n${OVER_PARSE_BUDGET}/*${' '.repeat(70_000)}*/ /${EMOJI.repeat(3000)}/v;\nexport default () => 1;\n`, RAW_REFUSAL],
    ['a module over its parse budget with `await /\'` + 4300 \\p{RGI_Emoji} + `\'/v` (63.5 KB)', (salt) => `// ${salt}\n${OVER_PARSE_BUDGET}await /'${EMOJI.repeat(4300)}'/v;\nexport default () => 1;\n`, RAW_REFUSAL],
    ['the same with the u flag (no v to see)', (salt) => `// ${salt}\n${OVER_PARSE_BUDGET}await /'${EMOJI.repeat(1500)}'/u;\nexport default () => 1;\n`, RAW_REFUSAL],
  ];
  for (const [name, build, refusal] of cases) {
    test(`${name} is refused, naming the bound; a trivial and a large call beside it succeed; no restart`, async () => {
      const pids = backend.workerPids();
      const restarts = backend.stats().restarts;
      const salt = freshSalt();
      // Several at once, as a flood would send them, each its own source.
      const hostile = Array.from({length: 3}, (_, i) => run(backend, build(`${salt}${i}`), {limits: LIMITS}));
      const trivial = run(backend, 'export default (a) => a.n * 2', {args: {n: 21}, limits: {timeoutMs: 2000}});
      const large = run(backend, largeAddOne(salt), {args: {n: 41}, limits: {timeoutMs: 2000}});
      const [t, l, ...h] = await Promise.all([trivial, large, ...hostile]);
      for (const r of h) {
        assert.equal(r.failed, true);
        assert.equal(r.timedOut, false, JSON.stringify(r).slice(0, 300));
        assert.equal(r.error?.name, 'Error');
        assert.match(r.error?.message ?? '', refusal);
      }
      assert.equal(t.failed, false, JSON.stringify(t).slice(0, 300));
      assert.equal(JSON.parse(t.stdout), 42);
      assert.equal(l.failed, false, JSON.stringify(l).slice(0, 300));
      assert.equal(JSON.parse(l.stdout), 42);
      assert.deepEqual(backend.workerPids(), pids, 'the worker was not replaced');
      assert.equal(backend.stats().restarts, restarts);
      await assertStillServes(backend);
    });
  }

  test('patterns within the bounds compile and run, small and large modules alike', async () => {
    const body = String.raw`const emoji = /^\p{RGI_Emoji}$/v; const letters = /^[\p{L}--\p{Lu}]+$/v; const greek = /\p{Script=Greek}/u;
export default (a) => [emoji.test(a.e), letters.test(a.l), greek.test(a.g), /\p{L}/.test('p')];
`;
    for (const source of [body, `/*${' '.repeat(70_000)}${freshSalt()}*/\n${body}`]) {
      const r = await run(backend, source, {args: {e: '👍🏽', l: 'abc', g: 'λ'}, limits: LIMITS});
      assert.equal(r.failed, false, JSON.stringify(r).slice(0, 300));
      assert.deepEqual(JSON.parse(r.stdout), [true, true, true, false]);
    }
  });
});
