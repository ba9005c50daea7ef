/**
 * CodeCache: bounded in bytes by lru-cache, and every ExternalCopy that leaves it
 * (evicted, replaced, deleted, or too large to keep) is released.
 */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import ivm from 'isolated-vm';
import {CodeCache} from '../../../../src/backends/isolate/code-cache.ts';

const data = (bytes: number): ivm.ExternalCopy<ArrayBuffer> => new ivm.ExternalCopy(new ArrayBuffer(bytes));

/** isolated-vm throws when a released copy is used. */
const isReleased = (copy: ivm.ExternalCopy<ArrayBuffer>): boolean => {
  try {
    copy.copy();
    return false;
  } catch {
    return true;
  }
};

test('evicts the least recently used entry beyond its byte budget and releases it', () => {
  const cache = new CodeCache(250);
  const a = data(100);
  const b = data(100);
  const c = data(100);
  cache.set('a', a);
  cache.set('b', b);
  assert.equal(cache.get('a'), a); // a is now the most recently used
  cache.set('c', c);
  assert.equal(cache.get('b'), undefined);
  assert.equal(isReleased(b), true);
  assert.equal(isReleased(a), false);
  assert.deepEqual(cache.size, {entries: 2, bytes: 200});
});

test('replacing, deleting, and data larger than the budget release the copy', () => {
  const cache = new CodeCache(150);
  const first = data(10);
  const second = data(20);
  cache.set('k', first);
  cache.set('k', second);
  assert.equal(isReleased(first), true);
  assert.equal(cache.get('k'), second);
  cache.delete('k');
  assert.equal(isReleased(second), true);
  const huge = data(1000);
  cache.set('huge', huge);
  assert.equal(cache.get('huge'), undefined);
  assert.equal(isReleased(huge), true);
  assert.deepEqual(cache.size, {entries: 0, bytes: 0});
});
