/**
 * Attempts to reach the host from tool code: Node globals, module loading, the Function
 * constructor trick, the prelude's entry, references in the arguments. Each must find
 * nothing of the host, and the backend must answer the next call.
 */
// invariant: isolate:host:unreachable
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

/** ECMAScript (ES2025 + Stage 4 shipped in V8 13.6) and ECMA-402 globals; anything else is suspect. */
const ECMASCRIPT_GLOBALS = new Set([
  'AggregateError', 'Array', 'ArrayBuffer', 'AsyncDisposableStack', 'Atomics', 'BigInt', 'BigInt64Array',
  'BigUint64Array', 'Boolean', 'DataView', 'Date', 'DisposableStack', 'Error', 'EvalError', 'FinalizationRegistry',
  'Float16Array', 'Float32Array', 'Float64Array', 'Function', 'Infinity', 'Int16Array', 'Int32Array', 'Int8Array',
  'Intl', 'Iterator', 'JSON', 'Map', 'Math', 'NaN', 'Number', 'Object', 'Promise', 'Proxy', 'RangeError',
  'ReferenceError', 'Reflect', 'RegExp', 'Set', 'SharedArrayBuffer', 'String', 'SuppressedError', 'Symbol',
  'SyntaxError', 'TypeError', 'URIError', 'Uint16Array', 'Uint32Array', 'Uint8Array', 'Uint8ClampedArray',
  'WeakMap', 'WeakRef', 'WeakSet', 'decodeURI', 'decodeURIComponent', 'encodeURI', 'encodeURIComponent',
  'escape', 'eval', 'globalThis', 'isFinite', 'isNaN', 'parseFloat', 'parseInt', 'undefined', 'unescape',
]);

