// Bounded views of untrusted server JSON: any nesting is measured and serialized without overflowing the stack.
// invariant: server:notifications:bounded
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {boundedJsonText, jsonDepth, MAX_LOG_DATA_CHARS, quoteServerText} from '../../../../src/backends/server/bounded-json.ts';

const deep = (n: number) => JSON.parse(`${'['.repeat(n)}${']'.repeat(n)}`) as unknown;

test('jsonDepth counts nesting without recursion and stops past its limit', () => {
  assert.equal(jsonDepth('x', 5), 0);
  assert.equal(jsonDepth({a: [1, {b: []}]}, 10), 4);
  assert.equal(jsonDepth(deep(200_000), 64), 65);
});

test('boundedJsonText: 200,000 nested arrays give bounded one-line text, strings stay as they are, size is cut', () => {
  assert.throws(() => JSON.stringify(deep(200_000)), RangeError, 'the attack input overflows a plain JSON.stringify');
  const t = boundedJsonText(deep(200_000));
  assert.ok(t.length < 100, t);
  assert.match(t, /^\[{16}"…"\]{16}$/);
  assert.equal(boundedJsonText('plain'), 'plain');
  assert.equal(boundedJsonText({a: 1, b: [true, null]}), '{"a":1,"b":[true,null]}');
  const wide = boundedJsonText(Array.from({length: 100_000}, (_, i) => ({i})));
  assert.ok(wide.length <= MAX_LOG_DATA_CHARS && wide.endsWith('…'));
  assert.equal(boundedJsonText(undefined), 'null');
});

test('quoteServerText: one labelled JSON-string line, line separators escaped, bounded', () => {
  assert.equal(quoteServerText('a\nb\u2028c"'), 'the server said: "a\\nb\\u2028c\\""');
  const long = quoteServerText('x'.repeat(1000));
  assert.ok(long.length < 230 && long.endsWith('…"'));
  assert.doesNotMatch(quoteServerText('\r\n\u0085\u2029'), /[\r\n\u0085\u2028\u2029]/);
});
