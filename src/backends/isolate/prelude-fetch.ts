/**
 * The isolate's `fetch`, one of the prelude's modules (see prelude.ts): a WHATWG subset whose
 * requests the host performs (src/egress/isolate-fetch.ts, through the worker and the
 * supervisor). `createFetch` is sent into each isolate as source text and called before any
 * tool code runs, so it captures the built-ins it uses then; it must not refer to anything
 * outside its body. Only a call whose profile grants egress gets the global `fetch` (`install`);
 * without one there is none, as before.
 *
 * The boundary: the host callback is held in this closure only; what crosses is strings (the
 * request as JSON text with the body as a binary string, one char per byte; the response as JSON
 * text with the body in base64, so every byte costs 4/3 of a char whatever its value, where a
 * JSON-escaped binary string cost up to 6), copied both ways; the Response and Headers objects are made here, in the isolate.
 * Subset: `fetch(url, {method, headers, body})` where url is a string (or anything whose
 * String() is the URL), headers a plain object or an array of pairs, body a string, an
 * ArrayBuffer, a typed array, or another object (sent as JSON, content-type application/json
 * unless set). Response: status, statusText, ok, url, redirected (false: redirects are not
 * followed, a 3xx is returned as it is), headers (get, has, entries, keys, values, forEach,
 * iteration), text(), json(), arrayBuffer(), bodyUsed. No streams, no AbortSignal, no Request
 * objects, no FormData.
 */
