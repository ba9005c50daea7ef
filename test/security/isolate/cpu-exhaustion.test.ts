/**
 * Attacks on time: code that never ends must be stopped at the wall-clock or CPU limit,
 * reported `timedOut`, and the backend must answer the next call.
 */
// invariant: isolate:time:stopped-at-limit
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, LIMITS, run, startBackend} from '../../integration/isolate/helpers.ts';

describe('cpu and time exhaustion', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  const expectTimedOut = async (source: string, limits: Partial<typeof LIMITS> & {cpuTimeMs?: number} = {}, boundMs?: number) => {
    const result = await run(backend, source, {limits});
    assert.equal(result.timedOut, true, JSON.stringify(result));
    assert.equal(result.failed, true);
    assert.equal(result.outOfMemory, false);
    assertBounded(result, boundMs ?? limits.timeoutMs ?? LIMITS.timeoutMs);
    await assertStillServes(backend);
    return result;
  };

  test('an infinite synchronous loop is stopped at timeoutMs', async () => {
    await expectTimedOut('export default () => { for (;;); }');
  });

  test('an infinite loop at module top level is stopped at timeoutMs', async () => {
    await expectTimedOut('for (;;); export default () => 1;');
  });

  test('an async infinite loop through awaited microtasks is stopped at timeoutMs', async () => {
    const result = await expectTimedOut('export default async () => { console.log("started"); for (;;) await null; }');
    assert.equal(result.stderr, 'started\n', 'console output before the timeout is kept');
  });

  test('a self-rescheduling promise callback chain is stopped at timeoutMs', async () => {
    await expectTimedOut('export default () => { const spin = () => { Promise.resolve().then(spin); }; spin(); return new Promise(() => {}); }');
  });

  test('a microtask loop left running after the tool returned is stopped at timeoutMs', async () => {
    await expectTimedOut('export default () => { (async () => { for (;;) await null; })(); return 1; }');
  });

  test('a promise that never settles is ended at timeoutMs', async () => {
    await expectTimedOut('export default () => new Promise(() => {})');
  });

  test('a module whose top-level await never settles is ended at timeoutMs', async () => {
    await expectTimedOut('await new Promise(() => {}); export default () => 1;');
  });

  test('Atomics.wait on a SharedArrayBuffer is bounded by timeoutMs', async () => {
    await expectTimedOut('export default () => Atomics.wait(new Int32Array(new SharedArrayBuffer(16)), 0, 0)');
  });

  test('Atomics.wait with a long explicit timeout is bounded by timeoutMs', async () => {
    await expectTimedOut('export default () => Atomics.wait(new Int32Array(new SharedArrayBuffer(16)), 0, 0, 3600e3)');
  });

  test('Atomics.waitAsync gives no timer that outlives timeoutMs', async () => {
    await expectTimedOut('export default async () => { const r = Atomics.waitAsync(new Int32Array(new SharedArrayBuffer(16)), 0, 0, 50); return r.async ? await r.value : r.value; }');
  });

  test('a catastrophic regular expression is stopped at timeoutMs', async () => {
    await expectTimedOut('export default () => /^(a+)+$/.test("a".repeat(40) + "b")');
  });

  test('a busy loop is stopped at cpuTimeMs when it is below timeoutMs', async () => {
    // CPU time accrues more slowly than wall time on a busy machine, so the bound is the
    // wall-clock limit; the CPU limit must act long before it.
    const result = await expectTimedOut('export default () => { for (;;); }', {timeoutMs: 10_000, cpuTimeMs: 300});
    assert.ok(result.elapsedMs < 5000, `stopped after ${Math.round(result.elapsedMs)} ms`);
  });

  test('an endless loop in a getter of the thrown error never runs: the call fails at once', async () => {
    // The prelude reads only data properties of a thrown value (hostile-errors.test.ts).
    const result = await run(backend, 'export default () => { const e = new Error("x"); Object.defineProperty(e, "message", {get() { for (;;); }}); throw e; }');
    assert.equal(result.failed, true);
    assert.equal(result.timedOut, false, JSON.stringify(result));
    assertBounded(result);
    await assertStillServes(backend);
  });

  test('an endless loop in toJSON of the result is stopped at timeoutMs', async () => {
    await expectTimedOut('export default () => ({toJSON() { for (;;); }})');
  });

  test('an endless loop in a thenable returned by the tool is stopped at timeoutMs', async () => {
    await expectTimedOut('export default () => ({then() { for (;;); }})');
  });

  test('a loop that swallows termination attempts in try/finally is stopped at timeoutMs', async () => {
    await expectTimedOut('export default () => { for (;;) { try { for (;;); } catch {} finally { continue; } } }');
  });

  test('several hostile loops at once all end within their limits', async () => {
    const results = await Promise.all(Array.from({length: 6}, () => run(backend, 'export default () => { for (;;); }')));
    for (const result of results) {
      assert.equal(result.timedOut, true);
      assertBounded(result);
    }
    await assertStillServes(backend);
  });
});
