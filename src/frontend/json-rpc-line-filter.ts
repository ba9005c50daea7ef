/**
 * The stdio framing guard: splits stdin into newline-delimited JSON-RPC messages, answers the
 * ones the SDK would drop or die on (invalid JSON, batches, non-messages, oversized lines) and
 * passes only valid messages on to the SDK's stdio transport.
 */
import {Transform, type TransformCallback, type Writable} from 'node:stream';
import {
  isJSONRPCErrorResponse,
  isJSONRPCNotification,
  isJSONRPCRequest,
  isJSONRPCResultResponse,
  type JSONRPCErrorResponse,
} from '@modelcontextprotocol/server';

/** Largest stdio message accepted, in bytes of one line (4 MiB); longer lines are answered with an error and discarded. */
export const MAX_STDIO_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * Answers waiting to be written to stdout (bytes) past which stdin is no longer read (64 KiB):
 * a client that sends without reading stalls itself, not the server's memory.
 */
export const MAX_PENDING_OUTPUT_BYTES = 64 * 1024;
/** Messages passed on to the SDK before the filter yields a turn and checks the output again. */
const MESSAGES_PER_TURN = 32;

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
 *   request, notification or response: `-32600` Invalid Request, with the id `JSON.parse` gives
 *   the message when it is a string or number, else null; except a malformed *response* (an
 *   object with `result` or `error` and no `method`), which is dropped unanswered (JSON-RPC 2.0
 *   §5: responses are not answered);
 * - a line longer than `maxBytes`: `-32600` with id null as soon as the cap is passed (which
 *   `"id"` `JSON.parse` would take, the last one, cannot be known without the rest); the rest of
 *   the line is discarded as it arrives, never buffered. The filter holds at most about twice
 *   `maxBytes` (the line being read and the last line passed on), however the input is chunked.
 *
 * Output backpressure: with `options.output` (stdout), no more input is read while more than
 * `maxPendingOutput` bytes wait to be written there, checked after every line and again after
 * the SDK had a turn to answer every 32 messages passed on. So the answers in memory stay within
 * about that bound plus the answers to 32 messages plus the results of tool calls still running
 * (bounded by quotas and each profile's output cap).
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
  readonly #output: Writable | undefined;
  readonly #maxPendingOutput: number;

  /**
   * @param reply sends an error response to the client (e.g. the stdio transport's `send`); must not
   *   throw or reject. When it returns a promise, no more input is read until it settles, so a client
   *   that floods refused lines without reading its answers stalls itself, not the server's memory.
   * @param options.maxBytes the line cap in bytes (default `MAX_STDIO_MESSAGE_BYTES`)
   * @param options.output the stream every answer goes to (stdout): no more input is read while
   *   more than `maxPendingOutput` bytes (default `MAX_PENDING_OUTPUT_BYTES`) are waiting to be
   *   written to it, whoever wrote them (this filter's refusals or the SDK's responses)
   */
  constructor(reply: (message: JSONRPCErrorResponse) => Promise<void> | void, options: {maxBytes?: number; output?: Writable; maxPendingOutput?: number} = {}) {
    super();
    this.#maxBytes = options.maxBytes ?? MAX_STDIO_MESSAGE_BYTES;
    this.#output = options.output;
    this.#maxPendingOutput = options.maxPendingOutput ?? MAX_PENDING_OUTPUT_BYTES;
    this.#reply = reply;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#consume(chunk, 0, callback);
  }

  /**
   * Processes `chunk` from `start`, line by line. Whenever the output is backed up (more than
   * `maxPendingOutput` bytes not yet written), it stops and carries on from the same place once
   * the output drains; at the end of the chunk it lets the SDK answer the messages passed on
   * (one macrotask), checks again, and only then asks for more input.
   */
  #consume(chunk: Buffer, start: number, callback: TransformCallback): void {
    let passed = 0;
    while (start <= chunk.length) {
      const newline = chunk.indexOf(0x0a, start);
      const piece = chunk.subarray(start, newline === -1 ? chunk.length : newline);
      if (!this.#discarding && piece.length > 0) {
        if (this.#length + piece.length > this.#maxBytes) {
          this.#append(piece.subarray(0, this.#maxBytes - this.#length));
          this.#reset();
          this.#discarding = true;
          // The rest of the line is never read, so which id JSON.parse would take (the last
          // "id" member wins) cannot be known: null, as JSON-RPC 2.0 §5 says.
          this.#refuse(INVALID_REQUEST, `Invalid Request: the message is longer than ${this.#maxBytes} bytes (the stdio limit); it was discarded`, null);
        } else {
          this.#append(piece);
        }
      }
      if (newline === -1) break;
      if (this.#discarding) this.#discarding = false;
      else if (this.#line(Buffer.from(this.#buffer.subarray(0, this.#length)))) passed++;
      this.#reset();
      start = newline + 1;
      if (start < chunk.length && this.#output !== undefined && passed >= MESSAGES_PER_TURN) {
        // Let the SDK answer what was passed on before reading further, so the answers to one
        // chunk cannot pile up past the bound (e.g. 1,500 tools/list in 64 KiB).
        setImmediate(() => {
          if (this.#backedUp()) this.#whenDrained(() => this.#consume(chunk, start, callback));
          else this.#consume(chunk, start, callback);
        });
        return;
      }
      if (start < chunk.length && this.#backedUp()) {
        this.#whenDrained(() => this.#consume(chunk, start, callback));
        return;
      }
    }
    const sending = this.#sending;
    this.#sending = [];
    void Promise.allSettled(sending).then(() => {
      if (this.#output === undefined) {
        callback();
        return;
      }
      setImmediate(() => {
        if (this.#backedUp()) this.#whenDrained(callback);
        else callback();
      });
    });
  }

  /** Whether more than `maxPendingOutput` bytes of answers are waiting to be written. */
  #backedUp(): boolean {
    const output = this.#output;
    return output !== undefined && !output.destroyed && output.writableNeedDrain && output.writableLength > this.#maxPendingOutput;
  }

  /** Calls `next` once the output has drained (or closed, or failed: then nobody reads the answers anyway). */
  #whenDrained(next: () => void): void {
    const output = this.#output!;
    const go = () => {
      output.off('drain', go);
      output.off('close', go);
      output.off('error', go);
      next();
    };
    output.on('drain', go);
    output.on('close', go);
    output.on('error', go);
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

  /** Passes on one whole line, or answers (or drops) it; returns whether it was passed on. */
  #line(line: Buffer): boolean {
    const text = line.toString('utf8');
    if (text.trim() === '') return false;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.#refuse(PARSE_ERROR, 'Parse error: the line is not valid JSON (one JSON-RPC message per line)', null);
      return false;
    }
    if (Array.isArray(value)) {
      this.#refuse(INVALID_REQUEST, 'Invalid Request: JSON-RPC batches are not supported (removed from MCP in 2025-06-18); send one message per line', null);
      return false;
    }
    if (!isJSONRPCRequest(value) && !isJSONRPCNotification(value) && !isJSONRPCResultResponse(value) && !isJSONRPCErrorResponse(value)) {
      // A malformed response of the client (no "method", a "result" or "error"): a response is
      // never answered (JSON-RPC 2.0 §5), least of all with an id from the client's id space.
      if (looksLikeResponse(value)) return false;
      const id = (value as {id?: unknown} | null)?.id;
      this.#refuse(INVALID_REQUEST, 'Invalid Request: not a JSON-RPC 2.0 request, notification or response', typeof id === 'string' || typeof id === 'number' ? id : null);
      return false;
    }
    this.push(line);
    this.push(NEWLINE);
    return true;
  }

  #refuse(code: number, message: string, id: string | number | null): void {
    const sent = this.#reply({jsonrpc: '2.0', id, error: {code, message}} as JSONRPCErrorResponse);
    if (sent !== undefined) this.#sending.push(sent);
  }
}

/** Whether a JSON value that is no valid JSON-RPC message was meant as a response: an object with "result" or "error" and no "method". */
function looksLikeResponse(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  return !Object.hasOwn(value, 'method') && (Object.hasOwn(value, 'result') || Object.hasOwn(value, 'error'));
}
