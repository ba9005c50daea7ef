/**
 * The prelude: JavaScript that runs inside every isolate before the tool's module, in
 * the same context. It installs `console` (pure JavaScript, collected inside the
 * isolate) and returns the *entry* function that the worker calls. The entry is
 * reachable only from the host side (as an isolated-vm `Reference` held by the worker),
 * never from tool code: the prelude defines no global but `console`.
 *
 * Nothing of the host crosses into the isolate: no `Reference`, no `Callback`, no host
 * function. The worker passes only copies (the argument JSON text, the output limit) and
 * the module namespace of the tool itself; the entry returns a plain object of strings
 * and booleans, copied out with isolated-vm's `{copy: true}`.
 *
 * The prelude captures the built-ins it needs ("primordials") before tool code runs,
 * so a tool that replaces `JSON.stringify`, `String.prototype.slice` or
 * `Array.prototype[Symbol.iterator]` cannot make the prelude exceed the output limit or
 * misreport the result. It avoids array iteration, `push` and regular expressions for
 * the same reason. What a tool does to its own built-ins can only change how its own
 * console lines are formatted, and the isolate is disposed after the call.
 *
 * The prelude is made of modules, each one self-contained function written as
 * TypeScript that compiles to plain JavaScript (type annotations only, no runtime TS
 * features): `capturePrimordials` (prelude-primordials.ts: the built-ins, captured once,
 * first), `isolatePrelude` here (the run protocol: the entry, `describe`, the buffer
 * constructors) and `createConsole` (prelude-console.ts: the console and its formatter,
 * unit-tested in Node). `preludeSource` bundles them into one source text via
 * `Function.prototype.toString`, passing the primordials and the console module to the
 * run protocol as arguments; none may refer to anything outside its own body.
 */

import {createConsole} from './prelude-console.ts';
import {createFetch} from './prelude-fetch.ts';
import {capturePrimordials, type Primordials} from './prelude-primordials.ts';

/** Caps on what a tool's error says, in UTF-16 units, wherever it is described (the prelude, the worker). */
export interface ErrorTextLimits {
  /** Longest error name kept. */
  nameChars: number;
  /** Longest error message kept; the rest is cut. */
  messageChars: number;
}

/** The one set of error text caps of the isolate tier (sent into each isolate as data). */
export const ERROR_TEXT_LIMITS: ErrorTextLimits = Object.freeze({nameChars: 200, messageChars: 4096});

/** Operations of the entry function; see `isolatePrelude`. */
export type EntryOp = 'init' | 'run' | 'drain' | 'warm' | 'probe' | 'deliver';

/**
 * What the entry returns for `probe`: where the call's `run` stands. `RUN_PENDING` from a
 * probe means the isolate has nothing left to run and the tool's promise is still
 * pending: it can never settle (an isolate has no timers), or, with an egress grant, it
 * waits for a fetch answer; either way it is ended once `timeoutMs` of wall clock has passed.
 */
export const RUN_NOT_STARTED = 0;
export const RUN_PENDING = 1;
export const RUN_SETTLED = 2;

/** What the entry returns for `run`, copied out of the isolate. */
export interface RunnerResult {
  /** JSON text of the returned value ('' for undefined), cut to the output limit. */
  stdout: string;
  /** Console text, cut to the output limit. */
  stderr: string;
  /** The console or the result exceeded the output limit. */
  truncated: boolean;
  /** What the tool threw, or why its value could not be serialised. */
  error?: {name: string; message: string};
}

/** What the entry returns for `drain`: the console text collected so far. */
export interface DrainResult {
  stderr: string;
  truncated: boolean;
}

