/**
 * Modules built to make the rewrite's parse quadratic: acorn 8 checked each declaration
 * against its scope's names with a linear search, so 100 K top-level `let`s (1 MB) held the
 * worker's rewrite thread for ~107 s (and every large call of that worker waited for it).
 * The checks are now hash lookups: 200 K `let`s, at top level or in one function, are
 * rewritten and run within their deadline, and the calls beside them succeed.
 */
// invariant: isolate:module-wrap:parse-linear
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, GENEROUS_TIMEOUT_MS, run, startBackend} from '../../integration/isolate/helpers.ts';

/** Declarations in each hostile module (stock acorn: ~4x the 107 s of 100 K). */
const DECLARATIONS = 200_000;
/** The hostile call's deadline, in ms: the fixed parse takes 1-3 s here (more on a busy host). */
const HOSTILE_TIMEOUT_MS = 30_000;
/** Wall clock the hostile call may take past its deadline: the isolate backstop (20 s) plus slack. */
const BACKSTOP_SLACK_MS = 25_000;

const lets = (salt: string) => Array.from({length: DECLARATIONS}, (_, i) => `let ${salt}${i.toString(36)};`).join('');
const SHAPES: [string, (salt: string) => string][] = [
  ['top level', (salt) => `${lets(salt)}\nexport default () => 'top';\n`],
  ['one function', (salt) => `function f() {${lets(salt)} return 'fn'; }\nexport default () => f();\n`],
];

describe('the rewrite\'s parse is linear in the names declared in one scope', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  for (const [shape, build] of SHAPES) {
    test(`${DECLARATIONS} lets at ${shape}: the call ends with its value in time; a large and a trivial call beside it succeed`, async () => {
      const pids = backend.workerPids();
      const salt = `a${process.pid.toString(36)}${Date.now().toString(36)}_`;
      const hostile = run(backend, build(salt), {limits: {timeoutMs: HOSTILE_TIMEOUT_MS, memoryMb: 256}});
      // Over 64 Ki characters: rewritten on the same rewrite thread, after the hostile parse.
      const large = run(backend, `/*${' '.repeat(100_000)}${salt}*/\nexport default (a) => a.n + 1;\n`, {args: {n: 41}, limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
      const trivial = run(backend, 'export default (a) => a.n * 2', {args: {n: 21}, limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
      const [h, l, t] = await Promise.all([hostile, large, trivial]);
      assert.ok(h.elapsedMs < HOSTILE_TIMEOUT_MS + BACKSTOP_SLACK_MS, `hostile call took ${Math.round(h.elapsedMs)} ms`);
      assert.equal(h.failed, false, JSON.stringify({...h, stdout: h.stdout.slice(0, 200)}).slice(0, 500));
      assert.equal(JSON.parse(h.stdout), shape === 'top level' ? 'top' : 'fn');
      assert.equal(l.failed, false, JSON.stringify(l).slice(0, 500));
      assert.equal(JSON.parse(l.stdout), 42);
      assert.equal(t.failed, false, JSON.stringify(t).slice(0, 500));
      assert.equal(JSON.parse(t.stdout), 42);
      assert.deepEqual(backend.workerPids(), pids);
      await assertStillServes(backend);
    });
  }
});
