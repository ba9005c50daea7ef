/**
 * A module built to make the rewrite's choice of a name for the wrapper expensive (red team
 * F3): the old choice tried `$d0, $d1, ...` with one search of the whole source per
 * candidate, so a 1 MB source naming the first 2,000 candidates took ~28 s of the rewrite
 * (on the worker's thread, and in-process for `toolcell build`). The wrapper's names are now
 * one reserved prefix refused in one linear pass: the rewrite costs about one parse, and
 * the hostile call and 10 innocent calls beside it all succeed in the same worker.
 */
// invariant: isolate:module-wrap:v8-judges-wrapper
import assert from 'node:assert/strict';
import {performance} from 'node:perf_hooks';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {wrapToolModule} from '../../../src/backends/isolate/module-wrap.ts';
import {assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

/** The red team's source: ~1 MB of comment filler, then every name the old search would try first. */
function pathological(salt: string): string {
  const names: string[] = [];
  for (let i = 0; i < 2000; i++) names.push(`$d${i.toString(36)}`);
  return `/*${salt} ${'$e'.repeat(500_000)} ${names.join(' ')}*/\nexport default () => 1;\n`;
}

/**
 * The most the rewrite of the 1 MB source may take, in ms: about one acorn parse (0.2-0.5 s
 * per MB here, a few times that on a busy host); the quadratic search took ~28 s.
 */
const REWRITE_MAX_MS = 8000;

describe('the rewrite\'s cost is linear in the source (no search for a free name)', () => {
  let backend: IsolateBackend;
  let pids: number[];
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
    pids = backend.workerPids();
  });
  after(() => backend.close());

  test('rewriting the pathological source takes about one parse', () => {
    const source = pathological('direct');
    const started = performance.now();
    const wrapped = wrapToolModule(source, 'evil.js');
    const elapsed = performance.now() - started;
    assert.ok('source' in wrapped, JSON.stringify(wrapped).slice(0, 300));
    assert.ok(elapsed < REWRITE_MAX_MS, `rewrite took ${Math.round(elapsed)} ms`);
  });

  test('the pathological call and 10 innocent calls beside it all succeed, in the same worker', async () => {
    const innocent = Array.from({length: 10}, (_, n) => run(backend, 'export default (a) => ({n: a.n})', {args: {n}, limits: {timeoutMs: 20_000, memoryMb: 32}}));
    const hostile = await run(backend, pathological('backend'), {limits: {timeoutMs: 20_000, memoryMb: 64}});
    const results = await Promise.all(innocent);
    results.forEach((r, n) => {
      assert.equal(r.failed, false, JSON.stringify(r));
      assert.deepEqual(JSON.parse(r.stdout), {n});
    });
    assert.equal(hostile.failed, false, JSON.stringify(hostile).slice(0, 500));
    assert.equal(JSON.parse(hostile.stdout), 1);
    assert.deepEqual(backend.workerPids(), pids);
    await assertStillServes(backend);
  });
});