/**
 * Runs inside the isolate (see the module docstring). Returns the entry function:
 * - `entry('init', outputBytes)`: sets the byte cap (UTF-8) of the console text and of
 *   the result JSON, each. Called before the tool module is evaluated.
 * - `entry('run', namespace, argsJson, contextJson, fetchCallback)`: `namespace` is a module
 *   wrapped by `wrapToolModule` (module-wrap.ts): calls its `default` (the tool's top level),
 *   takes the tool's default export from the record it resolves, parses `argsJson` (a string,
 *   or null for undefined arguments) and `contextJson` (`{"secrets": {...}}`, or null for
 *   `{"secrets": {}}`) inside the isolate; when `fetchCallback` (a fire-and-forget host
 *   callback, only for a call with an egress grant) is given, installs the global `fetch`
 *   (prelude-fetch.ts) that hands it each request; calls the default export as
 *   `(args, context)`, awaits the result, serialises it with `JSON.stringify` and resolves a
 *   `RunnerResult`. What the top level or the default export throws is described by
 *   `describe`, inside the isolate. A module whose top-level await has not settled resolves never (the caller's wall
 *   clock ends it: there are no timers in an isolate, so it cannot settle later).
 * - `entry('drain')`: the console text so far (after a timeout), as a `DrainResult`.
 * - `entry('probe')`: where `run` stands, `RUN_NOT_STARTED` (0), `RUN_PENDING` (1) or
 *   `RUN_SETTLED` (2); runs no tool code. The worker sends it as a task of its own, which
 *   isolated-vm runs after every earlier task of this isolate (and their microtasks): a
 *   probe that answers `RUN_PENDING` shows an isolate that is idle with the tool's promise
 *   pending for ever (or, with `fetch`, waiting for an answer: ended the same way once
 *   `timeoutMs` of wall clock has passed).
 * - `entry('deliver', id, responseJson)`: settles the tool's fetch request `id` with the
 *   host's answer (JSON text); its continuation runs in this task.
 * - `entry('warm')`: runs `run` once on a module-like object made here (`default` returns
 *   its argument), before any tool code exists in the isolate, so that V8 compiles the
 *   prelude's own functions ahead of demand (they are compiled lazily, on first call,
 *   in every new isolate). It writes no console line and changes no state a tool can
 *   observe (`limit`, the console text and its flag stay as they were). Used only by
 *   the warm pool, off a call's critical path.
 *
 * Console: installed as the global `console` from `makeConsole` (prelude-console.ts,
 * `createConsole`); its text and truncation flag are what `run` and `drain` report.
 */
