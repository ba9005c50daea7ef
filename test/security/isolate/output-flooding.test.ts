/**
 * Attacks on output: console floods and huge results must stop at `outputBytes`, be
 * reported `truncated` (and `failed`), and never carry more than the cap out of the
 * isolate.
 */
// invariant: isolate:output:capped
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, bytes, GENEROUS_TIMEOUT_MS, LIMITS, run, startBackend} from '../../integration/isolate/helpers.ts';

describe('output flooding', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  test('a console flood is cut at outputBytes, reported truncated and stops the tool', async () => {
    const result = await run(backend, 'export default () => { for (let i = 0; ; i++) console.log("line", i); }');
    assert.equal(result.truncated, true, JSON.stringify({...result, stderr: result.stderr.length}));
    assert.equal(result.failed, true);
    assert.equal(result.timedOut, false, 'the overflow stopped the tool before its timeout');
    assert.ok(bytes(result.stderr) <= LIMITS.outputBytes);
    assert.ok(bytes(result.stderr) > LIMITS.outputBytes - 100, 'output up to the cap is kept');
    assert.equal(result.error?.name, 'RangeError');
    assertBounded(result);
    await assertStillServes(backend);
  });

  test('a console flood that swallows the overflow error is still stopped at timeoutMs', async () => {
    // 3 s of its own time, so that the flood surely reaches the cap before its deadline (beside
    // two CPU burners 800 ms once ended it below the cap, which shows nothing about the cap).
    const result = await run(backend, 'export default () => { for (;;) { try { console.error("x".repeat(1000)); } catch {} } }', {limits: {timeoutMs: 3000}});
    assert.equal(result.truncated, true, JSON.stringify({...result, stderr: bytes(result.stderr)}));
    assert.equal(result.timedOut, true);
    assert.equal(result.failed, true);
    assert.ok(bytes(result.stderr) <= LIMITS.outputBytes);
    assertBounded(result, 3000);
    await assertStillServes(backend);
  });

  test('one giant console line is cut at outputBytes', async () => {
    // The attack is on the output cap, not on time: a generous deadline (as below), so that a
    // busy host cannot end the call as TIMEOUT before its 8 MiB line reaches the console (seen
    // beside two CPU burners with the 800 ms of LIMITS: truncated false, timed out).
    const result = await run(backend, 'export default () => { console.log("y".repeat(8 * 2 ** 20)); return "done"; }', {limits: {memoryMb: 64, timeoutMs: GENEROUS_TIMEOUT_MS}});
    assert.equal(result.truncated, true, JSON.stringify({...result, stdout: result.stdout.length, stderr: result.stderr.length}));
    assert.ok(bytes(result.stderr) <= LIMITS.outputBytes);
    assertBounded(result, GENEROUS_TIMEOUT_MS);
    await assertStillServes(backend);
  });

  test('a console flood of multi-byte characters is cut on a character boundary within outputBytes', async () => {
    const result = await run(backend, 'export default () => { for (;;) console.log("😀é"); }');
    assert.equal(result.truncated, true);
    assert.ok(bytes(result.stderr) <= LIMITS.outputBytes);
    assert.doesNotMatch(result.stderr, /\uFFFD/);
    await assertStillServes(backend);
  });

  test('a result whose JSON exceeds outputBytes is truncated', async () => {
    // The attack is on the output cap, not on time: a generous deadline, so that a busy host
    // cannot end the call as TIMEOUT before its result reaches the cap.
    const result = await run(backend, 'export default () => Array.from({length: 100000}, (_, i) => ({i}))', {limits: {memoryMb: 64, timeoutMs: GENEROUS_TIMEOUT_MS}});
    assert.equal(result.truncated, true);
    assert.equal(result.failed, true);
    assert.ok(bytes(result.stdout) <= LIMITS.outputBytes);
    await assertStillServes(backend);
  });

  test('replacing console, JSON.stringify or String.prototype.slice does not lift the cap', async () => {
    const source = `export default () => {
      const big = "z".repeat(4 * 2 ** 20);
      JSON.stringify = () => big;
      String.prototype.slice = function () { return big; };
      String.prototype.charCodeAt = () => 0;
      Reflect.apply = () => big;
      Object.defineProperty(Array.prototype, 0, {set() { throw new Error("setter ran"); }, configurable: true});
      console.log(big);
      return big;
    }`;
    const result = await run(backend, source, {limits: {memoryMb: 64, timeoutMs: GENEROUS_TIMEOUT_MS}});
    assert.equal(result.truncated, true);
    assert.ok(bytes(result.stdout) <= LIMITS.outputBytes);
    assert.ok(bytes(result.stderr) <= LIMITS.outputBytes);
    await assertStillServes(backend);
  });

  test('outputBytes 0 allows no output at all', async () => {
    const result = await run(backend, 'export default () => { console.log("a"); return 1; }', {limits: {outputBytes: 0}});
    assert.equal(result.truncated, true);
    assert.equal(result.stdout, '');
    assert.equal(result.stderr, '');
  });
});
