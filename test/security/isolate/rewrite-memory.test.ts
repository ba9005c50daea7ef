/**
 * Sources built to make the rewrite's parse (module-wrap.ts, on the worker's rewrite thread)
 * hold more memory than the thread's 256 MB heap: one ~15 MB array literal (the red team's
 * bigsrc flood: acorn's tree of it is over 400 MB), 15 M empty statements (each kept in
 * `Program.body`), array holes, and 2.5 M top-level declarations. Node ends a thread at its
 * heap limit only on a best-effort basis (nodejs/node#47224): the flood's parse aborted the
 * whole isolate worker ("Reached heap limit", SIGABRT) under CPU load, a restart with 16
 * calls re-run. The parse now stops at a token budget, deterministically, and the module
 * runs unwrapped; the rewrite thread is never the thing that runs out.
 */
// invariant: isolate:module-wrap:parse-bounded
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {THREAD_WRAP_BUDGET, wrapToolModule} from '../../../src/backends/isolate/module-wrap.ts';
import {wrapThread} from '../../../src/backends/isolate/module-wrap-thread.ts';
import {assertStillServes, GENEROUS_TIMEOUT_MS, run, startBackend} from '../../integration/isolate/helpers.ts';

/** A module whose one statement is an array literal of `n` numbers (2 tokens each). */
function arrayLiteral(n: number, salt = ''): string {
  return `// ${salt}\nconst a = [${'0,'.repeat(n)}];\nexport default () => a.length;\n`;
}

describe('the rewrite\'s parse stays within its budget, whatever the source', () => {
  test('one statement over the token budget is not rewritten (it runs unwrapped), decided by the source alone', () => {
    const over = arrayLiteral(THREAD_WRAP_BUDGET.statementTokens / 2 + 10);
    assert.deepEqual(wrapToolModule(over, 'big.js', THREAD_WRAP_BUDGET), {unwrapped: true});
    const under = arrayLiteral(THREAD_WRAP_BUDGET.statementTokens / 2 - 10);
    assert.ok('source' in wrapToolModule(under, 'big.js', THREAD_WRAP_BUDGET));
  });

  test('what the whole parse keeps is bounded: top-level names over the budget are not rewritten; empty statements are not kept', () => {
    const names = `${'var a;'.repeat(THREAD_WRAP_BUDGET.moduleItems + 10)}export default 1;`;
    assert.deepEqual(wrapToolModule(names, 'names.js', THREAD_WRAP_BUDGET), {unwrapped: true});
    // 3 M empty statements, then an export: each statement is small, none is kept but the export.
    const empties = `${';'.repeat(3_000_000)}\nexport default () => 1;\n`;
    const wrapped = wrapToolModule(empties, 'empties.js', THREAD_WRAP_BUDGET);
    assert.ok('source' in wrapped, JSON.stringify(wrapped).slice(0, 200));
  });

  test('on the rewrite thread, the flood\'s 15 MB array literal and 15 M empty statements come back (not rewritten / rewritten); the thread lives on', async () => {
    const flood = arrayLiteral(7_500_000, 'thread');
    assert.deepEqual(await wrapThread.wrap(flood, 'flood.js'), {unwrapped: true});
    const empties = `${';'.repeat(15_000_000)}\nexport default () => 1;\n`;
    assert.ok('source' in await wrapThread.wrap(empties, 'empties.js'));
    const holes = `const a = [${','.repeat(15_000_000)}];\nexport default () => a.length;\n`;
    assert.deepEqual(await wrapThread.wrap(holes, 'holes.js'), {unwrapped: true});
  });

  describe('in a worker', () => {
    let backend: IsolateBackend;
    before(async () => {
      ({backend} = await startBackend({workers: 1}));
    });
    after(() => backend.close());

    test('a 15 MB array literal module runs (unwrapped) and costs no worker restart', async () => {
      const pids = backend.workerPids();
      const source = arrayLiteral(7_500_000, `${process.pid}-${Date.now()}`);
      const result = await run(backend, source, {limits: {timeoutMs: GENEROUS_TIMEOUT_MS, memoryMb: 256}});
      assert.ok(!result.failed || result.timedOut || result.outOfMemory, JSON.stringify({...result, stdout: result.stdout.slice(0, 200)}));
      if (!result.failed) assert.equal(result.stdout, '7500000');
      assert.equal(backend.stats().restarts, 0, 'the worker was restarted');
      assert.deepEqual(backend.workerPids(), pids);
      await assertStillServes(backend);
    });
  });
});
