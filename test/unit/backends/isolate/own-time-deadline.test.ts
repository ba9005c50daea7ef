/**
 * The own-time deadline of an isolate call (own-time-deadline.ts), on a fake clock: it
 * fires when the isolate's own running time reaches timeoutMs, not while the isolate
 * waits; it ends an idle isolate whose promise is pending once timeoutMs of wall clock has
 * passed; it fires at the absolute backstop whatever happens; and stop() ends it.
 */
import assert from 'node:assert/strict';
import {afterEach, beforeEach, describe, mock, test} from 'node:test';
import {watchDeadline, type OwnTimeDeadlineOptions} from '../../../../src/backends/isolate/own-time-deadline.ts';
import {RUN_NOT_STARTED, RUN_PENDING, RUN_SETTLED} from '../../../../src/backends/isolate/prelude.ts';

/** Fake wall clock (ms) and the isolate's own running time (ms), advanced by the test. */
let wall = 0;
let own = 0;
let fired = 0;

function start(overrides: Partial<OwnTimeDeadlineOptions> = {}): {stop: () => void} {
  return watchDeadline({
    timeoutMs: 100, backstopMs: 1000, readyAt: 0, ownMs: () => own, now: () => wall,
    probe: () => Promise.resolve(RUN_NOT_STARTED), onTimeout: () => fired++, ...overrides,
  });
}

/** Advances the wall clock by `ms` and the own time by `running` of it, in 1 ms ticks. */
async function advance(ms: number, running: number): Promise<void> {
  for (let i = 0; i < ms; i++) {
    wall++;
    if (i < running) own++;
    mock.timers.tick(1);
    await Promise.resolve();
    await Promise.resolve();
  }
}

describe('watchDeadline', () => {
  beforeEach(() => {
    mock.timers.enable({apis: ['setTimeout']});
    wall = 0;
    own = 0;
    fired = 0;
  });
  afterEach(() => mock.timers.reset());

  test('fires when the own running time reaches timeoutMs', async () => {
    start();
    await advance(99, 99);
    assert.equal(fired, 0);
    await advance(2, 2);
    assert.equal(fired, 1);
  });

  test('waiting (no own time) does not count, and a busy isolate is not probed as idle', async () => {
    start({probe: () => new Promise(() => {})}); // queued behind a running task: no answer
    await advance(500, 50);
    assert.equal(fired, 0, 'own time 50 of 100 after 500 ms of waiting');
    await advance(60, 60);
    assert.equal(fired, 1);
  });

  test('an idle isolate with its promise pending ends once timeoutMs of wall clock has passed', async () => {
    let probes = 0;
    start({probe: () => {
      probes++;
      return Promise.resolve(RUN_PENDING);
    }});
    await advance(99, 5);
    assert.equal(fired, 0);
    assert.equal(probes, 0, 'no probe before timeoutMs of wall clock');
    await advance(10, 0);
    assert.equal(fired, 1);
  });

  test('a probe that finds the call settled or not started does not end it', async () => {
    let answer: number = RUN_SETTLED;
    start({probe: () => Promise.resolve(answer)});
    await advance(300, 10);
    assert.equal(fired, 0);
    answer = RUN_NOT_STARTED;
    await advance(300, 10);
    assert.equal(fired, 0);
    answer = RUN_PENDING;
    await advance(100, 0);
    assert.equal(fired, 1);
  });

  test('the absolute backstop fires whatever the isolate did', async () => {
    start({probe: () => Promise.reject(new Error('gone'))});
    await advance(999, 10);
    assert.equal(fired, 0);
    await advance(2, 0);
    assert.equal(fired, 1);
  });

  test('stop() ends the watch; onTimeout runs at most once', async () => {
    const {stop} = start();
    await advance(50, 50);
    stop();
    await advance(2000, 2000);
    assert.equal(fired, 0);
    start();
    await advance(2000, 2000);
    assert.equal(fired, 1);
  });
});
