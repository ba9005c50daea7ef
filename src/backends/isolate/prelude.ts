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
 * `isolatePrelude` is written as TypeScript that compiles to plain JavaScript (type
 * annotations only, no runtime TS features) and is sent to the isolate as source text
 * via `Function.prototype.toString`; it must not refer to anything outside its body.
 */

/** Operations of the entry function; see `isolatePrelude`. */
export type EntryOp = 'init' | 'run' | 'drain' | 'warm';

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
 * - `entry('run', namespace, argsJson)`: parses `argsJson` (a string, or null for
 *   undefined arguments) inside the isolate, calls the module's default export with it,
 *   awaits the result, serialises it with `JSON.stringify` and resolves a `RunnerResult`.
 *   A module whose top-level await has not settled resolves never (the caller's wall
 *   clock ends it: there are no timers in an isolate, so it cannot settle later).
 * - `entry('drain')`: the console text so far (after a timeout), as a `DrainResult`.
 * - `entry('warm')`: runs `run` once on a module-like object made here (`default` returns
 *   its argument), before any tool code exists in the isolate, so that V8 compiles the
 *   prelude's own functions ahead of demand (they are compiled lazily, on first call,
 *   in every new isolate). It writes no console line and changes no state a tool can
 *   observe (`limit`, the console text and its flag stay as they were). Used only by
 *   the warm pool, off a call's critical path.
 *
 * Console: `log`, `info`, `debug`, `warn`, `error`, `trace`, `dir`, `table`, `assert`,
 * `group`/`groupCollapsed`/`groupEnd`, `count`/`countReset`, `time`/`timeLog`/`timeEnd`.
 * Arguments are formatted like Node's `util.format` in a reduced form (`%s %d %i %f %j
 * %o %O %c %%`; objects to depth 2, 100 entries each; getters shown as `[Getter]`).
 * One line per call. When the text would exceed the cap it is cut at the cap (on a
 * UTF-8 boundary) and that call and every later one throw a `RangeError`, which stops a
 * tool that does not catch it; the call is reported `truncated`.
 *
 * Does NOT guarantee: that formatting matches Node's exactly, or that a tool cannot
 * make its own lines ugly (e.g. a Proxy with traps runs tool code while formatted).
 */
export function isolatePrelude(removeWebAssembly: boolean): (op: EntryOp, a?: unknown, b?: unknown) => unknown {
  'use strict';
  const G: any = globalThis;
  // Primordials, captured before any tool code runs.
  const ReflectApply = Reflect.apply;
  const ReflectConstruct = Reflect.construct;
  const ReflectOwnKeys = Reflect.ownKeys;
  const ObjectDefineProperty = Object.defineProperty;
  const ObjectKeys = Object.keys;
  const ObjectCreate = Object.create;
  const ObjectIs = Object.is;
  const ObjectGetOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const ObjectGetPrototypeOf = Object.getPrototypeOf;
  const ObjectHasOwn = Object.hasOwn;
  const ObjectProtoToString = Object.prototype.toString;
  const ArrayIsArray = Array.isArray;
  const JSONStringify = JSON.stringify;
  const JSONParse = JSON.parse;
  const StringCtor = String;
  const NumberCtor = Number;
  const ParseInt = parseInt;
  const ParseFloat = parseFloat;
  const StringSlice = String.prototype.slice;
  const StringCharCodeAt = String.prototype.charCodeAt;
  const SymbolToString = Symbol.prototype.toString;
  const DateToISOString = Date.prototype.toISOString;
  const DateNow = Date.now;
  const RegExpToString = RegExp.prototype.toString;
  const MapForEach = Map.prototype.forEach;
  const SetForEach = Set.prototype.forEach;
  const MapSize = (ObjectGetOwnPropertyDescriptor(Map.prototype, 'size') as PropertyDescriptor).get as () => number;
  const SetSize = (ObjectGetOwnPropertyDescriptor(Set.prototype, 'size') as PropertyDescriptor).get as () => number;
  const PromiseCtor = Promise;
  const RangeErrorCtor = RangeError;
  const TypeErrorCtor = TypeError;
  const ErrorStackGetter = (ObjectGetOwnPropertyDescriptor(new Error(), 'stack') as PropertyDescriptor | undefined)?.get;

  const MAX_DEPTH = 2;
  const MAX_ENTRIES = 100;
  const MAX_ERROR_NAME_CHARS = 200;
  const MAX_ERROR_MESSAGE_CHARS = 4096;
  const STOP = {};

  let limit = 65536;
  let collected = '';
  let collectedBytes = 0;
  let truncated = false;
  let indent = '';
  const counts: Record<string, number> = ObjectCreate(null);
  const timers: Record<string, number> = ObjectCreate(null);

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
        const d = ownDescriptor(current as object, 'length');
        if (d !== undefined) {
          if (!d.data) {
            if (d.get === TypedArrayLength) return;
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

  const slice = (s: string, start: number, end?: number): string =>
    ReflectApply(StringSlice, s, end === undefined ? [start] : [start, end]);
  const code = (s: string, i: number): number => ReflectApply(StringCharCodeAt, s, [i]);

  /** An object with no prototype: writing to it never reaches an inherited setter. */
  const record = <T>(): T => ObjectCreate(null) as T;

  /**
   * Own descriptor of `key` on `o`, as a null-prototype record of the fields it owns, so
   * that reading `.value`/`.get`/`.set` never reaches an accessor a tool put on
   * `Object.prototype`. Undefined when `o` has no own `key`. (A Proxy's trap still runs:
   * no JavaScript can tell a Proxy apart; that is the tool's own code, under its deadline.)
   */
  function ownDescriptor(o: object, key: PropertyKey): {value?: unknown; get?: unknown; set?: unknown; data: boolean} | undefined {
    const d = ObjectGetOwnPropertyDescriptor(o, key);
    if (d === undefined) return undefined;
    const out = record<{value?: unknown; get?: unknown; set?: unknown; data: boolean}>();
    out.data = ObjectHasOwn(d, 'value');
    if (out.data) out.value = d.value;
    if (ObjectHasOwn(d, 'get')) out.get = d.get;
    if (ObjectHasOwn(d, 'set')) out.set = d.set;
    return out;
  }

  /**
   * The value of `key` on `o` or its prototypes when it is a data property; undefined for
   * an accessor (never called) or a missing key. Walks at most 32 prototypes.
   */
  function dataProperty(o: unknown, key: PropertyKey): unknown {
    let current = o;
    for (let depth = 0; depth < 32 && ((typeof current === 'object' && current !== null) || typeof current === 'function'); depth++) {
      const desc = ownDescriptor(current as object, key);
      if (desc !== undefined) return desc.data ? desc.value : undefined;
      current = ObjectGetPrototypeOf(current);
    }
    return undefined;
  }

  /** UTF-8 length of `s` (a lone surrogate counts 3 bytes, as U+FFFD). */
  function utf8Length(s: string): number {
    let bytes = 0;
    const n = s.length;
    for (let i = 0; i < n; i++) {
      const c = code(s, i);
      if (c < 0x80) bytes += 1;
      else if (c < 0x800) bytes += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && code(s, i + 1) >= 0xdc00 && code(s, i + 1) <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    }
    return bytes;
  }

  /** The longest prefix of `s` whose UTF-8 length is at most `maxBytes`; never splits a pair. */
  function cutToBytes(s: string, maxBytes: number): string {
    if (s.length * 3 <= maxBytes) return s;
    let bytes = 0;
    const n = s.length;
    for (let i = 0; i < n; i++) {
      const c = code(s, i);
      let size = 3;
      let units = 1;
      if (c < 0x80) size = 1;
      else if (c < 0x800) size = 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && code(s, i + 1) >= 0xdc00 && code(s, i + 1) <= 0xdfff) {
        size = 4;
        units = 2;
      }
      if (bytes + size > maxBytes) return slice(s, 0, i);
      bytes += size;
      i += units - 1;
    }
    return s;
  }

  // The line being formatted; `put` stops formatting once it exceeds `budget` chars
  // (a char is at least one UTF-8 byte, so a longer line cannot fit).
  let line = '';
  let budget = 0;
  function put(s: string): void {
    if (line.length + s.length > budget) {
      line += slice(s, 0, budget - line.length + 1);
      throw STOP;
    }
    line += s;
  }

  function isIdentifier(key: string): boolean {
    if (key.length === 0) return false;
    for (let i = 0; i < key.length; i++) {
      const c = code(key, i);
      const letter = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 36 || c === 95;
      if (!letter && !(i > 0 && c >= 48 && c <= 57)) return false;
    }
    return true;
  }

  function primitiveText(v: unknown): string {
    switch (typeof v) {
      case 'number': return ObjectIs(v, -0) ? '-0' : '' + v;
      case 'bigint': return '' + v + 'n';
      case 'symbol': return ReflectApply(SymbolToString, v, []);
      default: return '' + (v as string);
    }
  }

  interface Seen { value: object; next: Seen | undefined }

  function inspect(v: unknown, depth: number, seen: Seen | undefined, top: boolean): void {
    if (typeof v === 'string') {
      put(top ? v : JSONStringify(v));
      return;
    }
    if (typeof v === 'function') {
      const desc = ownDescriptor(v, 'name');
      const name = desc !== undefined && typeof desc.value === 'string' && desc.value !== '' ? desc.value : '(anonymous)';
      put('[Function: ' + name + ']');
      return;
    }
    if (typeof v !== 'object' || v === null) {
      put(primitiveText(v));
      return;
    }
    for (let s = seen; s !== undefined; s = s.next) {
      if (s.value === v) {
        put('[Circular]');
        return;
      }
    }
    const here: Seen = {value: v, next: seen};
    const tag: string = ReflectApply(ObjectProtoToString, v, []);
    if (tag === '[object Error]') {
      // `stack` is an own accessor of V8's (the same getter for every error); one a tool
      // defined is not called, nor are getters of `name` or `message`.
      const stackDesc = ownDescriptor(v, 'stack');
      const stack = stackDesc === undefined ? undefined
        : stackDesc.data ? stackDesc.value
        : stackDesc.get === ErrorStackGetter ? ReflectApply(ErrorStackGetter as () => unknown, v, []) : undefined;
      if (typeof stack === 'string') put(stack);
      else put(primitiveText(dataProperty(v, 'name')) + ': ' + primitiveText(dataProperty(v, 'message')));
      return;
    }
    if (tag === '[object Date]') {
      try {
        put(ReflectApply(DateToISOString, v, []));
      } catch (e) {
        if (e === STOP) throw e;
        put('Invalid Date');
      }
      return;
    }
    if (tag === '[object RegExp]') {
      put(ReflectApply(RegExpToString, v, []));
      return;
    }
    if (tag === '[object Promise]') {
      put('Promise {}');
      return;
    }
    if (tag === '[object Map]' || tag === '[object Set]') {
      const isMap = tag === '[object Map]';
      const size: number = ReflectApply(isMap ? MapSize : SetSize, v, []);
      put((isMap ? 'Map(' : 'Set(') + size + ') ');
      if (depth > MAX_DEPTH) {
        put(isMap ? '[Map]' : '[Set]');
        return;
      }
      put('{');
      let i = 0;
      ReflectApply(isMap ? MapForEach : SetForEach, v, [(value: unknown, key: unknown) => {
        if (i < MAX_ENTRIES) {
          put(i === 0 ? ' ' : ', ');
          if (isMap) {
            inspect(key, depth + 1, here, false);
            put(' => ');
          }
          inspect(value, depth + 1, here, false);
        }
        i++;
      }]);
      if (i > MAX_ENTRIES) put(', ... ' + (i - MAX_ENTRIES) + ' more items');
      put(i === 0 ? '}' : ' }');
      return;
    }
    if (ArrayIsArray(v)) {
      if (depth > MAX_DEPTH) {
        put('[Array]');
        return;
      }
      const length = (v as unknown[]).length;
      if (length === 0) {
        put('[]');
        return;
      }
      put('[ ');
      const shown = length < MAX_ENTRIES ? length : MAX_ENTRIES;
      for (let i = 0; i < shown; i++) {
        if (i > 0) put(', ');
        const desc = ownDescriptor(v, i);
        if (desc === undefined) put('<empty>');
        else if (!desc.data) put(desc.set && !desc.get ? '[Setter]' : desc.set ? '[Getter/Setter]' : '[Getter]');
        else inspect(desc.value, depth + 1, here, false);
      }
      if (length > shown) put(', ... ' + (length - shown) + ' more items');
      put(' ]');
      return;
    }
    if (depth > MAX_DEPTH) {
      put('[Object]');
      return;
    }
    const keys = ObjectKeys(v);
    if (keys.length === 0) {
      put('{}');
      return;
    }
    put('{ ');
    const shown = keys.length < MAX_ENTRIES ? keys.length : MAX_ENTRIES;
    for (let i = 0; i < shown; i++) {
      const key = keys[i] as string;
      if (i > 0) put(', ');
      put(isIdentifier(key) ? key : JSONStringify(key));
      put(': ');
      const desc = ownDescriptor(v, key);
      if (desc === undefined) put('undefined');
      else if (!desc.data) put(desc.set && !desc.get ? '[Setter]' : desc.set ? '[Getter/Setter]' : '[Getter]');
      else inspect(desc.value, depth + 1, here, false);
    }
    if (keys.length > shown) put(', ... ' + (keys.length - shown) + ' more items');
    put(' }');
  }

  function formatArgs(args: unknown[]): void {
    let next = 0;
    const first = args[0];
    if (typeof first === 'string' && args.length > 1) {
      next = 1;
      let plainFrom = 0;
      for (let i = 0; i < first.length - 1; i++) {
        if (code(first, i) !== 37 /* % */) continue;
        const spec = code(first, i + 1);
        if (spec === 37) {
          put(slice(first, plainFrom, i));
          put('%');
        } else {
          // s d i f j o O c
          const known = spec === 115 || spec === 100 || spec === 105 || spec === 102 || spec === 106
            || spec === 111 || spec === 79 || spec === 99;
          if (!known || next >= args.length) continue;
          put(slice(first, plainFrom, i));
          const arg = args[next];
          next++;
          if (spec === 115) {
            if (typeof arg === 'string') put(arg);
            else inspect(arg, MAX_DEPTH, undefined, false);
          } else if (spec === 100 || spec === 105) {
            put(typeof arg === 'bigint' ? '' + arg + 'n'
              : typeof arg === 'symbol' ? 'NaN'
              : primitiveText(spec === 105 ? ParseInt(arg as string) : NumberCtor(arg)));
          } else if (spec === 102) {
            put(typeof arg === 'symbol' ? 'NaN' : primitiveText(ParseFloat(arg as string)));
          } else if (spec === 106) {
            let json: string;
            try {
              json = '' + JSONStringify(arg);
            } catch {
              json = '[Circular]';
            }
            put(json);
          } else if (spec === 111 || spec === 79) {
            inspect(arg, 0, undefined, false);
          }
          // %c: the CSS argument is consumed and nothing is printed.
        }
        plainFrom = i + 2;
        i++;
      }
      put(slice(first, plainFrom));
    }
    for (let i = next; i < args.length; i++) {
      if (i > 0) put(' ');
      inspect(args[i], 0, undefined, true);
    }
  }

  function overflowError(): RangeError {
    return new RangeErrorCtor('Console output exceeded the limit of ' + limit + ' bytes; the call is stopped.');
  }

  /** Appends one console line, or cuts it at the limit and throws. */
  function write(args: unknown[], prefix: string): void {
    if (truncated) throw overflowError();
    const remaining = limit - collectedBytes;
    line = '';
    budget = remaining;
    let over = false;
    try {
      put(indent);
      put(prefix);
      formatArgs(args);
      put('\n');
    } catch (e) {
      if (e !== STOP) {
        line = '';
        throw e;
      }
      over = true;
    }
    const text = line;
    line = '';
    if (!over) {
      const bytes = utf8Length(text);
      if (bytes <= remaining) {
        collected += text;
        collectedBytes += bytes;
        return;
      }
    }
    const cut = cutToBytes(text, remaining);
    collected += cut;
    collectedBytes += utf8Length(cut);
    truncated = true;
    throw overflowError();
  }

  const label = (value: unknown): string => (value === undefined ? 'default' : typeof value === 'symbol' ? ReflectApply(SymbolToString, value, []) : StringCtor(value));

  const consoleObject = {
    log(...args: unknown[]): void { write(args, ''); },
    info(...args: unknown[]): void { write(args, ''); },
    debug(...args: unknown[]): void { write(args, ''); },
    warn(...args: unknown[]): void { write(args, ''); },
    error(...args: unknown[]): void { write(args, ''); },
    trace(...args: unknown[]): void { write(args, 'Trace: '); },
    dir(value: unknown): void { write([value], ''); },
    table(...args: unknown[]): void { write(args, ''); },
    assert(condition: unknown, ...args: unknown[]): void {
      if (!condition) write(args, args.length > 0 ? 'Assertion failed: ' : 'Assertion failed');
    },
    group(...args: unknown[]): void {
      if (args.length > 0) write(args, '');
      indent += '  ';
    },
    groupCollapsed(...args: unknown[]): void {
      if (args.length > 0) write(args, '');
      indent += '  ';
    },
    groupEnd(): void { indent = slice(indent, 2); },
    count(name?: unknown): void {
      const key = label(name);
      const n = (counts[key] ?? 0) + 1;
      counts[key] = n;
      write([key + ': ' + n], '');
    },
    countReset(name?: unknown): void { counts[label(name)] = 0; },
    time(name?: unknown): void { timers[label(name)] = DateNow(); },
    timeLog(name?: unknown, ...args: unknown[]): void {
      const key = label(name);
      const start = timers[key];
      write(args, start === undefined ? 'No such label: ' + key : key + ': ' + (DateNow() - start) + 'ms' + (args.length > 0 ? ' ' : ''));
    },
    timeEnd(name?: unknown): void {
      const key = label(name);
      const start = timers[key];
      write([], start === undefined ? 'No such label: ' + key : key + ': ' + (DateNow() - start) + 'ms');
      delete timers[key];
    },
  };
  ObjectDefineProperty(G, 'console', {value: consoleObject, writable: true, configurable: true, enumerable: false});

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

  async function run(namespace: unknown, argsJson: unknown): Promise<RunnerResult> {
    let error: {name: string; message: string} | undefined;
    let value: unknown;
    try {
      let fn: unknown;
      try {
        fn = (namespace as {default?: unknown}).default;
      } catch {
        // The default export is still in its temporal dead zone: the module's top-level
        // await has not settled, and without timers or host callbacks it never will.
        await new PromiseCtor<never>(() => {});
      }
      if (typeof fn !== 'function') throw new TypeErrorCtor('The tool module has no default export function.');
      const args: unknown = typeof argsJson === 'string' ? JSONParse(argsJson) : undefined;
      value = await ReflectApply(fn, undefined, [args]);
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
        json = typeof value === 'string' && value.length > limit
          ? JSONStringify(slice(value, 0, limit))
          : JSONStringify(value);
      } catch (e) {
        const d = describe(e);
        error = d.name === 'TypeError' ? notSerialisable(d.message) : d;
      }
      if (error === undefined) {
        if (typeof json !== 'string') {
          error = notSerialisable(typeof value === 'function' ? 'a function' : typeof value === 'symbol' ? 'a symbol' : 'JSON cannot represent it');
        } else if (json.length > limit || utf8Length(json) > limit) {
          stdout = cutToBytes(json, limit);
          resultTruncated = true;
        } else stdout = json;
      }
    }
    // A null-prototype record: an `error` (or other) setter a tool put on
    // Object.prototype cannot swallow the failure or run here.
    const result = record<RunnerResult>();
    result.stdout = stdout;
    result.stderr = collected;
    result.truncated = truncated || resultTruncated;
    if (error !== undefined) result.error = error;
    return result;
  }

  return function entry(op: EntryOp, a?: unknown, b?: unknown): unknown {
    if (op === 'init') {
      if (typeof a === 'number' && a >= 0) limit = a;
      return undefined;
    }
    if (op === 'run') return run(a, b);
    if (op === 'warm') {
      void run({default: function warm(value: unknown): unknown { return value; }}, '{"warm":[1,"x",true,null]}');
      return undefined;
    }
    if (op === 'drain') {
      const result = record<DrainResult>();
      result.stderr = collected;
      result.truncated = truncated;
      return result;
    }
    return undefined;
  };
}

/**
 * Source text of a script whose completion value is the entry function; evaluate it
 * with isolated-vm's `context.eval(source, {reference: true})`.
 */
export function preludeSource(removeWebAssembly: boolean): string {
  return `(${isolatePrelude.toString()})(${removeWebAssembly ? 'true' : 'false'})`;
}
