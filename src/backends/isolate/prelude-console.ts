/**
 * The console of an isolate, one of the prelude's modules (see prelude.ts): `console.*`
 * formatted like Node's `util.format` in a reduced form, collected inside the isolate as
 * text capped in UTF-8 bytes. `createConsole` is sent into each isolate as source text
 * (`Function.prototype.toString`) and called there before any tool code runs, with the
 * built-ins captured by prelude-primordials.ts, and must not refer to anything outside its
 * body; the same function runs in Node for unit tests.
 *
 * It reads only what it owns where a tool could interfere: null-prototype records,
 * descriptors read field by field with own-property checks, data properties only (a
 * tool's getters are shown as `[Getter]`, never called; for an error only V8's own
 * `stack` getter runs).
 */

import type {Primordials} from './prelude-primordials.ts';

/** What `createConsole` returns (a null-prototype record). */
export interface PreludeConsole {
  /** The `console` object to install as the isolate's global. */
  console: Record<string, (...args: unknown[]) => void>;
  /** Sets the cap of the collected text, in UTF-8 bytes (default 65536). */
  setLimit: (bytes: number) => void;
  /** The cap, in UTF-8 bytes. */
  limit: () => number;
  /** The text collected so far (one line per console call). */
  text: () => string;
  /** Whether the text reached the cap (every later console call then throws). */
  isTruncated: () => boolean;
  /** UTF-8 length of a string (a lone surrogate counts 3 bytes, as U+FFFD). */
  utf8Length: (s: string) => number;
  /** The longest prefix of a string whose UTF-8 length is at most `maxBytes`; never splits a pair. */
  cutToBytes: (s: string, maxBytes: number) => string;
  /** `String.prototype.slice`, as captured before tool code. */
  slice: (s: string, start: number, end?: number) => string;
  /** A new object with no prototype. */
  record: <T>() => T;
  /** The value of a data property (own or inherited, at most 32 prototypes up); undefined for an accessor, never called. */
  dataProperty: (o: unknown, key: PropertyKey) => unknown;
  /** Text of a primitive as `String` would give it (`-0` kept, `1n` for bigints, symbols described). */
  primitiveText: (v: unknown) => string;
}

/**
 * Creates the console and its state. `console` methods: `log`, `info`, `debug`, `warn`,
 * `error`, `trace`, `dir`, `table`, `assert`, `group`/`groupCollapsed`/`groupEnd`,
 * `count`/`countReset`, `time`/`timeLog`/`timeEnd`. Arguments are formatted like Node's
 * `util.format` in a reduced form (`%s %d %i %f %j %o %O %c %%`; objects to depth 2, 100
 * entries each; getters shown as `[Getter]`). One line per call. When the text would
 * exceed the cap it is cut at the cap (on a UTF-8 boundary) and that call and every
 * later one throw a `RangeError`, which stops a tool that does not catch it.
 *
 * Does NOT guarantee: that formatting matches Node's exactly, or that a tool cannot
 * make its own lines ugly (e.g. a Proxy with traps runs tool code while formatted).
 */
export function createConsole(primordials: Primordials): PreludeConsole {
  'use strict';
  const {
    ReflectApply, ObjectKeys, ObjectCreate, ObjectIs, ObjectGetOwnPropertyDescriptor, ObjectGetPrototypeOf, ObjectHasOwn,
    ObjectProtoToString, ArrayIsArray, JSONStringify, StringCtor, NumberCtor, ParseInt, ParseFloat, StringSlice,
    StringCharCodeAt, SymbolToString, DateToISOString, DateNow, RegExpToString, MapForEach, SetForEach, MapSize, SetSize,
    RangeErrorCtor, ErrorStackGetter,
  } = primordials;

  const MAX_DEPTH = 2;
  const MAX_ENTRIES = 100;
  const STOP = {};

  let limit = 65536;
  let collected = '';
  let collectedBytes = 0;
  let truncated = false;
  let indent = '';
  const counts: Record<string, number> = ObjectCreate(null);
  const timers: Record<string, number> = ObjectCreate(null);

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

  const out = record<PreludeConsole>();
  out.console = consoleObject;
  out.setLimit = (bytes: number): void => {
    limit = bytes;
  };
  out.limit = (): number => limit;
  out.text = (): string => collected;
  out.isTruncated = (): boolean => truncated;
  out.utf8Length = utf8Length;
  out.cutToBytes = cutToBytes;
  out.slice = slice;
  out.record = record;
  out.dataProperty = dataProperty;
  out.primitiveText = primitiveText;
  return out;
}
