// Child process of `toolcell check`: evaluates one isolate entry's top level in a fresh isolate, as a call would, without calling the tool.
import {readFileSync} from 'node:fs';
import type ivm from 'isolated-vm';
import {WRAP_LINE_OFFSET, wrapperBreakRefusal, wrapToolModule} from './backends/isolate/module-wrap.ts';
import {disposePrepared, prepareIsolate} from './backends/isolate/prepared-isolate.ts';

/** One problem the probe found, with the position in the entry file where V8 gave one (1-based line and column). */
export interface ProbeProblem {
  message: string;
  line?: number;
  column?: number;
}

/** The probe's answer, one JSON line on stdout. */
export interface ProbeReport {
  problems: ProbeProblem[];
  /** `typeof` the module's default export after evaluation; undefined when evaluation failed. */
  defaultType?: string;
}

/** Heap of the probe's isolate, in MB (a guideline for isolated-vm: hostile code may use 2-3x). */
const PROBE_MEMORY_MB = 128;
/** Wall-clock limit of one evaluation of the module's top level, in ms. */
const PROBE_TIMEOUT_MS = 2000;
/** Most missing globals reported for one entry (each costs one more evaluation). */
const MAX_ROUNDS = 8;

/**
 * A global that absorbs every use (any property, call or construction gives itself back), so
 * that evaluation can go on past a missing global and find the next one. Source text run
 * inside the isolate; `then` is undefined so that awaiting it does not hang.
 */
const STUB = (name: string) => `(() => {
  const stub = new Proxy(function () {}, {
    get: (_t, key) => key === 'then' ? undefined : key === Symbol.toPrimitive ? () => '' : stub,
    apply: () => stub, construct: () => stub, has: () => false, set: () => true,
  });
  Object.defineProperty(globalThis, ${JSON.stringify(name)}, {value: stub, writable: true, configurable: true});
})();`;

/**
 * Evaluates the module's top level in a fresh prepared isolate (the prelude of a real call:
 * only ECMAScript and `console`), with `stubbed` globals absorbing every use. Imports resolve
 * to nothing (as at call time).
 * @returns the error evaluation threw, or the `typeof` of the default export
 */
function evaluateOnce(source: string, filename: string, stubbed: readonly string[]): {error: unknown} | {defaultType: string} {
  const prepared = prepareIsolate({memoryMb: PROBE_MEMORY_MB, removeWebAssembly: true, onCatastrophicError: () => process.exit(70)});
  try {
    for (const name of stubbed) prepared.context.evalSync(STUB(name), {timeout: PROBE_TIMEOUT_MS});
    // The module a call runs: the tool's top level inside the wrapper (module-wrap.ts).
    const wrap = wrapToolModule(source, filename);
    if ('error' in wrap) return {error: Object.assign(new Error(wrap.error.message), {name: wrap.error.name})};
    let module: ivm.Module;
    try {
      module = prepared.isolate.compileModuleSync(wrap.source, {filename, lineOffset: WRAP_LINE_OFFSET});
    } catch (error) {
      const refusal = wrapperBreakRefusal(error, filename);
      if (refusal) return {error: Object.assign(new Error(refusal.message), {name: refusal.name})};
      throw error;
    }
    module.instantiateSync(prepared.context, (specifier) => {
      throw new Error(`cannot import "${specifier}": an isolate entry must be one self-contained module`);
    });
    module.evaluateSync({timeout: PROBE_TIMEOUT_MS});
    // Runs the top level (the wrapper) and reports `typeof` the default export it resolves,
    // or 'uninitialized' when its top-level await is still pending once the isolate is idle.
    const probe = prepared.context.evalClosureSync(
      `let state = 'uninitialized'; $0().then((r) => { state = typeof r.d; }, (e) => { state = {e}; }); return {get: () => state};`,
      [(module.namespace.getSync('default', {reference: true}) as unknown as ivm.Reference).derefInto()], {timeout: PROBE_TIMEOUT_MS, result: {reference: true}},
    ) as unknown as ivm.Reference<{get: () => unknown}>;
    const state = probe.getSync('get', {reference: true}) as unknown as ivm.Reference<() => unknown>;
    const seen = state.applySync(undefined, [], {timeout: PROBE_TIMEOUT_MS, result: {reference: true}}) as unknown as ivm.Reference<unknown>;
    if (seen.typeof === 'string') return {defaultType: seen.copySync() as string};
    return {error: (seen as unknown as ivm.Reference<{e: unknown}>).getSync('e', {copy: true})};
  } catch (error) {
    return {error};
  } finally {
    disposePrepared(prepared);
  }
}

/** Line and column of the first frame in `filename`, from an error's stack text. */
function positionIn(error: unknown, filename: string): {line?: number; column?: number} {
  const stack = String((error as {stack?: unknown})?.stack ?? '');
  const escaped = filename.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const match = new RegExp(`${escaped}:(\\d+):(\\d+)`).exec(stack);
  return match ? {line: Number(match[1]), column: Number(match[2])} : {};
}

/**
 * Finds what the module's top level uses that a call's isolate does not have, one problem
 * per missing global (`process`, `require`, `setTimeout`, ... or any other), by evaluating
 * it again with each missing global found so far stubbed. Another error the top level throws
 * is reported once and ends the probe. Only code that runs at the top level is seen: a
 * missing global used inside the tool function shows at call time only.
 */
export function probeEntry(source: string, filename: string): ProbeReport {
  const problems: ProbeProblem[] = [];
  const stubbed: string[] = [];
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const outcome = evaluateOnce(source, filename, stubbed);
    if ('defaultType' in outcome) return {problems, defaultType: outcome.defaultType};
    const message = String((outcome.error as {message?: unknown})?.message ?? outcome.error);
    const missing = /^(\S+) is not defined$/.exec(message)?.[1];
    if (missing !== undefined && !stubbed.includes(missing)) {
      problems.push({message: `uses "${missing}" at top level, which an isolate does not have (no process, require, timers, I/O)`, ...positionIn(outcome.error, filename)});
      stubbed.push(missing);
      continue;
    }
    const name = String((outcome.error as {name?: unknown})?.name ?? 'Error');
    problems.push({message: `top-level code throws ${name}: ${message}`.slice(0, 500), ...positionIn(outcome.error, filename)});
    return {problems};
  }
  problems.push({message: `more than ${MAX_ROUNDS} missing globals; stopped looking`});
  return {problems};
}

// Entry: node --no-node-snapshot check-probe.(ts|js) FILE NAME → one JSON line on stdout.
const [file, filename] = process.argv.slice(2);
if (file !== undefined && filename !== undefined) {
  process.stdout.write(`${JSON.stringify(probeEntry(readFileSync(file, 'utf8'), filename))}\n`);
}
