import assert from 'node:assert/strict';
import {before, describe, test} from 'node:test';
import {ensureBuilt, useToolBackend, validator} from './helpers.ts';

/** text__word_count in the isolate backend under isolate-strict's limits (32 MB, 2 s). */

before(ensureBuilt);
const {valueOf} = useToolBackend();

const count = (text: string) => valueOf('text', 'word_count', {text});

describe('text__word_count', () => {
  test('counts words, lines, characters and UTF-8 bytes', async () => {
    assert.deepEqual(await count('The quick brown fox\njumps over\n\nthe lazy dog.\n'),
      {words: 9, lines: 4, characters: 46, bytes: 46});
    assert.deepEqual(await count('hello world'), {words: 2, lines: 1, characters: 11, bytes: 11});
    assert.deepEqual(await count(''), {words: 0, lines: 0, characters: 0, bytes: 0});
    assert.deepEqual(await count('\n'), {words: 0, lines: 1, characters: 1, bytes: 1});
    assert.deepEqual(await count('  \t  '), {words: 0, lines: 1, characters: 5, bytes: 5});
  });

  test('counts CRLF once, and Unicode text by code points with UTF-8 bytes', async () => {
    assert.deepEqual(await count('a b\r\nc\r\n'), {words: 3, lines: 2, characters: 8, bytes: 8});
    assert.deepEqual(await count('naïve café 😀'), {words: 3, lines: 1, characters: 12, bytes: 17});
    assert.deepEqual(await count('日本語 テキスト'), {words: 2, lines: 1, characters: 8, bytes: 22});
    assert.deepEqual(await count('a\u00a0b\u2003c'), {words: 3, lines: 1, characters: 5, bytes: 8}, 'Unicode spaces separate words');
    assert.deepEqual(await count('x\ud800'), {words: 1, lines: 1, characters: 2, bytes: 4}, 'a lone surrogate counts as U+FFFD would');
  });

  test('agrees with Node on bytes and code points for a large text, within isolate-strict limits', async () => {
    const text = 'Lorem ipsum dolor sit amet, ünïcödé 😀 text.\n'.repeat(20_000);
    const result = await count(text);
    assert.deepEqual(result, {words: 160_000, lines: 20_000, characters: [...text].length, bytes: Buffer.byteLength(text, 'utf8')});
    assert.ok(validator('text', 'word_count', 'outputSchema')(result));
  });

  test('inputSchema accepts a text and rejects anything else', () => {
    const valid = validator('text', 'word_count');
    assert.ok(valid({text: ''}));
    assert.ok(valid({text: 'x'.repeat(1_000_000)}));
    for (const bad of [{}, {text: null}, {text: ['a']}, {text: 'a', mode: 'words'}, {text: 'x'.repeat(1_000_001)}]) {
      assert.equal(valid(bad), false, `rejects ${JSON.stringify(bad).slice(0, 60)}`);
    }
  });
});