export function createFetch(): IsolateFetchModule {
  'use strict';
  const PromiseCtor = Promise;
  const JSONStringify = JSON.stringify;
  const JSONParse = JSON.parse;
  const StringCtor = String;
  const TypeErrorCtor = TypeError;
  const FromCharCode = String.fromCharCode;
  const CharCodeAt = String.prototype.charCodeAt;
  const ToLowerCase = String.prototype.toLowerCase;
  const ToWellFormed = (String.prototype as unknown as {toWellFormed: () => string}).toWellFormed;
  const ReflectApply = Reflect.apply;
  const Escape = (globalThis as unknown as {escape: (s: string) => string}).escape;
  const Unescape = (globalThis as unknown as {unescape: (s: string) => string}).unescape;
  const EncodeURIComponent = encodeURIComponent;
  const DecodeURIComponent = decodeURIComponent;
  const U8 = Uint8Array;
  const ObjectKeys = Object.keys;
  const ObjectCreate = Object.create;
  const ObjectDefineProperty = Object.defineProperty;
  const ObjectGetPrototypeOf = Object.getPrototypeOf;
  const ObjectGetOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const ArrayIsArray = Array.isArray;
  const IsView = ArrayBuffer.isView;
  const ABByteLength = (ObjectGetOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength') as PropertyDescriptor).get as () => number;
  const TypedArrayProto = ObjectGetPrototypeOf(Uint8Array.prototype) as object;
  const TABuffer = (ObjectGetOwnPropertyDescriptor(TypedArrayProto, 'buffer') as PropertyDescriptor).get as () => ArrayBuffer;
  const TAOffset = (ObjectGetOwnPropertyDescriptor(TypedArrayProto, 'byteOffset') as PropertyDescriptor).get as () => number;
  const TALength = (ObjectGetOwnPropertyDescriptor(TypedArrayProto, 'byteLength') as PropertyDescriptor).get as () => number;
  const IteratorSymbol = Symbol.iterator;
  const ObjectProtoToString = Object.prototype.toString;

  const put = (array: unknown[], index: number, value: unknown): void => {
    ObjectDefineProperty(array, index, {value, writable: true, enumerable: true, configurable: true});
  };
  const lower = (s: string): string => ReflectApply(ToLowerCase, s, []) as string;

  /** Bytes as a binary string (one char per byte). */
  function bytesToBinary(bytes: Uint8Array, length: number): string {
    let out = '';
    for (let i = 0; i < length; i++) out += FromCharCode(bytes[i] as number);
    return out;
  }
  /** base64 (RFC 4648 §4, as the host writes it: padded, no line breaks) to bytes; anything else throws. */
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const B64Index = new U8(128).fill(255);
  for (let i = 0; i < 64; i++) B64Index[ReflectApply(CharCodeAt, B64, [i]) as number] = i;
  function base64ToBytes(text: string): Uint8Array {
    if (text.length % 4 !== 0) throw new TypeErrorCtor('fetch: the response body could not be read.');
    let pad = 0;
    if (text.length > 0 && ReflectApply(CharCodeAt, text, [text.length - 1]) === 61) pad++;
    if (text.length > 1 && ReflectApply(CharCodeAt, text, [text.length - 2]) === 61) pad++;
    const bytes = new U8((text.length / 4) * 3 - pad);
    let o = 0;
    for (let i = 0; i < text.length; i += 4) {
      let n = 0;
      for (let j = 0; j < 4; j++) {
        const c = ReflectApply(CharCodeAt, text, [i + j]) as number;
        const v = c === 61 && i + j >= text.length - pad ? 0 : c < 128 ? (B64Index[c] as number) : 255;
        if (v === 255) throw new TypeErrorCtor('fetch: the response body could not be read.');
        n = (n << 6) | v;
      }
      if (o < bytes.length) bytes[o++] = (n >> 16) & 255;
      if (o < bytes.length) bytes[o++] = (n >> 8) & 255;
      if (o < bytes.length) bytes[o++] = n & 255;
    }
    return bytes;
  }
  /** UTF-8 of a string, as a binary string (lone surrogates become U+FFFD, as TextEncoder does). */
  function utf8Binary(text: string): string {
    return Unescape(EncodeURIComponent(ReflectApply(ToWellFormed, text, []) as string));
  }
  /** A binary string decoded as UTF-8; invalid sequences become U+FFFD (the WHATWG decoder's replacement mode). */
  function decodeUtf8(binary: string): string {
    try {
      return DecodeURIComponent(Escape(binary));
    } catch {
      let out = '';
      let i = 0;
      const at = (k: number): number => ReflectApply(CharCodeAt, binary, [k]) as number;
      while (i < binary.length) {
        const b = at(i);
        let need = 0;
        let cp = 0;
        if (b < 0x80) { out += FromCharCode(b); i++; continue; }
        if (b >= 0xc2 && b <= 0xdf) { need = 1; cp = b & 0x1f; } else if (b >= 0xe0 && b <= 0xef) { need = 2; cp = b & 0x0f; } else if (b >= 0xf0 && b <= 0xf4) { need = 3; cp = b & 0x07; } else { out += '\ufffd'; i++; continue; }
        let j = 1;
        for (; j <= need && i + j < binary.length; j++) {
          const c = at(i + j);
          if ((c & 0xc0) !== 0x80) break;
          cp = (cp << 6) | (c & 0x3f);
        }
        if (j <= need || (need === 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need === 3 && (cp < 0x10000 || cp > 0x10ffff))) {
          out += '\ufffd';
          i += j === 1 ? 1 : j;
          continue;
        }
        if (cp > 0xffff) { cp -= 0x10000; out += FromCharCode(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff)); } else out += FromCharCode(cp);
        i += need + 1;
      }
      return out;
    }
  }

  /** The request body as a binary string, and the content type it implies (if any). */
  function bodyOf(body: unknown): {binary: string | null; type: string | undefined} {
    if (body === undefined || body === null) return {binary: null, type: undefined};
    if (typeof body === 'string') return {binary: utf8Binary(body), type: 'text/plain;charset=UTF-8'};
    if (ReflectApply(ObjectProtoToString, body, []) === '[object ArrayBuffer]') {
      const length = ReflectApply(ABByteLength, body, []) as number;
      return {binary: bytesToBinary(new U8(body as ArrayBuffer), length), type: undefined};
    }
    if (IsView(body)) {
      if (ReflectApply(ObjectProtoToString, body, []) === '[object DataView]') throw new TypeErrorCtor('fetch: a DataView body is not supported; pass a Uint8Array or an ArrayBuffer.');
      const buffer = ReflectApply(TABuffer, body, []) as ArrayBuffer;
      const offset = ReflectApply(TAOffset, body, []) as number;
      const length = ReflectApply(TALength, body, []) as number;
      return {binary: bytesToBinary(new U8(buffer, offset, length), length), type: undefined};
    }
    if (typeof body === 'object') {
      const json = JSONStringify(body);
      if (typeof json !== 'string') throw new TypeErrorCtor('fetch: the body cannot be written as JSON.');
      return {binary: utf8Binary(json), type: 'application/json'};
    }
    return {binary: utf8Binary(StringCtor(body)), type: 'text/plain;charset=UTF-8'};
  }

  /** Header pairs from a plain object or an array of [name, value] pairs (names lower case). */
  function headerPairs(headers: unknown): string[][] {
    const out: string[][] = [];
    if (headers === undefined || headers === null) return out;
    if (typeof headers !== 'object') throw new TypeErrorCtor('fetch: headers must be an object or an array of [name, value] pairs.');
    if (ArrayIsArray(headers)) {
      for (let i = 0; i < headers.length; i++) {
        const pair = headers[i] as unknown;
        if (!ArrayIsArray(pair) || pair.length !== 2) throw new TypeErrorCtor('fetch: each header must be a [name, value] pair.');
        put(out, out.length, [lower(StringCtor(pair[0])), StringCtor(pair[1])]);
      }
      return out;
    }
    const entries = (headers as {entries?: unknown}).entries;
    if (typeof entries === 'function' && (headers as {[IteratorSymbol]?: unknown})[IteratorSymbol] !== undefined) {
      for (const pair of ReflectApply(entries, headers, []) as Iterable<unknown[]>) put(out, out.length, [lower(StringCtor(pair[0])), StringCtor(pair[1])]);
      return out;
    }
    const keys = ObjectKeys(headers);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string;
      put(out, out.length, [lower(key), StringCtor((headers as Record<string, unknown>)[key])]);
    }
    return out;
  }

  function makeHeaders(pairs: string[][]): object {
    const list = pairs;
    const find = (name: string): string | null => {
      const key = lower(StringCtor(name));
      let value: string | null = null;
      for (let i = 0; i < list.length; i++) {
        const pair = list[i] as string[];
        if (pair[0] === key) value = value === null ? pair[1] as string : value + ', ' + (pair[1] as string);
      }
      return value;
    };
    const headers = {
      get: (name: string): string | null => find(name),
      has: (name: string): boolean => find(name) !== null,
      *entries(): IterableIterator<[string, string]> {
        for (let i = 0; i < list.length; i++) yield [(list[i] as string[])[0] as string, (list[i] as string[])[1] as string];
      },
      *keys(): IterableIterator<string> {
        for (let i = 0; i < list.length; i++) yield (list[i] as string[])[0] as string;
      },
      *values(): IterableIterator<string> {
        for (let i = 0; i < list.length; i++) yield (list[i] as string[])[1] as string;
      },
      forEach(fn: (value: string, key: string, parent: unknown) => void): void {
        for (let i = 0; i < list.length; i++) fn((list[i] as string[])[1] as string, (list[i] as string[])[0] as string, headers);
      },
      [IteratorSymbol](): IterableIterator<[string, string]> {
        return headers.entries();
      },
    };
    return headers;
  }

  function makeResponse(r: {status: number; statusText: string; url: string; headers: string[][]; body64: string}): object {
    let used = false;
    const takeBytes = (): Uint8Array => {
      if (used) throw new TypeErrorCtor('fetch: the response body was already read.');
      used = true;
      return base64ToBytes(r.body64);
    };
    const take = (): string => {
      const bytes = takeBytes();
      return bytesToBinary(bytes, bytes.length);
    };
    return {
      status: r.status,
      statusText: r.statusText,
      ok: r.status >= 200 && r.status <= 299,
      url: r.url,
      redirected: false,
      type: 'basic',
      headers: makeHeaders(r.headers),
      get bodyUsed(): boolean {
        return used;
      },
      async text(): Promise<string> {
        return decodeUtf8(take());
      },
      async json(): Promise<unknown> {
        return JSONParse(decodeUtf8(take()));
      },
      async arrayBuffer(): Promise<ArrayBuffer> {
        return takeBytes().buffer as ArrayBuffer;
      },
      async bytes(): Promise<Uint8Array> {
        return takeBytes();
      },
    };
  }

  /** Requests sent and not yet answered: id → resolve (a null-prototype record; nothing inherited is read or written). */
  const pending = ObjectCreate(null) as Record<number, (json: string) => void>;
  let seq = 0;
  const module = ObjectCreate(null) as IsolateFetchModule;
  module.deliver = (id: unknown, responseJson: unknown): void => {
    if (typeof id !== 'number' || typeof responseJson !== 'string') return;
    const resolve = pending[id];
    if (resolve === undefined) return;
    delete pending[id];
    resolve(responseJson);
  };
  module.install = (G: Record<string, unknown>, send: (id: number, requestJson: string) => void): void => {
    async function fetch(input: unknown, init?: unknown): Promise<object> {
      const options = (init ?? {}) as {method?: unknown; headers?: unknown; body?: unknown};
      const url = StringCtor(input);
      const method = options.method === undefined ? 'GET' : StringCtor(options.method);
      const headers = headerPairs(options.headers);
      const {binary, type} = bodyOf(options.body);
      let hasType = false;
      for (let i = 0; i < headers.length; i++) if ((headers[i] as string[])[0] === 'content-type') hasType = true;
      if (type !== undefined && !hasType) put(headers, headers.length, ['content-type', type]);
      const request = ObjectCreate(null) as Record<string, unknown>;
      request.method = method;
      request.url = url;
      request.headers = headers;
      request.body = binary;
      const id = ++seq;
      const text = JSONStringify(request) as string;
      const answerJson = await new PromiseCtor<string>((resolve) => {
        pending[id] = resolve;
        send(id, text);
      });
      const answer = JSONParse(answerJson) as {ok: boolean; message?: string; status: number; statusText: string; url: string; headers: string[][]; body64: string};
      if (answer.ok !== true) throw new TypeErrorCtor(typeof answer.message === 'string' ? answer.message : 'fetch failed');
      return makeResponse(answer);
    }
    ObjectDefineProperty(G, 'fetch', {value: fetch, writable: true, enumerable: false, configurable: true});
  };
  return module;
}

/**
 * What `createFetch` returns. `install(G, send)` defines the global `fetch`; each request is
 * handed to `send` (the host's fire-and-forget callback) with a numeric `id` and as JSON text, and
 * the host answers later by calling the prelude's entry with `deliver(id, responseJson)`, which
 * settles that request's promise inside the isolate (its continuation runs in that task, under
 * the call's own-time limit).
 */
export interface IsolateFetchModule {
  install(G: Record<string, unknown>, send: (id: number, requestJson: string) => void): void;
  deliver(id: unknown, responseJson: unknown): void;
}