describe('host escape', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  test('process, require, module, Buffer, timers and fetch do not exist in the isolate', async () => {
    const names = ['process', 'require', 'module', 'exports', 'Buffer', 'global', '__dirname', '__filename',
      'setTimeout', 'setInterval', 'setImmediate', 'queueMicrotask', 'fetch', 'XMLHttpRequest', 'WebSocket',
      'importScripts', 'Deno', 'Bun', 'navigator', 'performance', 'structuredClone', 'ivm', '_ivm'];
    const result = await run(backend, `export default () => ${JSON.stringify(names)}.filter((name) => typeof globalThis[name] !== 'undefined')`);
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), []);
    await assertStillServes(backend);
  });

  test('the isolate global holds only ECMAScript built-ins and the prelude console', async () => {
    const result = await run(backend, 'export default () => [Object.getOwnPropertyNames(globalThis), Object.getOwnPropertySymbols(globalThis).length]');
    assert.equal(result.failed, false, JSON.stringify(result));
    const [names, symbols] = JSON.parse(result.stdout) as [string[], number];
    const unexpected = names.filter((name) => !ECMASCRIPT_GLOBALS.has(name) && name !== 'console');
    assert.deepEqual(unexpected, []);
    assert.equal(symbols, 0);
  });

  test('globalThis.constructor.constructor("return process")() finds no process', async () => {
    const source = `export default () => {
      const attempts = {};
      for (const [name, make] of Object.entries({
        globalConstructor: () => globalThis.constructor.constructor('return process')(),
        functionThis: () => (function () {}).constructor('return this.process')(),
        consoleLog: () => console.log.constructor('return process')(),
        generatorFunction: () => (function* () {}).constructor('return process')().next().value,
        evalProcess: () => eval('process'),
        errorStack: () => { Error.prepareStackTrace = (e, frames) => frames.map((f) => typeof f.getThis()); return new Error().stack; },
      })) {
        try { attempts[name] = String(make()); } catch (error) { attempts[name] = error.name; }
      }
      return attempts;
    }`;
    const result = await run(backend, source);
    assert.equal(result.failed, false, JSON.stringify(result));
    const attempts = JSON.parse(result.stdout) as Record<string, string>;
    assert.equal(attempts.globalConstructor, 'ReferenceError');
    assert.equal(attempts.functionThis, 'undefined');
    assert.equal(attempts.consoleLog, 'ReferenceError');
    assert.equal(attempts.generatorFunction, 'ReferenceError');
    assert.equal(attempts.evalProcess, 'ReferenceError');
    assert.doesNotMatch(attempts.errorStack ?? '', /process|require/);
    await assertStillServes(backend);
  });

  test('an async Function constructor that returns process resolves to nothing', async () => {
    const result = await run(backend, 'export default async () => { try { return await (async () => {}).constructor("return typeof process")(); } catch (e) { return e.name; } }');
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.equal(JSON.parse(result.stdout), 'undefined');
  });

  test('a static import is refused before the module runs', async () => {
    const result = await run(backend, 'import {readFileSync} from "node:fs"; export default () => readFileSync("/etc/passwd", "utf8");');
    assert.equal(result.failed, true);
    assert.equal(result.error?.name, 'Error');
    assert.match(result.error?.message ?? '', /^Imports are not available to isolate tools/);
    assert.equal(result.stdout, '');
    await assertStillServes(backend);
  });

  test('relative, bare and data: imports are refused alike', async () => {
    for (const specifier of ['./other.js', 'lodash', 'data:text/javascript,export default 1', 'file:///etc/passwd']) {
      const result = await run(backend, `import x from ${JSON.stringify(specifier)}; export default () => x;`);
      assert.equal(result.failed, true, specifier);
      assert.match(result.error?.message ?? '', /^Imports are not available to isolate tools/, specifier);
    }
  });

  test('a dynamic import() fails inside the tool', async () => {
    const result = await run(backend, 'export default async () => { try { await import("node:child_process"); return "imported"; } catch (e) { return "refused: " + e.message; } }');
    assert.equal(result.failed, false);
    assert.match(JSON.parse(result.stdout) as string, /^refused: /);
    await assertStillServes(backend);
  });

  test('import.meta carries nothing from the host', async () => {
    const result = await run(backend, 'export default () => [Object.keys(import.meta), String(import.meta.url)]');
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), [[], 'undefined']);
  });

  test('the arguments are plain data: no function, reference or host prototype', async () => {
    const result = await run(backend, `export default (args) => [
      Object.getPrototypeOf(args) === Object.prototype,
      Object.getPrototypeOf(args.list) === Array.prototype,
      JSON.stringify(Object.getOwnPropertyNames(args)),
      typeof args.nested.deref, typeof args.constructor.constructor('return process')
    ]`, {args: {list: [1], nested: {a: 1}}});
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), [true, true, '["list","nested"]', 'undefined', 'function']);
  });

  test('the prelude entry and its state are not reachable from tool code', async () => {
    const source = `export default () => {
      const found = [];
      const seen = new Set();
      const walk = (value, path, depth) => {
        if (depth > 3 || value === null || (typeof value !== 'object' && typeof value !== 'function') || seen.has(value)) return;
        seen.add(value);
        for (const key of Reflect.ownKeys(value)) {
          let child;
          try { child = value[key]; } catch { continue; }
          if (typeof child === 'function' && /entry|drain|run\\(/.test(String(child.name))) found.push(path + '.' + String(key));
          walk(child, path + '.' + String(key), depth + 1);
        }
      };
      walk(globalThis, 'globalThis', 0);
      return found;
    }`;
    const result = await run(backend, source);
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), []);
  });

  test('replacing console or the global in one call does not affect the worker', async () => {
    await run(backend, 'export default () => { globalThis.console = undefined; delete globalThis.JSON; Object.prototype.toJSON = () => "hijacked"; }');
    await assertStillServes(backend);
    const result = await run(backend, 'export default () => { console.log("ok"); return typeof Object.prototype.toJSON; }');
    assert.equal(result.stdout, '"undefined"');
    assert.equal(result.stderr, 'ok\n');
  });

  test('error messages and console stacks carry no host path', async () => {
    const result = await run(backend, 'export default () => { console.log(new Error("e").stack); null.x; }');
    assert.equal(result.failed, true);
    assert.equal(result.error?.name, 'TypeError');
    for (const text of [result.stderr, result.error?.message ?? '']) {
      assert.doesNotMatch(text, /\/work\/|\/home\/|node_modules|src\/backends|file:\/\/|node:internal/);
    }
  });
});
