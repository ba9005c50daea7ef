/**
 * The isolate console's formatter (prelude-console.ts), run in Node: the same function
 * text is sent into every isolate. Formatting like a reduced `util.format`, the byte cap,
 * and that a tool's getters are shown, never called.
 */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {createConsole} from '../../../../src/backends/isolate/prelude-console.ts';
import {capturePrimordials} from '../../../../src/backends/isolate/prelude-primordials.ts';

const lineOf = (...args: unknown[]): string => {
  const c = createConsole(capturePrimordials());
  c.console.log!(...args);
  return c.text();
};

test('format specifiers, primitives and the rest of the arguments', () => {
  assert.equal(lineOf('a %s b %d c %i %f %j %%', 'x', 42, '7.9', '1.5', {k: 1}), 'a x b 42 c 7 1.5 {"k":1} %\n');
  assert.equal(lineOf('plain', 1, -0, 2n, null, undefined, true, Symbol('s')), 'plain 1 -0 2n null undefined true Symbol(s)\n');
  assert.equal(lineOf('%c styled', 'color: red'), ' styled\n');
});

test('objects, arrays, maps and sets to depth 2 and 100 entries, circular references named', () => {
  assert.equal(lineOf({a: 1, 'b-c': 'x', nested: {deep: {deeper: {deepest: 1}}}}), "{ a: 1, \"b-c\": \"x\", nested: { deep: { deeper: [Object] } } }\n");
  assert.equal(lineOf([1, 'two', [3]]), '[ 1, "two", [ 3 ] ]\n');
  assert.equal(lineOf(new Map([['k', 1]]), new Set([2])), 'Map(1) { "k" => 1 } Set(1) { 2 }\n');
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  assert.equal(lineOf(circular), '{ self: [Circular] }\n');
  assert.match(lineOf(Array.from({length: 150}, (_, i) => i)), /, \.\.\. 50 more items \]\n$/);
});

test('getters and setters are shown, never called', () => {
  let called = 0;
  const value = {get g() { called++; return 1; }, set s(_v: unknown) { called++; }};
  assert.equal(lineOf(value), '{ g: [Getter], s: [Setter] }\n');
  const error = new Error('shown');
  Object.defineProperty(error, 'stack', {get() { called++; return 'forged'; }});
  Object.defineProperty(error, 'message', {get() { called++; return 'forged'; }});
  assert.equal(lineOf(error), 'Error: undefined\n', 'an accessor message is not read');
  assert.equal(called, 0);
});

test('an error prints its own stack', () => {
  const line = lineOf(new TypeError('bad'));
  assert.match(line, /^TypeError: bad\n {4}at /);
});

test('the text stops at the byte cap on a UTF-8 boundary; that call and later ones throw', () => {
  const c = createConsole(capturePrimordials());
  c.setLimit(10);
  c.console.log!('12345');
  assert.throws(() => c.console.log!('é€😀é€😀'), RangeError);
  assert.equal(c.isTruncated(), true);
  assert.ok(c.utf8Length(c.text()) <= 10);
  assert.equal(c.text(), '12345\né', '6 + 2 bytes; the euro sign (3 more) would pass the cap');
  assert.throws(() => c.console.log!('x'), RangeError);
});

test('count, time, group and assert', () => {
  const c = createConsole(capturePrimordials());
  c.console.count!();
  c.console.count!();
  c.console.group!('g');
  c.console.log!('inside');
  c.console.groupEnd!();
  c.console.assert!(false, 'failed %s', 'here');
  c.console.assert!(true, 'not shown');
  c.console.timeEnd!('none');
  assert.equal(c.text(), 'default: 1\ndefault: 2\ng\n  inside\nAssertion failed: failed here\nNo such label: none\n');
});

test('helpers: utf8Length counts a lone surrogate as 3 bytes; cutToBytes never splits a pair', () => {
  const c = createConsole(capturePrimordials());
  assert.equal(c.utf8Length('aé€😀'), 1 + 2 + 3 + 4);
  assert.equal(c.utf8Length('\ud800'), 3);
  assert.equal(c.cutToBytes('a😀', 4), 'a');
  assert.equal(c.dataProperty(Object.create({inherited: 'yes'}), 'inherited'), 'yes');
  assert.equal(c.dataProperty({get g() { throw new Error('called'); }}, 'g'), undefined);
});
