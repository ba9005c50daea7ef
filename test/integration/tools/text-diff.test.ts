import assert from 'node:assert/strict';
import {before, describe, test} from 'node:test';
import {ensureBuilt, useToolBackend, validator} from './helpers.ts';

/** text__diff (jsdiff) in the isolate backend under its profile's limits. */

before(ensureBuilt);
const {valueOf, thrownBy} = useToolBackend();

const diff = (args: Record<string, unknown>) => valueOf('text', 'diff', args) as Promise<string>;

const BEFORE = `# Settings
timeout = 10
memory = 256
network = none
user = tool
`;
const AFTER = `# Settings
timeout = 5
memory = 256
network = none
user = tool
pids = 64
`;

describe('text__diff', () => {
  test('returns a unified diff with headers, hunk ranges and context', async () => {
    assert.equal(await diff({a: BEFORE, b: AFTER, aName: 'old/settings.conf', bName: 'new/settings.conf'}), [
      '===================================================================',
      '--- old/settings.conf',
      '+++ new/settings.conf',
      '@@ -1,5 +1,6 @@',
      ' # Settings',
      '-timeout = 10',
      '+timeout = 5',
      ' memory = 256',
      ' network = none',
      ' user = tool',
      '+pids = 64',
      '',
    ].join('\n'));
  });

  test('context sets the unchanged lines around each change, splitting distant changes into hunks', async () => {
    const a = Array.from({length: 20}, (_, i) => `line ${i + 1}`).join('\n') + '\n';
    const b = a.replace('line 2\n', 'line two\n').replace('line 18\n', 'line eighteen\n');
    const patch = await diff({a, b, context: 1});
    assert.deepEqual(patch.match(/^@@.*@@$/gm), ['@@ -1,3 +1,3 @@', '@@ -17,3 +17,3 @@']);
    const zero = await diff({a, b, context: 0});
    assert.deepEqual(zero.match(/^@@.*@@$/gm), ['@@ -2,1 +2,1 @@', '@@ -18,1 +18,1 @@']);
    assert.doesNotMatch(zero, /^ line/m, 'no context lines');
  });

  test('marks a missing final newline, and identical texts give an empty string', async () => {
    assert.match(await diff({a: 'x\n', b: 'x'}), /\n@@ -1,1 \+1,1 @@\n-x\n\+x\n\\ No newline at end of file\n$/);
    assert.equal(await diff({a: BEFORE, b: BEFORE}), '');
    assert.equal(await diff({a: '', b: ''}), '');
  });

  test('ignoreWhitespace treats lines that differ only in leading/trailing whitespace as equal', async () => {
    assert.equal(await diff({a: '  x\ny  \n', b: 'x\ny\n', ignoreWhitespace: true}), '');
    assert.match(await diff({a: '  x\ny  \n', b: 'x\ny\n'}), /^- {2}x\n-y {2}\n\+x\n\+y$/m);
    assert.match(await diff({a: 'a  b\n', b: 'a b\n', ignoreWhitespace: true}), /^-a {2}b\n\+a b$/m, 'inner whitespace still counts');
  });

  test('texts that differ in more lines than the edit bound are refused with a clear error', async () => {
    const a = Array.from({length: 25_000}, (_, i) => `a${i}`).join('\n');
    const b = Array.from({length: 25_000}, (_, i) => `b${i}`).join('\n');
    assert.match(await thrownBy('text', 'diff', {a, b}), /^Error: The texts are too different to diff \(more than 4000 changed lines/);
    assert.match(await diff({a: 'p\n', b: 'q\n'}), /^-p\n\+q$/m, 'a fresh call still answers');
  });

  test('inputSchema accepts two texts with options and rejects anything else, including names with line breaks', () => {
    const valid = validator('text', 'diff');
    assert.ok(valid({a: '', b: ''}));
    assert.ok(valid({a: 'x', b: 'y', aName: 'a.txt', bName: 'b.txt', context: 0, ignoreWhitespace: true}));
    for (const bad of [{a: 'x'}, {b: 'y'}, {a: 1, b: 'y'}, {a: 'x', b: 'y', aName: 'evil\n+++ forged'}, {a: 'x', b: 'y', bName: 'x\ry'},
      {a: 'x', b: 'y', aName: ''}, {a: 'x', b: 'y', context: -1}, {a: 'x', b: 'y', context: 1.5}, {a: 'x', b: 'y', context: 1001},
      {a: 'x', b: 'y', color: true}, {a: 'x'.repeat(500_001), b: ''}]) {
      assert.equal(valid(bad), false, `rejects ${JSON.stringify(bad).slice(0, 60)}`);
    }
  });
});
