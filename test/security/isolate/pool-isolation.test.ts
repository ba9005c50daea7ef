/**
 * The warm pool and the code cache must keep the fresh-isolate guarantee: nothing a
 * call writes (globals, built-in prototypes, module state) is visible to any later call,
 * a burst larger than the pool gets cold isolates rather than reused ones, and a pooled
 * isolate always has the memory limit its call asked for.
 */
// invariant: pool:no-state-crosses-calls
// invariant: pool:burst-never-reuses
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, GENEROUS_TIMEOUT_MS, run, sleep, startBackend} from '../../integration/isolate/helpers.ts';

/** Reports traces of earlier calls, then leaves its own in every place it can write. */
const SNOOP_AND_POLLUTE = `
let moduleCounter = 0;
export default (args) => {
  moduleCounter++;
  const seen = {
    global: globalThis.leak ?? null,
    objectProto: ({}).leak ?? null,
    arrayPush: Array.prototype.push.name === 'push' ? null : Array.prototype.push.name,
    json: JSON.stringify({a: 1}) === '{"a":1}' ? null : 'JSON replaced',
    console: typeof console.log === 'function' && console.log.name === 'log' ? null : 'console replaced',
    symbol: Symbol.for('toolcell.leak').description === 'toolcell.leak' && globalThis[Symbol.for('toolcell.leak')] ? 'symbol' : null,
    moduleCounter: moduleCounter === 1 ? null : moduleCounter,
  };
  globalThis.leak = args.n;
  Object.prototype.leak = args.n;
  Array.prototype.push = function stolen() { return 0; };
  JSON.stringify = () => 'forged';
  console.log = function replaced() {};
  globalThis[Symbol.for('toolcell.leak')] = args.n;
  return seen;
};
`;

const CLEAN = {global: null, objectProto: null, arrayPush: null, json: null, console: null, symbol: null, moduleCounter: null};

describe('warm pool isolation', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({poolSize: 2, poolMemoryMb: [32]}));
  });
  after(() => backend.close());

  test('globals, built-in prototypes and module state written in call N are not visible in call N+1', async () => {
    const before = backend.stats();
    for (let n = 1; n <= 8; n++) {
      const result = await run(backend, SNOOP_AND_POLLUTE, {args: {n}});
      // JSON.stringify was replaced inside the tool, yet the result is serialised by the
      // prelude's own copy captured before the tool ran.
      assert.equal(result.failed, false, JSON.stringify(result));
      assert.deepEqual(JSON.parse(result.stdout), CLEAN, `call ${n} saw a trace of an earlier call`);
      await sleep(5); // let the pool refill, so that calls really get warm isolates
    }
    const after = backend.stats();
    assert.ok(after.pooled - before.pooled >= 6, `pooled calls: ${after.pooled - before.pooled}`);
    assert.ok(after.codeCacheHits - before.codeCacheHits >= 6, `code cache hits: ${after.codeCacheHits - before.codeCacheHits}`);
  });

  test('a burst of more calls than the pool size gets cold isolates, never a reused one', async () => {
    const before = backend.stats();
    const results = await Promise.all(Array.from({length: 24}, (_, n) => run(backend, SNOOP_AND_POLLUTE, {args: {n}, limits: {timeoutMs: 5000}})));
    for (const result of results) {
      assert.equal(result.failed, false, JSON.stringify(result));
      assert.deepEqual(JSON.parse(result.stdout), CLEAN);
    }
    const after = backend.stats();
    assert.equal(after.completed - before.completed, 24);
    assert.ok(after.pooled - before.pooled <= 4, `only the idle pool can serve warm isolates, got ${after.pooled - before.pooled}`);
    await assertStillServes(backend);
  });

  test('a timed-out or cancelled call does not return its isolate to the pool', async () => {
    await run(backend, 'export default () => { globalThis.leak = "timed out"; Object.prototype.leak = 1; for (;;); }', {limits: {timeoutMs: 300}});
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await run(backend, 'export default () => { globalThis.leak = "cancelled"; for (;;); }', {signal: controller.signal});
    for (let n = 0; n < 4; n++) {
      const result = await run(backend, SNOOP_AND_POLLUTE, {args: {n}});
      assert.equal(result.failed, false, JSON.stringify(result));
      assert.deepEqual(JSON.parse(result.stdout), CLEAN);
    }
  });

  test('a SharedArrayBuffer created in one call is not reachable from the next', async () => {
    await run(backend, 'export default () => { globalThis.shared = new SharedArrayBuffer(8); new Int32Array(globalThis.shared)[0] = 42; }');
    const result = await run(backend, 'export default () => typeof globalThis.shared');
    assert.equal(result.stdout, '"undefined"');
  });

  test('a pooled isolate, pre-warmed by the prelude, starts with an empty console and the call\'s own output cap', async () => {
    const before = backend.stats();
    for (let n = 1; n <= 4; n++) {
      await sleep(10); // let the pool refill
      const result = await run(backend, 'export default (args) => { console.log("line", args.n); return "y".repeat(args.n * 50); }', {
        args: {n}, limits: {outputBytes: 120},
      });
      assert.equal(result.stderr, `line ${n}\n`, 'console text of the warm-up or of another call leaked');
      // n * 50 + 2 quote characters: fits for n = 1 and 2, cut at 120 bytes for n >= 3.
      assert.equal(result.truncated, n >= 3, JSON.stringify(result));
      assert.ok(Buffer.byteLength(result.stdout) <= 120);
    }
    assert.ok(backend.stats().pooled - before.pooled >= 3, `pooled: ${backend.stats().pooled - before.pooled}`);
  });

  test('a pooled isolate has the memory limit of the call that takes it', async () => {
    const {backend: mixed} = await startBackend({poolSize: 2, poolMemoryMb: [16, 256]});
    try {
      await sleep(100); // both keys warm
      const allocate48Mb = 'export default () => { const keep = []; for (let i = 0; i < 48 * 1024; i++) keep.push(Array.from({length: 128}, (_, j) => i + j)); return keep.length; }';
      // The attack is on memory: a generous deadline, so that a busy host (V8's last-resort GCs
      // slowed down) cannot end the call as TIMEOUT before the 16 MB limit stops it.
      const small = await run(mixed, allocate48Mb, {limits: {memoryMb: 16, timeoutMs: GENEROUS_TIMEOUT_MS}});
      assert.equal(small.outOfMemory, true, JSON.stringify(small));
      const large = await run(mixed, allocate48Mb, {limits: {memoryMb: 256, timeoutMs: GENEROUS_TIMEOUT_MS}});
      assert.equal(large.failed, false, JSON.stringify(large));
      assert.equal(mixed.stats().pooled, 2);
    } finally {
      await mixed.close();
    }
  });
});

describe('pool off', () => {
  test('with poolSize 0 every call gets a cold isolate and results are unchanged', async () => {
    const {backend} = await startBackend({poolSize: 0, codeCacheBytes: 0});
    try {
      for (let n = 0; n < 3; n++) {
        const result = await run(backend, SNOOP_AND_POLLUTE, {args: {n}});
        assert.equal(result.failed, false, JSON.stringify(result));
        assert.deepEqual(JSON.parse(result.stdout), CLEAN);
      }
      assert.equal(backend.stats().pooled, 0);
      assert.equal(backend.stats().codeCacheHits, 0);
    } finally {
      await backend.close();
    }
  });
});
