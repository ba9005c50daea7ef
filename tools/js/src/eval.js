/**
 * js__eval: runs caller-provided JavaScript in the tool's own isolate and reports the
 * completion value and what the code printed.
 *
 * Runs in a bare V8 isolate (ECMAScript built-ins and a runtime-provided `console`; no
 * timers, no I/O, no `fetch`), so the code can compute but cannot reach anything outside.
 * The isolate profile's limits (time, heap, output) bound it; this module adds only a cap
 * on captured console output.
 *
 * Semantics:
 * - The code is a *script* evaluated with indirect eval (global scope, sloppy mode unless
 *   it says 'use strict'). The result is its completion value, e.g. the last expression.
 * - If the completion value is a thenable, it is awaited: write
 *   `(async () => { ... return x })()` for asynchronous code. Top-level `await` is a
 *   syntax error in a script. Nothing can wait on a timer: none exists in the isolate.
 * - While the code runs (including while its promise is awaited), `console.*` writes to a
 *   buffer returned as `console` (at most MAX_CONSOLE_LINES lines and MAX_CONSOLE_CHARS
 *   characters; the rest is counted and reported as dropped).
 * - A throw or rejection becomes an Error whose message is `Uncaught <Name>: <message>`;
 *   the lines printed before it are replayed to the runtime's console.
 *
 * Returns `{type, result?, console}`: `type` is `typeof` the completion value (after
 * awaiting); `result` is a JSON copy of it, or, for values JSON cannot represent
 * (undefined is omitted; bigint, symbol, function, NaN/Infinity, circular objects), a
 * REPL-like string such as `10n` or `[Function: f]`.
 *
 * Not guaranteed: the caller's code shares the isolate's globals with this module; it can
 * replace built-ins (JSON, Array.prototype) and so corrupt its own result. It cannot
 * affect other calls: each call gets a fresh isolate.
 */

/** Cap on captured console lines per call. */
export const MAX_CONSOLE_LINES = 1000;
/** Cap on captured console characters (UTF-16 code units) per call. */
export const MAX_CONSOLE_CHARS = 100_000;

// Captured at load, before the caller's code runs.
const jsonStringify = JSON.stringify;
const jsonParse = JSON.parse;
const globalEval = globalThis.eval;

/** A REPL-like one-line description of any value; never throws. */
function describe(value) {
  try {
    switch (typeof value) {
      case 'string': return value;
      case 'undefined': return 'undefined';
      case 'bigint': return `${value}n`;
      case 'symbol': return value.toString();
      case 'function': {
        const name = value.name || '(anonymous)';
        return /^class[\s{]/.test(Function.prototype.toString.call(value)) ? `[class ${name}]` : `[Function: ${name}]`;
      }
      case 'number': case 'boolean': return String(value);
      default: {
        if (value === null) return 'null';
        if (value instanceof Error) return `${value.name}: ${value.message}`;
        const json = jsonStringify(value);
        return json === undefined ? Object.prototype.toString.call(value) : json;
      }
    }
  } catch {
    try { return Object.prototype.toString.call(value); } catch { return '[unprintable value]'; }
  }
}

/** Builds a console that appends formatted lines to `lines`, with caps. */
function capturingConsole(lines) {
  let chars = 0;
  let dropped = 0;
  const write = (prefix, args) => {
    if (lines.length >= MAX_CONSOLE_LINES || chars >= MAX_CONSOLE_CHARS) { dropped++; return; }
    let text = prefix + args.map(describe).join(' ');
    if (chars + text.length > MAX_CONSOLE_CHARS) text = `${text.slice(0, MAX_CONSOLE_CHARS - chars)}… [line truncated]`;
    chars += text.length;
    lines.push(text);
  };
  const noop = () => {};
  const fake = {
    log: (...a) => write('', a),
    info: (...a) => write('', a),
    debug: (...a) => write('', a),
    dir: (v) => write('', [v]),
    table: (v) => write('', [v]),
    trace: (...a) => write('trace: ', a),
    warn: (...a) => write('warn: ', a),
    error: (...a) => write('error: ', a),
    assert: (ok, ...a) => { if (!ok) write('error: Assertion failed', a.length ? [':', ...a] : []); },
    group: noop, groupCollapsed: noop, groupEnd: noop, time: noop, timeEnd: noop, timeLog: noop,
    count: noop, countReset: noop,
  };
  return {fake, dropped: () => dropped};
}

/** The JSON-representable form of a completion value, or a descriptive string. */
function toResult(value) {
  const type = typeof value;
  if (type === 'undefined') return {type};
  if (type === 'number') return {type, result: Number.isFinite(value) ? value : String(value)};
  if (type === 'string' || type === 'boolean') return {type, result: value};
  if (type === 'object') {
    try {
      const json = jsonStringify(value);
      if (json !== undefined) return {type, result: jsonParse(json)};
    } catch { /* not JSON-serializable: describe it instead */ }
    let tag = '[object]';
    try { tag = Object.prototype.toString.call(value); } catch { /* keep default */ }
    return {type, result: `${tag} (not JSON-serializable)`};
  }
  return {type, result: describe(value)};
}

/** Default export: see the module comment. `args.code` is validated by the manifest's inputSchema. */
export default async function evaluate(args) {
  const code = args.code;
  const original = globalThis.console;
  const lines = [];
  const capture = capturingConsole(lines);
  globalThis.console = capture.fake;
  let outcome;
  try {
    let value = globalEval(code);
    if (value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function') {
      value = await value;
    }
    outcome = toResult(value);
  } catch (error) {
    globalThis.console = original;
    for (const line of lines) original?.log?.(line);
    throw new Error(`Uncaught ${describe(error)}`);
  } finally {
    globalThis.console = original;
  }
  if (capture.dropped() > 0) lines.push(`… ${capture.dropped()} more console call(s) dropped (cap: ${MAX_CONSOLE_LINES} lines, ${MAX_CONSOLE_CHARS} characters)`);
  return {...outcome, console: lines};
}
