import ivm from 'isolated-vm';

/**
 * A minimal stand-in for the isolate backend, for the bundled-tool tests only
 * (test/integration/tools). It is NOT the runtime's backend and enforces nothing the
 * backend promises: no worker process, no output cap, no cancellation.
 *
 * It reproduces the environment a tool bundle meets in production: a bare V8 isolate
 * (isolated-vm) with only ECMAScript built-ins plus a `console` defined inside the isolate,
 * the bundle compiled as an ES module whose imports cannot resolve, and the default export
 * called with a JSON copy of the arguments. The result is JSON-stringified inside the
 * isolate and parsed on the host, so only JSON crosses the boundary.
 */

/** What one call produced. */
export interface IsolateRun {
  /** The default export's (awaited) return value after a JSON round trip; `undefined` when it returned `undefined`. */
  value: unknown;
  /** Lines printed with `console.*` inside the isolate, each prefixed with its level when not `log`, e.g. `warn: x`. */
  console: string[];
}

/** Limits of one run; the defaults match the brief: 128 MB heap, 5000 ms wall clock. */
export interface IsolateRunOptions {
  /** isolated-vm `memoryLimit` in MB (2^20 bytes); a guideline, not a hard cap (isolated-vm README). */
  memoryMb?: number;
  /** Wall-clock limit in ms for module evaluation and for the call, each (isolated-vm `timeout`). */
  timeoutMs?: number;
}

/** Thrown when the tool threw or rejected; `message` is what the tool's error said. */
export class ToolThrew extends Error {
  readonly console: string[];
  constructor(message: string, consoleLines: string[]) {
    super(message);
    this.name = 'ToolThrew';
    this.console = consoleLines;
  }
}

const CONSOLE_SHIM = `
  const lines = [];
  const show = (v) => {
    if (typeof v === 'string') return v;
    try { const j = JSON.stringify(v); return j === undefined ? String(v) : j; } catch { return String(v); }
  };
  const make = (level) => (...args) => { lines.push((level === 'log' ? '' : level + ': ') + args.map(show).join(' ')); };
  globalThis.console = {log: make('log'), info: make('info'), warn: make('warn'), error: make('error'), debug: make('debug')};
  Object.defineProperty(globalThis, '__harnessConsole', {value: lines});
`;

const CALL = `
  const lines = globalThis.__harnessConsole;
  return (async () => {
    try {
      const value = await $0.default(JSON.parse($1));
      return JSON.stringify({ok: true, value, console: lines});
    } catch (e) {
      const message = e instanceof Error ? e.name + ': ' + e.message : 'non-error thrown: ' + String(e);
      return JSON.stringify({ok: false, message, console: lines});
    }
  })();
`;

/**
 * Compiles `source` as an ES module in a fresh isolate, evaluates it and calls its default
 * export with a JSON copy of `args`.
 *
 * @param source the bundle's text (self-contained ES module, default export a function)
 * @param args the tool arguments; must be JSON-serializable
 * @returns the JSON round trip of the awaited result and the captured console lines
 * @throws ToolThrew when the tool throws or rejects (message `Name: message`)
 * @throws Error from isolated-vm when the module fails to compile, imports anything,
 *   exceeds the heap limit or the timeout
 */
export async function runInIsolate(source: string, args: unknown, options: IsolateRunOptions = {}): Promise<IsolateRun> {
  const timeout = options.timeoutMs ?? 5000;
  const isolate = new ivm.Isolate({memoryLimit: options.memoryMb ?? 128});
  try {
    const context = await isolate.createContext();
    await context.eval(CONSOLE_SHIM, {timeout});
    const module = await isolate.compileModule(source, {filename: 'tool.js'});
    await module.instantiate(context, (specifier) => {
      throw new Error(`import of "${specifier}" refused: tool bundles must be self-contained`);
    });
    await module.evaluate({timeout});
    const text = await context.evalClosure(CALL, [module.namespace.derefInto(), JSON.stringify(args ?? null)],
      {timeout, result: {promise: true, copy: true}}) as string;
    const out = JSON.parse(text) as {ok: boolean; value?: unknown; message?: string; console: string[]};
    if (!out.ok) throw new ToolThrew(out.message ?? 'unknown error', out.console);
    return {value: out.value, console: out.console};
  } finally {
    if (!isolate.isDisposed) isolate.dispose();
  }
}
