/**
 * The warm pool hands every isolate out at most once, never hands out one that is still
 * being prepared, degrades to "no isolate" (the caller then creates a cold one) when it
 * is empty, prepares one step per turn while it still holds an isolate and a whole
 * isolate at once when it holds none, pauses its refill while calls run, and disposes
 * everything it holds (also a half-prepared isolate) when it closes or evicts a memory
 * size.
 */
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {disposePrepared, prepareIsolate, prepareIsolateSteps, type PreparedIsolate} from '../../../../src/backends/isolate/prepared-isolate.ts';
import {WarmPool, type WarmPoolOptions} from '../../../../src/backends/isolate/warm-pool.ts';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
/** Lets the pool run `n` event-loop turns (one preparation step each). */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await turn();
}

/** A stand-in for a prepared isolate: only what the pool looks at. */
interface Fake {
  prepared: PreparedIsolate;
  disposed: () => boolean;
}

function fake(memoryMb: number, serial: number): Fake {
  let disposed = false;
  const isolate = {
    serial,
    get isDisposed() {
      return disposed;
    },
    dispose() {
      disposed = true;
    },
  };
  return {prepared: {isolate, memoryMb} as unknown as PreparedIsolate, disposed: () => disposed};
}

/** A pool over fake isolates prepared in `steps` steps; records what it made. */
function fakePool(options: Partial<WarmPoolOptions> & {steps?: number; busy?: () => boolean} = {}) {
  const made: Fake[] = [];
  const abandoned: number[] = [];
  let started = 0;
  const steps = options.steps ?? 3;
  const pool = new WarmPool({
    size: 2,
    maxKeys: 2,
    onError: () => {},
    busy: () => false,
    ...options,
    prepare: function* (memoryMb) {
      const serial = ++started;
      let done = false;
      try {
        for (let i = 1; i < steps; i++) yield;
        const f = fake(memoryMb, serial);
        made.push(f);
        done = true;
        return f.prepared;
      } finally {
        if (!done) abandoned.push(serial);
      }
    },
  });
  return {pool, made, abandoned, started: () => started};
}

describe('WarmPool', () => {
  test('take hands out each prepared isolate once, and undefined when empty', async () => {
    const {pool, made} = fakePool();
    pool.warm(32);
    await turns(20);
    assert.deepEqual(pool.idle, {32: 2});
    const a = pool.take(32);
    const b = pool.take(32);
    const c = pool.take(32);
    assert.ok(a && b);
    assert.notEqual(a, b);
    assert.equal(c, undefined, 'an empty pool returns undefined (the caller makes a cold isolate), never a used one');
    await turns(20);
    const d = pool.take(32);
    assert.ok(d && d !== a && d !== b);
    assert.equal(new Set(made.map((f) => f.prepared)).size, made.length);
    pool.close();
  });

  test('an empty pool prepares a whole isolate in one turn, a non-empty one a step per turn', async () => {
    const {pool, started} = fakePool({steps: 4, size: 2});
    pool.warm(32);
    await turns(1);
    assert.equal(pool.idle[32], 1, 'the first isolate is made at once: the next call would make one itself');
    await turns(2); // two of the second isolate's four steps
    assert.equal(started(), 2);
    assert.equal(pool.idle[32], 1, 'an isolate still being prepared is never counted or handed out');
    assert.ok(pool.take(32));
    assert.equal(pool.take(32), undefined);
    await turns(1);
    assert.equal(pool.idle[32], 1, 'once the pool is empty, the half-prepared isolate is finished at once');
    assert.equal(started(), 2);
    pool.close();
  });

  test('the refill pauses while busy and goes on from the same step on resume()', async () => {
    let busy = false;
    const {pool, started} = fakePool({steps: 4, size: 2, busy: () => busy});
    pool.warm(32);
    await turns(3); // the first at once, then two steps of the second
    busy = true;
    await turns(10);
    assert.equal(pool.idle[32], 1);
    assert.equal(started(), 2);
    busy = false;
    pool.resume();
    await turns(10);
    assert.equal(pool.idle[32], 2);
    assert.equal(started(), 2, 'the interrupted preparation was continued, not restarted');
    pool.close();
  });

  test('beforePrepare runs once before each preparation that is not urgent', async () => {
    let calls = 0;
    const {pool, started} = fakePool({steps: 3, size: 3, beforePrepare: () => calls++});
    pool.warm(32);
    await turns(20);
    assert.equal(started(), 3);
    assert.equal(calls, 2, 'not before the first: the pool was empty');
    pool.close();
  });

  test('close disposes idle isolates and abandons the one being prepared', async () => {
    const {pool, made, abandoned} = fakePool({steps: 4, size: 2});
    pool.warm(32);
    await turns(3); // one ready, the second half-way
    assert.equal(pool.idle[32], 1);
    pool.close();
    assert.ok(made.every((f) => f.disposed()));
    assert.deepEqual(abandoned, [2]);
    assert.equal(pool.take(32), undefined);
    await turns(10);
    assert.equal(made.length, 1, 'no refill after close');
  });

  test('evicting the least recently used memory size disposes its isolates', async () => {
    const {pool, made} = fakePool({maxKeys: 1, size: 1});
    pool.warm(32);
    await turns(10);
    const first = made[0];
    assert.ok(first);
    pool.warm(64);
    assert.ok(first.disposed());
    assert.deepEqual(pool.idle, {64: 0});
    pool.close();
  });

  test('a failing preparation is reported and the next take starts another', async () => {
    const errors: unknown[] = [];
    let attempts = 0;
    const pool = new WarmPool({
      size: 1, maxKeys: 1, busy: () => false, onError: (error) => errors.push(error),
      prepare: function* (memoryMb) {
        attempts++;
        yield;
        if (attempts === 1) throw new Error('boom');
        return fake(memoryMb, attempts).prepared;
      },
    });
    pool.warm(32);
    await turns(10);
    assert.equal(errors.length, 1);
    assert.equal(pool.idle[32], 0);
    assert.equal(pool.take(32), undefined);
    await turns(10);
    assert.equal(pool.idle[32], 1);
    pool.close();
  });
});

describe('prepareIsolateSteps', () => {
  const options = {memoryMb: 16, removeWebAssembly: true, onCatastrophicError: () => {}, warm: true};

  test('returns a ready isolate after its last step', () => {
    const prepared = prepareIsolate(options);
    try {
      assert.equal(prepared.isolate.isDisposed, false);
      assert.equal(prepared.memoryMb, 16);
      assert.equal(prepared.context.global.getSync('console', {reference: true}).typeof, 'object');
    } finally {
      disposePrepared(prepared);
    }
    assert.equal(prepared.isolate.isDisposed, true);
  });

  test('abandoning it half-way disposes the isolate it created', () => {
    // Each undisposed half-prepared isolate keeps about 1.2 MB resident here (200 kept: +240 MB);
    // 200 abandoned ones must not add up.
    for (let i = 0; i < 20; i++) prepareIsolateSteps(options).return(undefined as unknown as PreparedIsolate);
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 200; i++) {
      const steps = prepareIsolateSteps(options);
      steps.next();
      steps.next();
      steps.return(undefined as unknown as PreparedIsolate);
    }
    const grownMb = (process.memoryUsage().rss - before) / 2 ** 20;
    assert.ok(grownMb < 120, `resident memory grew by ${Math.round(grownMb)} MB`);
  });
});
