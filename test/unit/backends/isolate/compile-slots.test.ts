// CompileSlots: at most `size` holders, the rest first come first served; leaving the queue or a slot is idempotent.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {CompileSlots} from '../../../../src/backends/isolate/compile-slots.ts';

const held = async (p: Promise<void>): Promise<boolean> => Promise.race([p.then(() => true), new Promise<boolean>((r) => setImmediate(() => r(false)))]);

test('one slot: the second turn waits until the first leaves, in arrival order', async () => {
  const slots = new CompileSlots(1);
  const a = slots.take();
  const b = slots.take();
  const c = slots.take();
  assert.equal(await held(a.ready), true);
  assert.equal(await held(b.ready), false);
  a.leave();
  a.leave(); // idempotent: frees nothing more
  assert.equal(await held(b.ready), true);
  assert.equal(await held(c.ready), false);
  assert.deepEqual(slots.size, {held: 1, waiting: 1});
  b.leave();
  assert.equal(await held(c.ready), true);
  c.leave();
  assert.deepEqual(slots.size, {held: 0, waiting: 0});
});

test('a waiting turn that leaves is never granted and takes no slot', async () => {
  const slots = new CompileSlots(1);
  const a = slots.take();
  const b = slots.take();
  b.leave();
  a.leave();
  assert.equal(await held(b.ready), false);
  assert.deepEqual(slots.size, {held: 0, waiting: 0});
  const c = slots.take();
  assert.equal(await held(c.ready), true);
  c.leave();
});

test('size must be a positive integer', () => {
  assert.throws(() => new CompileSlots(0), RangeError);
  assert.throws(() => new CompileSlots(1.5), RangeError);
});
