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
  readonly entry: ivm.Reference<(op: EntryOp, a?: unknown, b?: unknown) => unknown>;
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
   * ahead of demand; about 0.4 ms here, saving about 0.2 ms on the call that gets the
   * isolate). For the warm pool, whose isolates are made off the critical path.
   */
  warm?: boolean;
}

const PRELUDE_TIMEOUT_MS = 2000;
const PRELUDE_FILENAME = 'toolcell-prelude.js';

/** Prelude source and its V8 code cache data, per `removeWebAssembly` value (produced by this process). */
const preludes = new Map<boolean, {source: string; cachedData?: ivm.ExternalCopy<ArrayBuffer>}>();

/**
 * Creates an isolate (`new ivm.Isolate({memoryLimit})`), a context and runs the prelude
 * in it, all synchronously on the calling thread: each step runs only trusted code (no
 * tool code is involved), and a hop to the isolate's thread per step costs more CPU
 * than the step itself (measured here: about 1.3 ms of CPU per isolate synchronously,
 * 1.6 ms with the asynchronous variants). It blocks the caller for about a millisecond,
 * so callers that create several in a row yield to the event loop between them. The
 * prelude's script runs under a 2 s timeout. The prelude is compiled from V8 code cache
 * data after its first compilation in this process (compiled code only; every isolate
 * still runs the prelude itself).
 * @throws whatever isolated-vm throws; the isolate is disposed first.
 */
export function prepareIsolate(options: PrepareOptions): PreparedIsolate {
  const isolate = new ivm.Isolate({memoryLimit: options.memoryMb, onCatastrophicError: options.onCatastrophicError});
  try {
    const context = isolate.createContextSync();
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
    if (options.warm === true) entry.applySync(undefined, ['warm'], {timeout: PRELUDE_TIMEOUT_MS});
    return {isolate, context, entry, memoryMb: options.memoryMb, cpuTimeAtReady: isolate.cpuTime};
  } catch (error) {
    if (!isolate.isDisposed) isolate.dispose();
    throw error;
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
