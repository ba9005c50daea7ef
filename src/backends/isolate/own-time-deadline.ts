// An isolate call's deadline on the tool's own running time, with an idle probe and an absolute wall-clock backstop.
import {performance} from 'node:perf_hooks';
import {RUN_PENDING} from './prelude.ts';

/** What `watchDeadline` needs; all times in ms. */
export interface OwnTimeDeadlineOptions {
  /** The tool's own running time allowed (`WorkerLimits.timeoutMs`). */
  timeoutMs: number;
  /** Absolute wall-clock bound from `readyAt` (`WorkerLimits.backstopMs`, at least `timeoutMs`). */
  backstopMs: number;
  /** `performance.now()` when the call's isolate was ready. */
  readyAt: number;
  /**
   * The isolate's own running time since `readyAt` (isolated-vm `isolate.wallTime`
   * difference): time it was entered on a thread, running JavaScript, blocked in
   * `Atomics.wait` or pre-empted while entered. Infinity once it cannot be read (disposed).
   */
  ownMs: () => number;
  /**
   * Asks the isolate, as a task of its own (run after every earlier task of that isolate),
   * where the call stands; resolves the prelude's `RUN_*` value. Rejects when the isolate
   * is gone.
   */
  probe: () => Promise<unknown>;
  /** Called once, when the deadline passes. */
  onTimeout: () => void;
  /** Clock, for tests. Default `performance.now`. */
  now?: () => number;
}

/** Shortest wait between two checks, in ms. */
const MIN_CHECK_MS = 1;
/** After a probe that found the call not idle, the next check comes within this many ms. */
const PROBE_RECHECK_MS = 50;

/**
 * Ends a call (`onTimeout`) at the first of:
 * - its own running time (`ownMs`) reaches `timeoutMs`: the tool ran, slept in
 *   `Atomics.wait`, or spun in a microtask loop that long;
 * - `timeoutMs` of wall clock has passed since `readyAt` and a probe finds the isolate idle
 *   with the tool's promise pending (`RUN_PENDING`): it waits for something that can never
 *   happen (an isolate has no timers), or for a fetch answer (an egress grant): either way it
 *   is not running, so it is ended as soon as the
 *   wall clock says it could have used its time, as before this deadline measured own time;
 * - `backstopMs` of wall clock since `readyAt`, whatever the isolate did: nothing runs for ever.
 *
 * Time the isolate waits for a CPU, for an isolated-vm thread, between its steps or for
 * the worker's main thread does not count. A host timer checks, at most as often as the
 * remaining own time allows (own time cannot grow faster than the wall clock), and at
 * `timeoutMs` of wall clock for the idle probe; a probe that finds the call not idle, or
 * fails (its own 100 ms isolated-vm timeout), is sent again within `PROBE_RECHECK_MS`.
 *
 * Does NOT guarantee: that time the OS pre-empts the isolate's thread *while it is
 * entered* is excluded (isolated-vm's wall time counts it; its CPU time does not count
 * `Atomics.wait`, which must count); an exact end (the check runs on this process's
 * timers, late when its main thread is busy).
 *
 * @returns `stop()`, to call once the call is over (idempotent).
 */
export function watchDeadline(options: OwnTimeDeadlineOptions): {stop: () => void} {
  const now = options.now ?? (() => performance.now());
  let done = false;
  let probing = false;
  let timer: NodeJS.Timeout | undefined;

  const stop = (): void => {
    done = true;
    clearTimeout(timer);
    timer = undefined;
  };
  const fire = (): void => {
    if (done) return;
    stop();
    options.onTimeout();
  };
  /** `now()` when the pending check is due (meaningful while `timer` is set). */
  let due = Infinity;
  /** Sets the next check `ms` from now, unless one is already due sooner. */
  const schedule = (ms: number): void => {
    if (done) return;
    const at = now() + ms;
    if (timer !== undefined && due <= at) return;
    clearTimeout(timer);
    due = at;
    timer = setTimeout(check, Math.max(MIN_CHECK_MS, Math.ceil(ms)));
  };
  function check(): void {
    timer = undefined;
    if (done) return;
    const wall = now() - options.readyAt;
    const own = options.ownMs();
    if (own >= options.timeoutMs || wall >= options.backstopMs) {
      fire();
      return;
    }
    if (wall >= options.timeoutMs && !probing) {
      probing = true;
      options.probe().then((state) => {
        probing = false;
        if (state === RUN_PENDING) fire();
        else schedule(PROBE_RECHECK_MS);
      }, () => {
        // Gone (the next check sees Infinity own time and fires) or the probe itself timed
        // out (its thread was pre-empted): ask again soon, not only at the own-time deadline.
        probing = false;
        schedule(PROBE_RECHECK_MS);
      });
    }
    // The next check comes at the first of: the own-time deadline, the idle probe's time
    // (`timeoutMs` of wall clock, if not reached yet) and the backstop. A timer can fire a
    // fraction of a millisecond early by `now()` (Node counts timers in whole milliseconds
    // of libuv's clock): a check that finds the wall clock just short of `timeoutMs` must
    // come back then, not a whole `timeoutMs - own` later (seen: idle calls ended at 1.6 s
    // instead of 0.8 s).
    const untilProbe = wall < options.timeoutMs ? options.timeoutMs - wall : Infinity;
    schedule(Math.min(options.timeoutMs - own, untilProbe, options.backstopMs - wall));
  }
  schedule(Math.min(options.timeoutMs, options.backstopMs));
  return {stop};
}
