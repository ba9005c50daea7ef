/**
 * The stdio framing guard: splits stdin into newline-delimited JSON-RPC messages, answers the
 * ones the SDK would drop or die on (invalid JSON, batches, non-messages, oversized lines) and
 * passes only valid messages on to the SDK's stdio transport.
 */
import {Transform, type TransformCallback} from 'node:stream';
import {
  isJSONRPCErrorResponse,
  isJSONRPCNotification,
  isJSONRPCRequest,
  isJSONRPCResultResponse,
  type JSONRPCErrorResponse,
} from '@modelcontextprotocol/server';

/** Largest stdio message accepted, in bytes of one line (4 MiB); longer lines are answered with an error and discarded. */
export const MAX_STDIO_MESSAGE_BYTES = 4 * 1024 * 1024;

/** JSON-RPC 2.0 §5.1 error codes the guard answers with. */
const PARSE_ERROR = -32700;
const INVALID_REQUEST = -32600;
const NEWLINE = Buffer.from('\n');

/**
 * A Transform from raw stdin bytes to whole, valid JSON-RPC message lines (MCP transports
 * §stdio: newline-delimited, no embedded newlines). Each line that is not one is answered through
 * `reply` as JSON-RPC 2.0 §5.1 says, and not passed on:
 * - not JSON: `-32700` Parse error, id null;
 * - a JSON array (a batch; removed from MCP in 2025-06-18) or any value that is not a JSON-RPC
 *   request, notification or response: `-32600` Invalid Request, with the message's id when it
 *   has a usable one (string or number), else null;
 * - a line longer than `maxBytes`: `-32600` as soon as the cap is passed, with the id when a
 *   top-level `"id"` could be read from the first `maxBytes` bytes; the rest of the line is
 *   discarded as it arrives, never buffered. The filter holds at most about twice `maxBytes`
 *   (the line being read and the last line passed on), however the input is chunked.
 *
 * Blank lines are ignored. A partial last line when stdin ends is dropped (it was never sent
 * whole). Not guaranteed: that `reply`s are ordered with the answers to the valid messages
 * around them (JSON-RPC does not order responses).
 */
export class JsonRpcLineFilter extends Transform {
  readonly #maxBytes: number;
  readonly #reply: (message: JSONRPCErrorResponse) => Promise<void> | void;
  /** Refusals of the current chunk still being written: stdin is not read on until they are (backpressure). */
  #sending: Array<Promise<void>> = [];
  /** The current line so far: `#buffer.subarray(0, #length)`; grows by doubling up to `maxBytes`. */
  #buffer = Buffer.alloc(0);
  #length = 0;
  #discarding = false;

