/**
 * The source cache: each distinct module source crosses the IPC channel once per
 * worker, keyed by its sha256. It must never make a call run another call's source
 * (same filename, different text), must recover when the worker evicted a source the
 * supervisor thought it had, and must carry no state from one call to the next.
 */
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {sha256Hex, SentSources, SourceCache, SourceDigests} from '../../../src/backends/isolate/source-cache.ts';
import {parseSupervisorMessage} from '../../../src/backends/isolate/worker-protocol.ts';
import {assertStillServes, GENEROUS_TIMEOUT_MS, run, startBackend} from './helpers.ts';

/** These calls are not hostile (48 at once on 2 CPUs in one test): see GENEROUS_TIMEOUT_MS. */
const GENEROUS = {timeoutMs: GENEROUS_TIMEOUT_MS};

/** A tool whose answer names its own variant, padded to `padding` characters of comment. */
const variant = (name: string, padding = 0): string =>
  `/*${'x'.repeat(padding)}*/\nlet calls = 0;\nexport default (args) => { calls++; return {variant: ${JSON.stringify(name)}, n: args.n, calls}; };\n`;

describe('SourceCache (worker side)', () => {
  test('keeps a source under its own sha256 and refuses a text that does not match the key', () => {
    const cache = new SourceCache(1024);
    const a = variant('a');
    assert.equal(cache.put(sha256Hex(a), a), true);
    assert.equal(cache.get(sha256Hex(a)), a);
    const b = variant('b');
    assert.equal(cache.put(sha256Hex(a), b), false, 'a text stored under another text\'s digest');
    assert.equal(cache.get(sha256Hex(a)), a, 'a refused put must not replace the entry');
    assert.equal(cache.get(sha256Hex(b)), undefined);
  });

  test('evicts the least recently used source beyond its byte budget and keeps nothing larger than it', () => {
    const a = variant('a', 100);
    const b = variant('b', 100);
    const c = variant('c', 100);
    const cache = new SourceCache(Buffer.byteLength(a) * 2 + 10);
    cache.put(sha256Hex(a), a);
    cache.put(sha256Hex(b), b);
    assert.equal(cache.get(sha256Hex(a)), a); // a is now the most recently used
    cache.put(sha256Hex(c), c);
    assert.equal(cache.get(sha256Hex(b)), undefined, 'b was the least recently used');
    assert.equal(cache.get(sha256Hex(a)), a);
    assert.equal(cache.get(sha256Hex(c)), c);
    const huge = variant('huge', 10_000);
    assert.equal(cache.put(sha256Hex(huge), huge), true);
    assert.equal(cache.get(sha256Hex(huge)), undefined);
    assert.ok(cache.size.bytes <= Buffer.byteLength(a) * 2 + 10);
  });

  test('SourceDigests gives each text its own digest; SentSources forgets beyond its bound', () => {
    const digests = new SourceDigests(2, 1_000_000);
    const texts = [variant('a'), variant('b'), variant('c'), variant('a')];
    for (const text of texts) {
      assert.deepEqual(digests.of(text), {hash: sha256Hex(text), bytes: Buffer.byteLength(text)});
    }
    assert.notEqual(digests.of(texts[0]!).hash, digests.of(texts[1]!).hash);
    const sent = new SentSources(2);
    sent.add('1');
    sent.add('2');
    sent.add('3');
    assert.equal(sent.has('1'), false);
    assert.equal(sent.has('3'), true);
  });

  test('the worker refuses a run request without a well-formed sha256', () => {
    const base = {type: 'run', id: '1', jobId: 'j', filename: 'f.js', argsJson: null, limits: {timeoutMs: 100, backstopMs: 100, cpuTimeMs: 100, memoryMb: 32, outputBytes: 10}};
    assert.equal(parseSupervisorMessage({...base, source: 'x'}), undefined);
    assert.equal(parseSupervisorMessage({...base, sourceHash: 'A'.repeat(64)}), undefined);
    assert.equal(parseSupervisorMessage({...base, sourceHash: 'a'.repeat(64), source: 42}), undefined);
    assert.equal(parseSupervisorMessage({...base, sourceHash: 'a'.repeat(64)})?.type, 'run');
  });
});

