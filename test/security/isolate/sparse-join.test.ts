/**
 * Built-ins V8 cannot interrupt (red-team finding 2 on the isolate hardening): `join` on
 * a huge sparse array walks 2^32 - 1 indexes in C++ without checking for termination
 * (about 195 s here), which wedged an isolate thread and restarted the worker; so do
 * `indexOf`, `sort`, `slice`, `forEach` and others, and `toReversed` aborts V8. The
 * prelude's length-checked Array methods refuse such receivers (arrays, array-likes,
 * inherited or TOCTOU lengths) before the built-in starts. Each call must fail within its
 * deadline plus slack, and the worker must not be replaced.
 */
// invariant: isolate:builtins:uninterruptible-refused
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, run, sleep, startBackend} from '../../integration/isolate/helpers.ts';

const SPARSE = 'const a = []; a.length = 2 ** 32 - 1; a[2 ** 32 - 2] = 1;';
const CASES: Record<string, string> = {
  join: `export default () => { ${SPARSE} return a.join('x').length; }`,
  toString: `export default () => { ${SPARSE} return String(a).length; }`,
  templateLiteral: `export default () => { ${SPARSE} return \`\${a}\`.length; }`,
  toLocaleString: `export default () => { ${SPARSE} return a.toLocaleString().length; }`,
  joinViaCall: `export default () => { ${SPARSE} return Array.prototype.join.call(a, 'x').length; }`,
  arrayLike: 'export default () => Array.prototype.join.call({length: 2 ** 32 - 1, 4294967294: 1}, "x").length',
  arrayLikeGetter: 'export default () => { let n = 0; return Array.prototype.join.call({get length() { return n++ === 0 ? 1 : 2 ** 32 - 1; }}).length; }',
  topLevel: `${SPARSE} a.join('x'); export default () => 1;`,
  indexOf: `export default () => { ${SPARSE} return a.indexOf(2); }`,
  lastIndexOf: `export default () => { ${SPARSE} return a.lastIndexOf(2); }`,
  reverse: `export default () => { ${SPARSE} return a.reverse().length; }`,
  sort: `export default () => { ${SPARSE} return a.sort().length; }`,
  toSorted: `export default () => { ${SPARSE} return a.toSorted().length; }`,
  toReversed: `export default () => { ${SPARSE} return a.toReversed().length; }`,
  slice: `export default () => { ${SPARSE} return a.slice().length; }`,
  flat: `export default () => { ${SPARSE} return a.flat().length; }`,
  splice: `export default () => { ${SPARSE} return a.splice(1, 1).length; }`,
  forEach: `export default () => { ${SPARSE} a.forEach(() => {}); return 1; }`,
  every: `export default () => { ${SPARSE} return a.every(() => true); }`,
  arrayLikeIndexOf: 'export default () => Array.prototype.indexOf.call({length: 2 ** 32 - 1, 4294967294: 1}, 2)',
  arrayLikeValueOf: 'export default () => { let n = 0; return Array.prototype.indexOf.call({length: {valueOf() { return n++ === 0 ? 1 : 2 ** 32 - 1; }}}, 2); }',
  inheritedLength: 'export default () => Array.prototype.forEach.call(Object.create({length: 2 ** 32 - 1}), () => {})',
};

describe('uninterruptible built-ins on huge sparse arrays', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  for (const [name, source] of Object.entries(CASES)) {
    test(`${name}: the call ends by its deadline and the worker is kept`, async () => {
      const [pid] = backend.workerPids();
      const result = await run(backend, source);
      assert.equal(result.failed, true, JSON.stringify(result));
      assertBounded(result);
      await sleep(1200); // past the worker's 1 s wedge detection
      assert.deepEqual(backend.workerPids(), [pid], 'the worker was not replaced');
      assert.equal(backend.stats().restarts, 0);
      await assertStillServes(backend);
    });
  }

  test('ordinary joins still work', async () => {
    const result = await run(backend, `export default () => [[1, 2].join("-"), String([3, [4, 5]]), Array.prototype.join.call({length: 2, 0: "a", 1: "b"}),
      [1.5].toLocaleString("en"), [3, 1, 2].sort(), [1, 2, 3].map((x) => x * 2), Array.prototype.slice.call("abc"), Array.prototype.join.call(new Uint8Array([1, 2])),
      [1, [2, [3]]].flat(Infinity), [1, 2, 3].indexOf(3), (function () { return Array.prototype.slice.call(arguments); })(7, 8), [1, 2].with(0, 9), Array.prototype.forEach.name, Array.prototype.forEach.length]`);
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), ['1-2', '3,4,5', 'a,b', '1.5', [1, 2, 3], [2, 4, 6], ['a', 'b', 'c'], '1,2', [1, 2, 3], 2, [7, 8], [9, 2], 'forEach', 1]);
  });
});