  /**
   * @param reply sends an error response to the client (e.g. the stdio transport's `send`); must not
   *   throw or reject. When it returns a promise, no more input is read until it settles, so a client
   *   that floods refused lines without reading its answers stalls itself, not the server's memory.
   * @param options.maxBytes the line cap in bytes (default `MAX_STDIO_MESSAGE_BYTES`)
   */
  constructor(reply: (message: JSONRPCErrorResponse) => Promise<void> | void, options: {maxBytes?: number} = {}) {
    super();
    this.#maxBytes = options.maxBytes ?? MAX_STDIO_MESSAGE_BYTES;
    this.#reply = reply;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let start = 0;
    while (start <= chunk.length) {
      const newline = chunk.indexOf(0x0a, start);
      const piece = chunk.subarray(start, newline === -1 ? chunk.length : newline);
      if (!this.#discarding && piece.length > 0) {
        if (this.#length + piece.length > this.#maxBytes) {
          this.#append(piece.subarray(0, this.#maxBytes - this.#length));
          const id = topLevelId(this.#buffer.subarray(0, this.#length));
          this.#reset();
          this.#discarding = true;
          this.#refuse(INVALID_REQUEST, `Invalid Request: the message is longer than ${this.#maxBytes} bytes (the stdio limit); it was discarded`, id);
        } else {
          this.#append(piece);
        }
      }
      if (newline === -1) break;
      if (this.#discarding) this.#discarding = false;
      else this.#line(Buffer.from(this.#buffer.subarray(0, this.#length)));
      this.#reset();
      start = newline + 1;
    }
    if (this.#sending.length === 0) {
      callback();
      return;
    }
    const sending = this.#sending;
    this.#sending = [];
    void Promise.allSettled(sending).then(() => callback());
  }

  override _flush(callback: TransformCallback): void {
    this.#reset();
    callback();
  }

  /** Copies `piece` to the end of the current line (amortised O(1) per byte, whatever the chunking). */
  #append(piece: Buffer): void {
    const needed = this.#length + piece.length;
    if (needed > this.#buffer.length) {
      const grown = Buffer.allocUnsafe(Math.min(this.#maxBytes, Math.max(needed, 2 * this.#buffer.length, 4096)));
      this.#buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = grown;
    }
    piece.copy(this.#buffer, this.#length);
    this.#length = needed;
  }

  /** Forgets the current line; a buffer grown past 64 KiB is released rather than kept for the next one. */
  #reset(): void {
    this.#length = 0;
    if (this.#buffer.length > 64 * 1024) this.#buffer = Buffer.alloc(0);
  }

  #line(line: Buffer): void {
    const text = line.toString('utf8');
    if (text.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.#refuse(PARSE_ERROR, 'Parse error: the line is not valid JSON (one JSON-RPC message per line)', null);
      return;
    }
    if (Array.isArray(value)) {
      this.#refuse(INVALID_REQUEST, 'Invalid Request: JSON-RPC batches are not supported (removed from MCP in 2025-06-18); send one message per line', null);
      return;
    }
    if (!isJSONRPCRequest(value) && !isJSONRPCNotification(value) && !isJSONRPCResultResponse(value) && !isJSONRPCErrorResponse(value)) {
      const id = (value as {id?: unknown} | null)?.id;
      this.#refuse(INVALID_REQUEST, 'Invalid Request: not a JSON-RPC 2.0 request, notification or response', typeof id === 'string' || typeof id === 'number' ? id : null);
      return;
    }
    this.push(line);
    this.push(NEWLINE);
  }

  #refuse(code: number, message: string, id: string | number | null): void {
    const sent = this.#reply({jsonrpc: '2.0', id, error: {code, message}} as JSONRPCErrorResponse);
    if (sent !== undefined) this.#sending.push(sent);
  }
}

/**
 * The value of the top-level `"id"` member of a JSON object, read from what may be only the
 * start of its text: a string or a number when the member is there and complete, otherwise
 * null. Nested objects and arrays are skipped, so an `"id"` inside `params` is never taken.
 */
export function topLevelId(prefix: Buffer | string): string | number | null {
  const s = typeof prefix === 'string' ? prefix : prefix.toString('utf8');
  let i = skipSpace(s, 0);
  if (s[i] !== '{') return null;
  i++;
  for (;;) {
    i = skipSpace(s, i);
    if (s[i] !== '"') return null;
    const keyEnd = stringEnd(s, i);
    if (keyEnd === -1) return null;
    let key: unknown;
    try {
      key = JSON.parse(s.slice(i, keyEnd));
    } catch {
      return null;
    }
    i = skipSpace(s, keyEnd);
    if (s[i] !== ':') return null;
    i = skipSpace(s, i + 1);
    const valueEnd = valueEndAt(s, i);
    if (valueEnd === -1) return null;
    if (key === 'id') {
      let id: unknown;
      try {
        id = JSON.parse(s.slice(i, valueEnd));
      } catch {
        return null;
      }
      return typeof id === 'string' || typeof id === 'number' ? id : null;
    }
    i = skipSpace(s, valueEnd);
    if (s[i] !== ',') return null;
    i++;
  }
}

function skipSpace(s: string, i: number): number {
  while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === '\r' || s[i] === '\n')) i++;
  return i;
}

/** Index just past the string that opens at `i` (a `"`), or -1 when it does not end in `s`. */
function stringEnd(s: string, i: number): number {
  for (let j = i + 1; j < s.length; j++) {
    if (s[j] === '\\') j++;
    else if (s[j] === '"') return j + 1;
  }
  return -1;
}

/** Index just past the JSON value that starts at `i`, or -1 when it does not end in `s`. */
function valueEndAt(s: string, i: number): number {
  const c = s[i];
  if (c === undefined) return -1;
  if (c === '"') return stringEnd(s, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (let j = i; j < s.length; j++) {
      const d = s[j];
      if (d === '"') {
        j = stringEnd(s, j) - 1;
        if (j < 0) return -1;
      } else if (d === '{' || d === '[') {
        depth++;
      } else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    return -1;
  }
  let j = i;
  while (j < s.length && !',}] \t\r\n'.includes(s[j]!)) j++;
  return j < s.length ? j : -1;
}
