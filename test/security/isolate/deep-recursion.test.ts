/**
 * Stack exhaustion: deep recursion must fail the call with a RangeError inside the
 * isolate, never crash the worker.
 */
// invariant: isolate:stack:contained
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

describe('deep recursion', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  test('unbounded recursion fails with RangeError, not a crash', async () => {
    const pids = backend.workerPids();
    const result = await run(backend, 'export default () => { const f = (n) => f(n + 1) + 1; return f(0); }');
    assert.equal(result.failed, true);
    assert.equal(result.timedOut, false);
    assert.deepEqual(result.error, {name: 'RangeError', message: 'Maximum call stack size exceeded'});
    assertBounded(result);
    assert.deepEqual(backend.workerPids(), pids, 'the worker survived');
    await assertStillServes(backend);
  });

  test('unbounded recursion at module top level fails with RangeError', async () => {
    const result = await run(backend, 'function f() { return f() + 1; } f(); export default () => 1;');
    assert.equal(result.failed, true);
    assert.equal(result.error?.name, 'RangeError');
    await assertStillServes(backend);
  });

  test('recursion that catches each RangeError and recurses again is stopped at timeoutMs', async () => {
    const result = await run(backend, 'export default () => { const f = () => { try { f(); } catch { f(); } }; f(); }');
    assert.equal(result.failed, true);
    assert.ok(result.timedOut || result.error?.name === 'RangeError', JSON.stringify(result));
    assertBounded(result);
    await assertStillServes(backend);
  });

  test('a deeply nested result fails JSON serialisation inside the isolate', async () => {
    const result = await run(backend, 'export default () => { let v = []; for (let i = 0; i < 1e5; i++) v = [v]; return v; }', {limits: {memoryMb: 64, timeoutMs: 10_000}});
    assert.equal(result.failed, true);
    assert.ok(result.error?.name === 'RangeError' || result.error?.name === 'TypeError', JSON.stringify(result.error));
    await assertStillServes(backend);
  });

  test('a deeply nested value logged to the console is cut at depth, not recursed into', async () => {
    const result = await run(backend, 'export default () => { let v = {}; for (let i = 0; i < 1e5; i++) v = {v}; console.log(v); return 1; }');
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.equal(result.stderr, '{ v: { v: { v: [Object] } } }\n');
  });

  test('recursion through getters while the result is serialised fails with RangeError', async () => {
    const result = await run(backend, 'export default () => { const o = {}; Object.defineProperty(o, "x", {enumerable: true, get() { return JSON.stringify(o); }}); return o; }');
    assert.equal(result.failed, true);
    assert.equal(result.error?.name, 'RangeError');
    await assertStillServes(backend);
  });
});
