/**
 * ICU memory that isolated-vm's memoryLimit does not count (red-team finding 3 on the
 * isolate hardening): `Intl.Segmenter` on 1 MB strings in a loop took a 128 MB isolate to
 * 1.7 GB RSS, and kept `Intl` formatters grow RSS ten times past a 32 MB limit. `Intl` is
 * not available to isolate tools: every route to its constructors must fail at once,
 * and the worker must keep serving without a restart.
 */
// invariant: isolate:memory:icu-objects-unavailable
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

const ATTACKS: Record<string, string> = {
  segmenter: 'export default () => { for (;;) new Intl.Segmenter("en").segment("x".repeat(1e6)); }',
  keptFormatters: 'export default () => { const k = []; for (let i = 0; ; i++) k.push(new Intl.DateTimeFormat("en", {timeZone: ["UTC", "Asia/Tokyo"][i % 2], dateStyle: "full"})); }',
  viaGlobalThis: 'export default () => { const I = globalThis["In" + "tl"]; for (;;) new I.Collator("en"); }',
  viaEval: 'export default () => { const I = (0, eval)("Intl"); const k = []; for (;;) k.push(new I.PluralRules("en")); }',
  viaFunction: 'export default () => { const I = Function("return Intl")(); const k = []; for (;;) k.push(new I.ListFormat("en")); }',
  topLevel: 'const k = []; for (;;) k.push(new Intl.RelativeTimeFormat("en")); export default () => 1;',
};

describe('Intl (ICU memory outside the heap limit)', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  for (const [name, source] of Object.entries(ATTACKS)) {
    test(`${name}: fails at once, without growing the worker`, async () => {
      const [pid] = backend.workerPids();
      const result = await run(backend, source, {limits: {timeoutMs: 3000, memoryMb: 32}});
      assert.equal(result.failed, true, JSON.stringify(result));
      assert.equal(result.timedOut, false, 'the attack did not get to run');
      assert.ok(result.error?.name === 'ReferenceError' || result.error?.name === 'TypeError', JSON.stringify(result));
      assertBounded(result, 3000);
      assert.deepEqual(backend.workerPids(), [pid], 'the worker was not replaced');
      await assertStillServes(backend);
    });
  }

  test('locale-sensitive String, Number and Date methods still work', async () => {
    const result = await run(backend, 'export default () => [typeof Intl, "a".localeCompare("b"), (1234.5).toLocaleString("en"), new Date(0).toLocaleDateString("en", {timeZone: "UTC"})]');
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), ['undefined', -1, '1,234.5', '1/1/1970']);
  });
});
