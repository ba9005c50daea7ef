/**
 * An isolate deadline measures the tool's own execution (issue 11, "Tests under load"):
 * CPU-burning neighbours in the same worker, each looping until its own deadline, must
 * not push trivial calls with a short `timeoutMs` into TIMEOUT (their isolates wait for a
 * CPU, a thread or the worker's main thread, which is not their time). The burners still
 * end TIMEOUT, a tool whose promise can never settle still ends TIMEOUT (idle probe) within
 * its absolute backstop, and the backend answers afterwards. Once through IsolateBackend,
 * once through Dispatcher with its default settings (its slack must not cancel a call the
 * backend still legitimately runs).
 */
// invariant: isolate:time:own-execution
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {ExecutionResult} from '../../../src/backends/backend.ts';
import {ISOLATE_WAIT_SLACK_MS, type IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {DEFAULT_DISPATCH, Dispatcher} from '../../../src/dispatch/dispatcher.ts';
import {assertStillServes, HAZARD_SLACK_MS, job, run, sleep, startBackend} from '../../integration/isolate/helpers.ts';

/** Loops until its own deadline stops it. */
const BURNER = 'export default () => { for (;;); }';
const BURNERS = 5;
/** The burners' own deadline, in ms: long enough that the trivial calls run while they burn. */
const BURNER_TIMEOUT_MS = 5000;
const TRIVIAL = 'export default (args) => ({n: args.n * 2})';
const TRIVIALS = 10;
/**
 * The trivial calls' deadline, in ms: far above the few ms of their own execution even on a
 * slow host, far below the time they wait beside the burners (over a second here, with a
 * wall-clock deadline most of them ended TIMEOUT).
 */
const TRIVIAL_TIMEOUT_MS = 500;
const NEVER = 'export default () => new Promise(() => {})';
const NEVER_TIMEOUT_MS = 500;
/** Every call here must end within its absolute backstop (plus hops on a busy host). */
const backstopOf = (timeoutMs: number): number => timeoutMs + ISOLATE_WAIT_SLACK_MS + HAZARD_SLACK_MS + 5000;

type Outcome = {n: number; result: ExecutionResult & {elapsedMs?: number}} | {n: number; error: unknown};

function assertTrivialsSucceeded(outcomes: Outcome[]): void {
  const failures = outcomes.filter((o) => !('result' in o) || o.result.failed || o.result.stdout !== JSON.stringify({n: o.n * 2}));
  assert.deepEqual(failures, [], `trivial calls failed beside CPU burners: ${JSON.stringify(failures)}`);
}

function assertBurnersTimedOut(results: Array<ExecutionResult & {elapsedMs: number}>): void {
  for (const result of results) {
    assert.equal(result.failed, true, JSON.stringify(result));
    assert.equal(result.timedOut, true, JSON.stringify(result));
    assert.ok(result.elapsedMs <= backstopOf(BURNER_TIMEOUT_MS), `a burner took ${Math.round(result.elapsedMs)} ms`);
  }
}

describe('CPU-burning neighbours in the same worker', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  test('trivial calls with a short timeoutMs succeed; the burners and a never-settling call end TIMEOUT', async () => {
    const burners = Array.from({length: BURNERS}, () => run(backend, BURNER, {limits: {timeoutMs: BURNER_TIMEOUT_MS}}));
    let burnerResults: Array<ExecutionResult & {elapsedMs: number}> = [];
    try {
      await sleep(300); // the burners hold their threads
      const never = run(backend, NEVER, {limits: {timeoutMs: NEVER_TIMEOUT_MS}});
      const trivial = await Promise.all(Array.from({length: TRIVIALS}, (_, n) => run(backend, TRIVIAL, {args: {n}, limits: {timeoutMs: TRIVIAL_TIMEOUT_MS}})
        .then((result) => ({n, result}), (error: unknown) => ({n, error}))));
      assertTrivialsSucceeded(trivial);
      const neverResult = await never;
      assert.equal(neverResult.timedOut, true, JSON.stringify(neverResult));
      assert.ok(neverResult.elapsedMs <= backstopOf(NEVER_TIMEOUT_MS), `the never-settling call took ${Math.round(neverResult.elapsedMs)} ms`);
    } finally {
      burnerResults = await Promise.all(burners); // released even when an assertion above failed
    }
    assertBurnersTimedOut(burnerResults);
    await assertStillServes(backend);
  });

  test('a never-settling call alone still ends TIMEOUT at about its timeoutMs (idle probe)', async () => {
    const result = await run(backend, NEVER, {limits: {timeoutMs: NEVER_TIMEOUT_MS}});
    assert.equal(result.timedOut, true, JSON.stringify(result));
    // Generous: the probe answers as soon as the worker's timer fires, long before the backstop.
    assert.ok(result.elapsedMs < NEVER_TIMEOUT_MS + ISOLATE_WAIT_SLACK_MS / 2, `took ${Math.round(result.elapsedMs)} ms`);
    await assertStillServes(backend);
  });
});

describe('through Dispatcher with its default settings', () => {
  let backend: IsolateBackend;
  let dispatcher: Dispatcher;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
    dispatcher = new Dispatcher({isolate: backend}, DEFAULT_DISPATCH);
  });
  after(() => dispatcher.close());

  test('trivial calls beside CPU burners succeed; the burners end TIMEOUT', async () => {
    const signal = new AbortController().signal;
    const started = performance.now();
    const burners = Array.from({length: BURNERS}, () => dispatcher.run(job(BURNER, {}, {timeoutMs: BURNER_TIMEOUT_MS}), signal)
      .then((result) => ({...result, elapsedMs: performance.now() - started})));
    let burnerResults: Array<ExecutionResult & {elapsedMs: number}> = [];
    try {
      await sleep(300);
      const trivial = await Promise.all(Array.from({length: TRIVIALS}, (_, n) => dispatcher.run(job(TRIVIAL, {n}, {timeoutMs: TRIVIAL_TIMEOUT_MS}), signal)
        .then((result) => ({n, result}), (error: unknown) => ({n, error}))));
      assertTrivialsSucceeded(trivial);
    } finally {
      burnerResults = await Promise.all(burners);
    }
    assertBurnersTimedOut(burnerResults);
    await assertStillServes(backend);
  });
});