describe('source cache through the backend', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1, poolSize: 2, poolMemoryMb: [32]}));
  });
  after(() => backend.close());

  test('different sources under the same filename each run their own text, and module state never carries over', async () => {
    const sources = [variant('a'), variant('b'), variant('c')];
    for (let n = 0; n < 30; n++) {
      const name = ['a', 'b', 'c'][n % 3]!;
      const result = await run(backend, sources[n % 3]!, {args: {n}, limits: GENEROUS});
      assert.equal(result.failed, false, JSON.stringify(result));
      // `calls` is module state: 1 means a fresh module instance in a fresh isolate.
      assert.deepEqual(JSON.parse(result.stdout), {variant: name, n, calls: 1}, `call ${n}`);
    }
    assert.equal(backend.stats().sourceResends, 0);
  });

  test('a source that differs by one character is not served from the entry of the other', async () => {
    const a = 'export default () => "A";';
    const b = 'export default () => "B";';
    for (let n = 0; n < 6; n++) {
      const result = await run(backend, n % 2 === 0 ? a : b, {limits: GENEROUS});
      assert.equal(result.failed, false, JSON.stringify(result));
      assert.equal(result.stdout, n % 2 === 0 ? '"A"' : '"B"');
    }
  });
});

describe('source cache misses', () => {
  test('a worker that evicted a source asks for it again and the call still runs the right text', async () => {
    const a = variant('a', 200);
    const b = variant('b', 200);
    // Room for one of the two: every alternation evicts the other in the worker, while
    // the supervisor believes the worker still has it.
    const {backend} = await startBackend({workers: 1, poolSize: 0, sourceCacheBytes: Buffer.byteLength(a) + 50});
    try {
      for (let n = 0; n < 8; n++) {
        const result = await run(backend, n % 2 === 0 ? a : b, {args: {n}, limits: GENEROUS});
        assert.equal(result.failed, false, JSON.stringify(result));
        assert.deepEqual(JSON.parse(result.stdout), {variant: n % 2 === 0 ? 'a' : 'b', n, calls: 1});
      }
      assert.ok(backend.stats().sourceResends >= 6, `resends: ${backend.stats().sourceResends}`);
      await assertStillServes(backend);
    } finally {
      await backend.close();
    }
  });

  test('with the source cache off, or a source larger than it, every request carries its source', async () => {
    const big = variant('big', 5000);
    for (const sourceCacheBytes of [0, 1000]) {
      const {backend} = await startBackend({workers: 1, poolSize: 0, sourceCacheBytes});
      try {
        for (let n = 0; n < 4; n++) {
          const result = await run(backend, big, {args: {n}, limits: GENEROUS});
          assert.equal(result.failed, false, JSON.stringify(result));
          assert.deepEqual(JSON.parse(result.stdout), {variant: 'big', n, calls: 1});
        }
        assert.equal(backend.stats().sourceResends, 0);
      } finally {
        await backend.close();
      }
    }
  });

  test('parallel calls of many sources through two workers each get their own result', async () => {
    const {backend} = await startBackend({workers: 2, poolSize: 2, poolMemoryMb: [32], sourceCacheBytes: 2000});
    try {
      const sources = Array.from({length: 12}, (_, i) => variant(`v${i}`, 100));
      const results = await Promise.all(Array.from({length: 48}, (_, n) => run(backend, sources[n % 12]!, {args: {n}, limits: GENEROUS})));
      results.forEach((result, n) => {
        // A failed call has no JSON to parse ("Unexpected end of JSON input" under load).
        assert.equal(result.failed, false, `call ${n}: ${JSON.stringify(result)}`);
        assert.deepEqual(JSON.parse(result.stdout), {variant: `v${n % 12}`, n, calls: 1}, `call ${n}`);
      });
    } finally {
      await backend.close();
    }
  });
});
