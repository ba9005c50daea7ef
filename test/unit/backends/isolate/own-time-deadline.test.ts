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

  test('a check that fires a fraction of a millisecond early still probes an idle isolate at timeoutMs, not timeoutMs later', async () => {
    // Node counts timers in whole milliseconds: the first check can find the wall clock at
    // 99.5 of 100 ms (here: ready at 0.5). Seen: idle calls ended at 1.6 s instead of 0.8 s.
    let probes = 0;
    start({readyAt: 0.5, probe: () => {
      probes++;
      return Promise.resolve(RUN_PENDING);
    }});
    await advance(100, 1);
    assert.equal(probes, 0, 'wall clock 99.5 of 100 ms: not idle long enough yet');
    await advance(5, 0);
    assert.equal(probes, 1);
    assert.equal(fired, 1, 'ended within a few ms of timeoutMs of wall clock');
  });

  test('a probe that fails (timed out, pre-empted) is sent again soon, not only at the own-time deadline', async () => {
    let probes = 0;
    start({probe: () => {
      probes++;
      return probes === 1 ? Promise.reject(new Error('Script execution timed out.')) : Promise.resolve(RUN_PENDING);
    }});
    await advance(101, 1);
    assert.equal(probes, 1);
    assert.equal(fired, 0);
    await advance(60, 0);
    assert.equal(probes, 2, 'asked again within PROBE_RECHECK_MS');
    assert.equal(fired, 1);
  });

  test('a probe answer does not postpone an own-time deadline that comes sooner', async () => {
    // Own time 95 of 100 ms at wall 100: the own-time check is due in 5 ms, before the
    // 50 ms re-probe a settled answer asks for.
    start({probe: () => Promise.resolve(RUN_SETTLED)});
    await advance(100, 95);
    assert.equal(fired, 0);
    await advance(10, 10);
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
