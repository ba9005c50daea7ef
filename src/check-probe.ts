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
/**
 * CPU time one evaluation of the module's top level may use, in ms (isolated-vm
 * `isolate.cpuTime`): the isolate's own work, so a busy host (other processes on the CPUs)
 * does not turn a heavy but honest top level (mathjs) into a false "timed out".
 */
const PROBE_CPU_MS = 2000;
/**
 * Wall-clock backstop of one evaluation, in ms (isolated-vm's `timeout`): ends a top level
 * that uses no CPU while it blocks (`Atomics.wait`), or one starved of CPU for that long.
 * Generous on purpose; the parent's `PROBE_DEADLINE_MS` bounds the whole probe.
 */
const PROBE_WALL_MS = 15_000;
/** Poll interval of `isolate.cpuTime` during an evaluation, in ms. */
const CPU_POLL_MS = 10;
/** Wall-clock limit of the probe's own stub code (trusted, tiny), in ms. */
const STUB_TIMEOUT_MS = 2000;
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
 * to nothing (as at call time). Evaluation runs on isolated-vm's thread while this thread
 * polls the isolate's CPU time every `CPU_POLL_MS`: past `PROBE_CPU_MS` the isolate is
 * disposed (overshoot of about one poll); past `PROBE_WALL_MS` of wall clock isolated-vm's
 * `timeout` ends it. Does NOT bound memory beyond isolated-vm's `memoryLimit` guideline
 * (`PROBE_MEMORY_MB`; the probe is its own process, killed by the parent at its deadline).
 * @returns the error evaluation threw (a `ProbeTimeout` when a limit ended it), or the
 *   `typeof` of the default export
 */
async function evaluateOnce(source: string, filename: string, stubbed: readonly string[]): Promise<{error: unknown} | {defaultType: string}> {
  const prepared = prepareIsolate({memoryMb: PROBE_MEMORY_MB, removeWebAssembly: true, onCatastrophicError: () => process.exit(70)});
  let overCpu = false;
  let poll: NodeJS.Timeout | undefined;
  try {
    for (const name of stubbed) prepared.context.evalSync(STUB(name), {timeout: STUB_TIMEOUT_MS});
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
    // Defines the wrapper only; the tool's top level runs in the closure below.
    module.evaluateSync({timeout: STUB_TIMEOUT_MS});
    const cpuAtStart = prepared.isolate.cpuTime;
    const cpuLimitNs = BigInt(PROBE_CPU_MS) * 1_000_000n;
    poll = setInterval(() => {
      try {
        if (prepared.isolate.cpuTime - cpuAtStart > cpuLimitNs) {
          overCpu = true;
          prepared.isolate.dispose();
        }
      } catch {
        // Disposed meanwhile.
      }
    }, CPU_POLL_MS);
    // Runs the top level (the wrapper) and reports `typeof` the default export it resolves,
    // or 'uninitialized' when its top-level await is still pending once the isolate is idle.
    let probe: ivm.Reference<{get: () => unknown}>;
    try {
      probe = await prepared.context.evalClosure(
        `let state = 'uninitialized'; $0().then((r) => { state = typeof r.d; }, (e) => { state = {e}; }); return {get: () => state};`,
        [(module.namespace.getSync('default', {reference: true}) as unknown as ivm.Reference).derefInto()], {timeout: PROBE_WALL_MS, result: {reference: true}},
      ) as unknown as ivm.Reference<{get: () => unknown}>;
    } catch (error) {
      if (overCpu) return {error: new ProbeTimeout(`the top level used more than ${PROBE_CPU_MS} ms of CPU time and was stopped`)};
      if (/timed out/i.test(String((error as {message?: unknown})?.message))) {
        return {error: new ProbeTimeout(`the top level did not finish within ${PROBE_WALL_MS} ms of wall clock and was stopped`)};
      }
      return {error};
    } finally {
      clearInterval(poll);
    }
    if (overCpu) return {error: new ProbeTimeout(`the top level used more than ${PROBE_CPU_MS} ms of CPU time and was stopped`)};
    const state = probe.getSync('get', {reference: true}) as unknown as ivm.Reference<() => unknown>;
    const seen = state.applySync(undefined, [], {timeout: STUB_TIMEOUT_MS, result: {reference: true}}) as unknown as ivm.Reference<unknown>;
    if (seen.typeof === 'string') return {defaultType: seen.copySync() as string};
    return {error: (seen as unknown as ivm.Reference<{e: unknown}>).getSync('e', {copy: true})};
  } catch (error) {
    return {error};
  } finally {
    clearInterval(poll);
    disposePrepared(prepared);
  }
}

/** An evaluation the probe ended at one of its limits (CPU time or the wall-clock backstop). */
class ProbeTimeout extends Error {
  override name = 'ProbeTimeout';
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
export async function probeEntry(source: string, filename: string): Promise<ProbeReport> {
  const problems: ProbeProblem[] = [];
  const stubbed: string[] = [];
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const outcome = await evaluateOnce(source, filename, stubbed);
    if ('defaultType' in outcome) return {problems, defaultType: outcome.defaultType};
    const message = String((outcome.error as {message?: unknown})?.message ?? outcome.error);
    if (outcome.error instanceof ProbeTimeout) {
      problems.push({message: `${message}: a call would spend its time there (or time out) before the tool runs`});
      return {problems};
    }
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
  process.stdout.write(`${JSON.stringify(await probeEntry(readFileSync(file, 'utf8'), filename))}\n`);
}
