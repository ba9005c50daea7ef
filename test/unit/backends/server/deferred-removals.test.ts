// DeferredRemovals: the bound on hosted servers' removals in flight, the wait for room, the drain, and what the pool counts.
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {DeferredRemovals} from '../../../../src/backends/server/deferred-removals.ts';

/** A removal the test ends by hand. */
function gate(): {remove: () => Promise<void>; open: () => void; fail: () => void} {
  let open!: () => void;
  let fail!: () => void;
  const p = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = () => reject(new Error('engine said no'));
  });
  p.catch(() => undefined); // may fail before the set calls remove() (it starts on the next event-loop turn)
  return {remove: () => p, open, fail};
}
const tick = () => new Promise((r) => setImmediate(r));

describe('DeferredRemovals', () => {
  test('counts removals in flight and their memory until each settles (rejections included), and calls onSettled', async () => {
    const set = new DeferredRemovals(4);
    let settled = 0;
    set.onSettled = () => settled++;
    const a = gate();
    const b = gate();
    set.add(a.remove, 128);
    set.add(b.remove, 64);
    assert.deepEqual(set.live(), {count: 2, memoryMb: 192});
    a.open();
    b.fail();
    await set.drain();
    assert.deepEqual(set.live(), {count: 0, memoryMb: 0});
    assert.equal(settled, 2);
  });

  test('room() resolves at once under the bound, waits while the set is full, and resumes when one settles', async () => {
    const set = new DeferredRemovals(2);
    await set.room(new AbortController().signal);
    const a = gate();
    const b = gate();
    set.add(a.remove, 1);
    set.add(b.remove, 1);
    let got = false;
    const waiting = set.room(new AbortController().signal).then(() => {
      got = true;
    });
    await tick();
    assert.equal(got, false, 'a third call must wait while 2 removals are in flight');
    b.open();
    await waiting;
    assert.equal(got, true);
    a.open();
    await set.drain();
  });

  test('room() rejects with the signal\'s reason when the caller gives up while waiting', async () => {
    const set = new DeferredRemovals(1);
    const a = gate();
    set.add(a.remove, 1);
    const ac = new AbortController();
    const waiting = set.room(ac.signal);
    ac.abort(new Error('cancelled'));
    await assert.rejects(waiting, /cancelled/);
    a.open();
    await set.drain();
  });

  test('drain() also waits for removals added while it waits', async () => {
    const set = new DeferredRemovals(4);
    const a = gate();
    const b = gate();
    set.add(a.remove, 1);
    let drained = false;
    const d = set.drain().then(() => {
      drained = true;
    });
    set.add(b.remove, 1);
    a.open();
    await tick();
    await tick();
    assert.equal(drained, false);
    b.open();
    await d;
    assert.equal(set.live().count, 0);
  });

  test('a bound below 1 is refused', () => {
    assert.throws(() => new DeferredRemovals(0), /integer >= 1/);
  });
});