export function isolatePrelude(removeWebAssembly: boolean, primordials: Primordials, makeConsole: typeof createConsole, errorLimits: ErrorTextLimits, makeFetch: typeof createFetch): (op: EntryOp, a?: unknown, b?: unknown, contextJson?: unknown, fetchCallback?: unknown) => unknown {
  'use strict';
  const G: any = globalThis;
  const {
    ReflectApply, ReflectConstruct, ReflectOwnKeys, ObjectDefineProperty, ObjectGetOwnPropertyDescriptor, JSONStringify,
    JSONParse, PromiseCtor, RangeErrorCtor, TypeErrorCtor, ObjectGetPrototypeOf, ObjectHasOwn, ObjectProtoToString,
    ArrayIsArray, NumberCtor, PromiseThen,
  } = primordials;

  // Where `run` stands (see `entry('probe')`): 0 not started, 1 pending, 2 settled.
  let runState = 0;

  const MAX_ERROR_NAME_CHARS = errorLimits.nameChars;
  const MAX_ERROR_MESSAGE_CHARS = errorLimits.messageChars;

  if (removeWebAssembly) delete G.WebAssembly;
  // `Intl` objects hold ICU data outside the V8 heap, which isolated-vm's memoryLimit
  // does not count (seen with 7.0.1, 32 MB isolates, 4 s: kept DateTimeFormats +330 MB
  // RSS, PluralRules +200, RelativeTimeFormat +180, Collators +160, ListFormats +100;
  // Intl.Segmenter on 1 MB strings took a 128 MB isolate to 1.7 GB). Its constructors
  // are reachable only through this namespace, so deleting it removes them all.
  // String/Date/Number `toLocale*` and `localeCompare` stay: they keep no ICU object
  // for the tool to hoard (the formatter of a call is freed or cached per locale).
  delete G.Intl;
  fixedLengthOnly(G.ArrayBuffer, 'ArrayBuffer', 'resize');
  if (typeof G.SharedArrayBuffer === 'function') fixedLengthOnly(G.SharedArrayBuffer, 'SharedArrayBuffer', 'grow');
  lengthCheckedArrayMethods(G.Array.prototype);

  /**
   * V8 runs many `Array.prototype` methods on a huge sparse array (`a.length = 2**32 - 1`)
   * or array-like in C++/Torque loops over the whole length that never check for
   * termination (seen with isolated-vm 7.0.1: `join` about 195 s, and `indexOf`,
   * `lastIndexOf`, `reverse`, `sort`, `toSorted`, `slice`, `flat`, `splice`, `forEach`,
   * `every` past the deadline; `toReversed` aborted the process), which wedged an isolate
   * thread. So those methods are replaced by wrappers that check the receiver's length
   * first and throw a RangeError above `MAX_ARRAY_METHOD_LENGTH` before the built-in
   * starts. The length is read without running tool code and cannot change before the
   * built-in's single read: a genuine array's own data property; for an array-like, a
   * data property found on it or its prototypes (a number, or a primitive converted
   * once here), or the built-in typed-array getter; any other accessor or an object
   * length is refused (TypeError). A Proxy runs its traps (the tool's own code) and then
   * takes V8's generic path, which the deadline interrupts. `toString` calls `join`
   * like the built-in. The built-ins stay captured in this closure only, so a tool
   * cannot put them back.
   */
  function lengthCheckedArrayMethods(proto: any): void {
    const MAX_ARRAY_METHOD_LENGTH = 2 ** 24;
    const ObjectCtor = Object;
    const TypedArrayLength = (ObjectGetOwnPropertyDescriptor(ObjectGetPrototypeOf(Uint8Array.prototype), 'length') as PropertyDescriptor).get;
    const names = ['copyWithin', 'every', 'fill', 'filter', 'find', 'findIndex', 'findLast', 'findLastIndex', 'flat',
      'flatMap', 'forEach', 'includes', 'indexOf', 'join', 'lastIndexOf', 'map', 'reduce', 'reduceRight', 'reverse',
      'shift', 'slice', 'some', 'sort', 'splice', 'toLocaleString', 'toReversed', 'toSorted', 'toSpliced', 'unshift', 'with'];
    const tooLong = (name: string): RangeError => new RangeErrorCtor('Array.prototype.' + name
      + ' is limited to arrays and array-likes of at most ' + MAX_ARRAY_METHOD_LENGTH + ' elements in isolate tools.');
    const check = (receiver: unknown, name: string): void => {
      if (receiver === null || receiver === undefined) return; // the built-in throws its TypeError
      const o = ObjectCtor(receiver);
      if (ArrayIsArray(o)) {
        const d = ObjectGetOwnPropertyDescriptor(o, 'length');
        if (d !== undefined && typeof d.value === 'number' && d.value > MAX_ARRAY_METHOD_LENGTH) throw tooLong(name);
        return;
      }
      let current: unknown = o;
      for (let depth = 0; depth < 32 && current !== null && (typeof current === 'object' || typeof current === 'function'); depth++) {
        // Fields read only when the descriptor owns them: never an accessor on Object.prototype.
        const d = ObjectGetOwnPropertyDescriptor(current as object, 'length');
        if (d !== undefined) {
          if (!ObjectHasOwn(d, 'value')) {
            if (ObjectHasOwn(d, 'get') && d.get === TypedArrayLength) return;
            throw new TypeErrorCtor('Array.prototype.' + name + ' is not available in isolate tools on an array-like whose length is an accessor.');
          }
          const v = d.value;
          if ((typeof v === 'object' && v !== null) || typeof v === 'function') {
            throw new TypeErrorCtor('Array.prototype.' + name + ' is not available in isolate tools on an array-like whose length is an object.');
          }
          if (typeof v !== 'symbol' && typeof v !== 'bigint' && NumberCtor(v) > MAX_ARRAY_METHOD_LENGTH) throw tooLong(name);
          return;
        }
        current = ObjectGetPrototypeOf(current);
      }
    };
    for (let i = 0; i < names.length; i++) {
      const name = names[i] as string;
      const intrinsic = proto[name];
      if (typeof intrinsic !== 'function') continue;
      // A method (not a constructor), named and sized like the built-in.
      const wrapper = {
        [name](this: unknown, ...args: unknown[]): unknown {
          check(this, name);
          return ReflectApply(intrinsic, this, args);
        },
      }[name] as (...args: unknown[]) => unknown;
      ObjectDefineProperty(wrapper, 'length', {value: intrinsic.length, writable: false, enumerable: false, configurable: true});
      ObjectDefineProperty(proto, name, {value: wrapper, writable: true, enumerable: false, configurable: true});
    }
    const methods = {
      toString(this: unknown): string {
        if (this === null || this === undefined) throw new TypeErrorCtor('Array.prototype.toString called on null or undefined');
        const o = ObjectCtor(this) as {join?: unknown};
        const join = o.join;
        return typeof join === 'function' ? ReflectApply(join, o, []) : ReflectApply(ObjectProtoToString, o, []);
      },
    };
    ObjectDefineProperty(proto, 'toString', {value: methods.toString, writable: true, enumerable: false, configurable: true});
  }

  /**
   * Resizable `ArrayBuffer`s and growable `SharedArrayBuffer`s are not counted by
   * isolated-vm's `memoryLimit` (seen with isolated-vm 7.0.1: four 30 MB resizable
   * buffers, filled, in a 32 MB isolate returned success), and filling them cannot be
   * interrupted. So the constructor that tool code can reach (the global, and
   * `prototype.constructor`, which `buffer.constructor` and species lookups read) is
   * replaced by one that refuses a `maxByteLength` option and passes only the length to
   * the built-in, and the prototype's `resize`/`grow` is removed. The built-in itself
   * stays captured in this closure only. Fixed-length buffers are unchanged (counted).
   */
  function fixedLengthOnly(Intrinsic: any, name: string, growMethod: string): void {
    const proto = Intrinsic.prototype;
    const wrapper = function (this: unknown, length?: unknown, options?: unknown): object {
      if (new.target === undefined) throw new TypeErrorCtor('Constructor ' + name + " requires 'new'");
      if ((typeof options === 'object' && options !== null) || typeof options === 'function') {
        if ((options as {maxByteLength?: unknown}).maxByteLength !== undefined) {
          throw new RangeErrorCtor('A resizable ' + name + ' (maxByteLength) is not available to isolate tools: its memory is not counted by the memory limit.');
        }
      }
      return ReflectConstruct(Intrinsic, [length], new.target);
    };
    const keys = ReflectOwnKeys(Intrinsic);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as PropertyKey;
      if (key === 'prototype' || key === 'arguments' || key === 'caller') continue;
      ObjectDefineProperty(wrapper, key, ObjectGetOwnPropertyDescriptor(Intrinsic, key) as PropertyDescriptor);
    }
    ObjectDefineProperty(wrapper, 'prototype', {value: proto, writable: false, enumerable: false, configurable: false});
    ObjectDefineProperty(proto, 'constructor', {value: wrapper, writable: true, enumerable: false, configurable: true});
    delete proto[growMethod];
    ObjectDefineProperty(G, name, {value: wrapper, writable: true, enumerable: false, configurable: true});
  }

  const c = makeConsole(primordials);
  // Captured now, before tool code; installed as the global `fetch` only for a call that brings a host callback (an egress grant).
  const fetchModule = makeFetch();
  const {utf8Length, cutToBytes, slice, record, dataProperty, primitiveText} = c;
  ObjectDefineProperty(G, 'console', {value: c.console, writable: true, configurable: true, enumerable: false});

  function cutChars(s: string, max: number): string {
    return s.length > max ? slice(s, 0, max) : s;
  }

  /**
   * Name and message of a thrown value, bounded. Reads only data properties (own or
   * inherited, `dataProperty`): a getter of `name`, `message` or anything else is never
   * called, and `toString` is not either, so a hostile thrown value cannot spin here or
   * pick what is reported. (A Proxy's traps still run, as the tool's own code under its
   * deadline.)
   */
  function describe(e: unknown): {name: string; message: string} {
    let name = 'Error';
    let message = 'A value without a message (a string data property) was thrown.';
    try {
      if ((typeof e === 'object' && e !== null) || typeof e === 'function') {
        const n = dataProperty(e, 'name');
        const m = dataProperty(e, 'message');
        if (typeof n === 'string' && n !== '') name = n;
        if (typeof m === 'string') message = m;
      } else message = primitiveText(e);
    } catch {
      message = 'A value that could not be described was thrown.';
    }
    const out = record<{name: string; message: string}>();
    out.name = cutChars(name, MAX_ERROR_NAME_CHARS);
    out.message = cutChars(message, MAX_ERROR_MESSAGE_CHARS);
    return out;
  }

  function notSerialisable(detail: string): {name: string; message: string} {
    const out = record<{name: string; message: string}>();
    out.name = 'TypeError';
    out.message = 'The tool returned a value that is not JSON-serialisable: ' + cutChars(detail, MAX_ERROR_MESSAGE_CHARS);
    return out;
  }

  /** The call itself; `track` records its end in `runState` (not for `warm`). */
  async function run(namespace: unknown, argsJson: unknown, track: boolean, contextJson?: unknown, fetchCallback?: unknown): Promise<RunnerResult> {
    let error: {name: string; message: string} | undefined;
    let value: unknown;
    try {
      // The wrapped module's default export (module-wrap.ts) runs the tool's top level,
      // top-level await included, and resolves a null-prototype record of ours holding
      // the tool's default export: a value the top level throws lands in this try. A top
      // level that never settles leaves this pending (see `entry('probe')`).
      let top: unknown;
      try {
        top = (namespace as {default?: unknown}).default;
      } catch {
        // An unwrapped module (too large to rewrite, run-in-isolate.ts): its settle
        // wrapper's default is in its temporal dead zone while the tool's top-level await
        // has not settled, and without timers or host callbacks it never will.
        await new PromiseCtor<never>(() => {});
      }
      if (typeof top !== 'function') throw new TypeErrorCtor('The tool module was not wrapped.');
      const exported: unknown = await ReflectApply(top, undefined, []);
      // Our record's own data property: a text V8 reads otherwise than the rewrite's parser
      // could `return` a value of its own from the wrapper; no getter of it is called here.
      const fn = dataProperty(exported, 'd');
      if (typeof fn !== 'function') throw new TypeErrorCtor('The tool module has no default export function.');
      const args: unknown = typeof argsJson === 'string' ? JSONParse(argsJson) : undefined;
      // The second argument: `{secrets: {NAME: placeholder}}`, parsed here (a copy; no host object).
      const context: unknown = typeof contextJson === 'string' ? JSONParse(contextJson) : JSONParse('{"secrets":{}}');
      if (typeof fetchCallback === 'function') fetchModule.install(G, fetchCallback as (id: number, requestJson: string) => void);
      value = await ReflectApply(fn, undefined, [args, context]);
    } catch (e) {
      error = describe(e);
    }
    let stdout = '';
    let resultTruncated = false;
    if (error === undefined && value !== undefined) {
      let json: unknown;
      try {
        // A string longer than the cap cannot fit (each char is at least one byte):
        // serialise only its head rather than quoting all of it (a 200 MB string would
        // take another 200+ MB and about half a second).
        json = typeof value === 'string' && value.length > c.limit()
          ? JSONStringify(slice(value, 0, c.limit()))
          : JSONStringify(value);
      } catch (e) {
        const d = describe(e);
        error = d.name === 'TypeError' ? notSerialisable(d.message) : d;
      }
      if (error === undefined) {
        if (typeof json !== 'string') {
          error = notSerialisable(typeof value === 'function' ? 'a function' : typeof value === 'symbol' ? 'a symbol' : 'JSON cannot represent it');
        } else if (json.length > c.limit() || utf8Length(json) > c.limit()) {
          stdout = cutToBytes(json, c.limit());
          resultTruncated = true;
        } else stdout = json;
      }
    }
    // A null-prototype record: an `error` (or other) setter a tool put on
    // Object.prototype cannot swallow the failure or run here.
    const result = record<RunnerResult>();
    result.stdout = stdout;
    result.stderr = c.text();
    result.truncated = c.isTruncated() || resultTruncated;
    if (error !== undefined) result.error = error;
    if (track) runState = 2;
    return result;
  }

  return function entry(op: EntryOp, a?: unknown, b?: unknown, contextJson?: unknown, fetchCallback?: unknown): unknown {
    if (op === 'init') {
      if (typeof a === 'number' && a >= 0) c.setLimit(a);
      return undefined;
    }
    if (op === 'run') {
      runState = 1;
      return run(a, b, true, contextJson, fetchCallback);
    }
    if (op === 'probe') return runState;
    if (op === 'deliver') {
      fetchModule.deliver(a, b);
      return undefined;
    }
    if (op === 'warm') {
      const exported = record<{d: unknown}>();
      exported.d = function warm(value: unknown): unknown { return value; };
      // A handler at once: a rejection of a promise of ours left unhandled would be copied
      // out by isolated-vm at the end of the task, outside any time limit.
      const warmed = run({default: async function top(): Promise<unknown> { return exported; }}, '{"warm":[1,"x",true,null]}', false);
      ReflectApply(PromiseThen, warmed, [undefined, function ignore(): undefined { return undefined; }]);
      return undefined;
    }
    if (op === 'drain') {
      const result = record<DrainResult>();
      result.stderr = c.text();
      result.truncated = c.isTruncated();
      return result;
    }
    return undefined;
  };
}

/**
 * Source text of a script whose completion value is the entry function; evaluate it
 * with isolated-vm's `context.eval(source, {reference: true})`. It bundles the prelude's
 * modules into one source: each is a self-contained function, passed to the next as an
 * argument.
 */
export function preludeSource(removeWebAssembly: boolean): string {
  return `(${isolatePrelude.toString()})(${removeWebAssembly ? 'true' : 'false'}, (${capturePrimordials.toString()})(), ${createConsole.toString()}, ${JSON.stringify(ERROR_TEXT_LIMITS)}, ${createFetch.toString()})`;
}
