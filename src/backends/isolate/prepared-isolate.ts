// Creates a fresh isolate with its context and prelude, ready for one call, and disposes it.
import ivm from 'isolated-vm';
import {preludeSource, type EntryOp} from './prelude.ts';

/**
 * A new isolate with one context in which the prelude has run: ready for exactly one
 * call, then disposed. Never reused (MACHINE.md: sharing a context across calls gave
 * one call another call's result).
 */
export interface PreparedIsolate {
  readonly isolate: ivm.Isolate;
  readonly context: ivm.Context;
  /** Host-side handle to the prelude's entry function; never passed into the isolate. */
  readonly entry: ivm.Reference<(op: EntryOp, a?: unknown, b?: unknown, c?: unknown, d?: unknown) => unknown>;
  /** The isolate's `memoryLimit`, in MB. */
  readonly memoryMb: number;
  /** `isolate.cpuTime` (ns) once the prelude had run, so a call counts only its own CPU time. */
  readonly cpuTimeAtReady: bigint;
}

/** Options of `prepareIsolate`. */
export interface PrepareOptions {
  /** isolated-vm `memoryLimit` in MB (minimum 8; a guideline that hostile code may exceed 2-3x). */
  memoryMb: number;
  /** Delete `WebAssembly` from the global (wasm memory is not counted by `memoryLimit`). */
  removeWebAssembly: boolean;
  /**
   * isolated-vm's `onCatastrophicError`: V8 lost control of the isolate. The worker ends
   * its own process when this fires (isolated-vm README: "end the process").
   */
  onCatastrophicError: (message: string) => void;
  /**
   * Also run the prelude's `warm` op (compiles the prelude's functions in this isolate
   * ahead of demand, about 0.25-0.5 ms of CPU here, so that the call that gets the
   * isolate does not). For the warm pool, whose isolates are made off the critical path.
   */
  warm?: boolean;
}

const PRELUDE_TIMEOUT_MS = 2000;
const PRELUDE_FILENAME = 'toolcell-prelude.js';

/** Prelude source and its V8 code cache data, per `removeWebAssembly` value (produced by this process). */
const preludes = new Map<boolean, {source: string; cachedData?: ivm.ExternalCopy<ArrayBuffer>}>();

/**
 * The options the warm pool prepares its isolates with (besides `memoryMb`,
 * `removeWebAssembly` and `onCatastrophicError`): with the prelude's `warm` op, which
 * moves CPU from the call into the refill, off the call's critical path (measured here:
 * sequential calls over MCP had a p50 about 0.1-0.3 ms higher without it).
 */
export const POOL_PREPARE_OPTIONS: Readonly<Pick<PrepareOptions, 'warm'>> = {warm: true};

/**
 * `prepareIsolate` in steps, as a generator: every `next()` runs one step synchronously
 * on the calling thread and the last one returns the `PreparedIsolate`. Steps: create
 * the isolate (`new ivm.Isolate({memoryLimit})`, about 0.8 ms of CPU here, most of it V8
 * deserialising its snapshot; isolated-vm creates a default context of its own in it) →
 * create the context → compile (from V8 code cache data after the first compilation in
 * this process) and run the prelude under a 2 s timeout → the `warm` op (when asked).
 * Each step runs only trusted code (no tool code is involved). The steps let a caller
 * yield to its event loop between them, so a call that arrives meanwhile waits for at
 * most one step instead of the whole preparation (about 1.5 ms of CPU with `warm`).
 *
 * Ending the generator early (`return()`), or a step throwing, disposes the isolate; an
 * isolate is handed out only when all steps are done. Synchronous steps, rather than
 * isolated-vm's asynchronous variants, because a hop to the isolate's thread per step
 * costs more CPU than the step itself (measured here: about 1.3 ms of CPU per isolate
 * synchronously, 1.6 ms with the asynchronous variants).
 * @throws (from `next()`) whatever isolated-vm throws; the isolate is disposed first.
 */
export function* prepareIsolateSteps(options: PrepareOptions): Generator<void, PreparedIsolate, void> {
  const isolate = new ivm.Isolate({memoryLimit: options.memoryMb, onCatastrophicError: options.onCatastrophicError});
  let ready = false;
  try {
    yield;
    const context = isolate.createContextSync();
    yield;
    let prelude = preludes.get(options.removeWebAssembly);
    if (prelude === undefined) {
      prelude = {source: preludeSource(options.removeWebAssembly)};
      preludes.set(options.removeWebAssembly, prelude);
    }
    const script = isolate.compileScriptSync(prelude.source, prelude.cachedData
      ? {filename: PRELUDE_FILENAME, cachedData: prelude.cachedData}
      : {filename: PRELUDE_FILENAME, produceCachedData: true});
    // isolated-vm sets `cachedData` on the returned Script (README, CachedDataOptions); its .d.ts omits it.
    if (prelude.cachedData === undefined) prelude.cachedData = (script as unknown as ivm.CachedDataResult).cachedData;
    const entry = script.runSync(context, {reference: true, timeout: PRELUDE_TIMEOUT_MS, release: true});
    if (options.warm === true) {
      yield;
      entry.applySync(undefined, ['warm'], {timeout: PRELUDE_TIMEOUT_MS});
    }
    ready = true;
    return {isolate, context, entry, memoryMb: options.memoryMb, cpuTimeAtReady: isolate.cpuTime};
  } finally {
    if (!ready && !isolate.isDisposed) isolate.dispose();
  }
}

/**
 * Creates an isolate, a context and runs the prelude in it, all at once and
 * synchronously on the calling thread: every step of `prepareIsolateSteps`. Blocks the
 * caller for about 1.3 ms of CPU here (1.5 ms with `warm`).
 * @throws whatever isolated-vm throws; the isolate is disposed first.
 */
export function prepareIsolate(options: PrepareOptions): PreparedIsolate {
  const steps = prepareIsolateSteps(options);
  for (;;) {
    const step = steps.next();
    if (step.done === true) return step.value;
  }
}

/** Disposes the isolate of `prepared` unless already disposed; never throws. */
export function disposePrepared(prepared: PreparedIsolate): void {
  try {
    if (!prepared.isolate.isDisposed) prepared.isolate.dispose();
  } catch {
    // Already disposed by isolated-vm (e.g. after hitting its memory limit).
  }
}
