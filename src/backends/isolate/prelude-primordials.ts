/**
 * The primordials of an isolate, one of the prelude's modules (see prelude.ts): the
 * built-ins the other modules call, captured once before any tool code runs, so that a
 * tool that replaces `JSON.stringify`, `Reflect.apply` or `String.prototype.slice` cannot
 * change what the prelude does. `capturePrimordials` is sent into each isolate as source
 * text (`Function.prototype.toString`), called there first, and its record is passed to
 * the run protocol and the console; it must not refer to anything outside its body. The
 * same function runs in Node for the console's unit tests.
 */

/** What `capturePrimordials` returns: a null-prototype record, reachable only from the prelude's closures. */
export interface Primordials {
  ReflectApply: typeof Reflect.apply;
  ReflectConstruct: typeof Reflect.construct;
  ReflectOwnKeys: typeof Reflect.ownKeys;
  ObjectKeys: typeof Object.keys;
  ObjectCreate: typeof Object.create;
  ObjectIs: typeof Object.is;
  ObjectDefineProperty: typeof Object.defineProperty;
  ObjectGetOwnPropertyDescriptor: typeof Object.getOwnPropertyDescriptor;
  ObjectGetPrototypeOf: typeof Object.getPrototypeOf;
  ObjectHasOwn: typeof Object.hasOwn;
  ObjectProtoToString: typeof Object.prototype.toString;
  ArrayIsArray: typeof Array.isArray;
  JSONStringify: typeof JSON.stringify;
  JSONParse: typeof JSON.parse;
  StringCtor: StringConstructor;
  NumberCtor: NumberConstructor;
  PromiseCtor: PromiseConstructor;
  PromiseThen: typeof Promise.prototype.then;
  RangeErrorCtor: RangeErrorConstructor;
  TypeErrorCtor: TypeErrorConstructor;
  ParseInt: typeof parseInt;
  ParseFloat: typeof parseFloat;
  StringSlice: typeof String.prototype.slice;
  StringCharCodeAt: typeof String.prototype.charCodeAt;
  SymbolToString: typeof Symbol.prototype.toString;
  DateToISOString: typeof Date.prototype.toISOString;
  DateNow: typeof Date.now;
  RegExpToString: typeof RegExp.prototype.toString;
  MapForEach: typeof Map.prototype.forEach;
  SetForEach: typeof Set.prototype.forEach;
  /** The getter of `Map.prototype.size`. */
  MapSize: () => number;
  /** The getter of `Set.prototype.size`. */
  SetSize: () => number;
  /** V8's own getter of an error's `stack` (the same for every error), when it is an accessor. */
  ErrorStackGetter: (() => unknown) | undefined;
}

/**
 * Captures the built-ins in a null-prototype record (so reading one never reaches an
 * inherited getter). Call it before any tool code runs in the realm.
 *
 * Does NOT guarantee: anything when called after tool code ran (it captures whatever the
 * globals are then), or that a captured built-in behaves when called on a tool's Proxy
 * (the Proxy's traps run, as the tool's own code).
 */
export function capturePrimordials(): Primordials {
  'use strict';
  const getter = (o: object, key: PropertyKey): (() => unknown) | undefined => Object.getOwnPropertyDescriptor(o, key)?.get;
  // An object literal made null-prototype before anyone can read it.
  return Object.setPrototypeOf({
    ReflectApply: Reflect.apply,
    ReflectConstruct: Reflect.construct,
    ReflectOwnKeys: Reflect.ownKeys,
    ObjectKeys: Object.keys,
    ObjectCreate: Object.create,
    ObjectIs: Object.is,
    ObjectDefineProperty: Object.defineProperty,
    ObjectGetOwnPropertyDescriptor: Object.getOwnPropertyDescriptor,
    ObjectGetPrototypeOf: Object.getPrototypeOf,
    ObjectHasOwn: Object.hasOwn,
    ObjectProtoToString: Object.prototype.toString,
    ArrayIsArray: Array.isArray,
    JSONStringify: JSON.stringify,
    JSONParse: JSON.parse,
    StringCtor: String,
    NumberCtor: Number,
    PromiseCtor: Promise,
    PromiseThen: Promise.prototype.then,
    RangeErrorCtor: RangeError,
    TypeErrorCtor: TypeError,
    ParseInt: parseInt,
    ParseFloat: parseFloat,
    StringSlice: String.prototype.slice,
    StringCharCodeAt: String.prototype.charCodeAt,
    SymbolToString: Symbol.prototype.toString,
    DateToISOString: Date.prototype.toISOString,
    DateNow: Date.now,
    RegExpToString: RegExp.prototype.toString,
    MapForEach: Map.prototype.forEach,
    SetForEach: Set.prototype.forEach,
    MapSize: getter(Map.prototype, 'size') as () => number,
    SetSize: getter(Set.prototype, 'size') as () => number,
    ErrorStackGetter: getter(new Error(), 'stack'),
  }, null) as Primordials;
}
