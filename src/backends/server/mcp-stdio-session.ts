/**
 * The client side of the MCP stdio transport, spoken to a server inside a container over
 * Docker's multiplexed attach stream: newline-delimited JSON-RPC on its stdin/stdout, stderr
 * kept apart (bounded) for the log.
 */
import type {Duplex} from 'node:stream';
import {FrameParser, STDERR_STREAM, STDOUT_STREAM, utf8Boundary} from '../container/output.ts';

/**
 * Protocol versions this client accepts in a server's `initialize` answer (MCP 2025-11-25,
 * basic/lifecycle §Version Negotiation: the client should disconnect when it does not support
 * the version the server answers). The first is the one it asks for.
 */
export const SUPPORTED_PROTOCOL_VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'] as const;

/** Longest line a server may write on stdout, in bytes, unless the session's output cap is lower. */
export const MAX_LINE_BYTES = 4 * 2 ** 20;
/** Most stderr bytes kept for the log per session. */
export const MAX_STDERR_BYTES = 64 * 2 ** 10;
/**
 * Most server→client requests answered per session: each gets an error at once; past this many,
 * the session fails (a server that floods requests is not talking MCP).
 */
export const MAX_SERVER_REQUESTS = 256;
/** Most bytes of answers waiting to be written to the server's stdin before the session fails (the server does not read). */
export const MAX_PENDING_WRITE_BYTES = 1 * 2 ** 20;

/** The JSON-RPC error a server→client request gets (sampling, elicitation, roots, anything else). */
export const NOT_AVAILABLE_MESSAGE = 'not available inside a toolcell sandbox';

/** Why a session ended before its requests were answered. */
export type SessionFailure =
  | {kind: 'protocol'; message: string}
  | {kind: 'output-limit'; message: string}
  | {kind: 'closed'; message: string};

/** A JSON-RPC error answer to one of our requests. */
export class JsonRpcError extends Error {
  readonly code: number;
  readonly data: unknown;
  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.name = 'JsonRpcError';
    this.code = code;
    this.data = data;
  }
}

/** The session failed (garbage on stdout, output cap, stream closed) while a request waited. */
export class SessionError extends Error {
  readonly failure: SessionFailure;
  constructor(failure: SessionFailure) {
    super(failure.message);
    this.name = 'SessionError';
    this.failure = failure;
  }
}

/** Callbacks for what the server sends besides answers. */
export interface SessionHandlers {
  /** `notifications/progress` (params as sent; untrusted). */
  onProgress?: (params: Record<string, unknown>) => void;
  /** `notifications/message` (params as sent; untrusted). */
  onLog?: (params: Record<string, unknown>) => void;
  /** A server→client request, after it was answered with an error (method name, untrusted). */
  onServerRequest?: (method: string) => void;
  /** The session failed: called once. */
  onFailure?: (failure: SessionFailure) => void;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * One MCP stdio session over a container's attach socket (Docker Engine API "Attach to a
 * container", stream format: 8-byte frame headers; MCP 2025-11-25 basic/transports §stdio:
 * messages are newline-delimited JSON-RPC, UTF-8, with no embedded newlines, and the server
 * MUST NOT write anything to stdout that is not a valid MCP message).
 *
 * Bounds: every stdout byte counts against `outputBytes` (the profile's output cap for the
 * whole server process, handshake included); past it the session fails with `output-limit`.
 * One line may hold at most min(`outputBytes`, {@link MAX_LINE_BYTES}) bytes (else
 * `output-limit`). stderr is kept up to {@link MAX_STDERR_BYTES} for the log ({@link stderrText})
 * and never answered or relayed; stderr bytes also count against `outputBytes`.
 * Anything on stdout that is not a JSON-RPC 2.0 object, an answer to an id we never sent, or a
 * batch, fails the session with `protocol`.
 * Server→client requests (`sampling/createMessage`, `elicitation/create`, `roots/list`,
 * anything but `ping`, which gets an empty result) get JSON-RPC error -32601 "{@link NOT_AVAILABLE_MESSAGE}" at once; at most
 * {@link MAX_SERVER_REQUESTS} are answered, then the session fails.
 * Does NOT: time anything out (the caller owns deadlines and aborts through `close`), or
 * validate result shapes (the caller does).
 */
export class McpStdioSession {
  readonly #socket: Duplex;
  readonly #handlers: SessionHandlers;
  readonly #outputBytes: number;
  readonly #maxLine: number;
  readonly #frames: FrameParser;
  readonly #pending = new Map<number, {resolve: (v: unknown) => void; reject: (e: Error) => void}>();
  #nextId = 1;
  #line: Buffer[] = [];
  #lineBytes = 0;
  #seenBytes = 0;
  #stderr: Buffer[] = [];
  #stderrBytes = 0;
  #serverRequests = 0;
  #failure: SessionFailure | undefined;
  /** Bytes of stdout and stderr the server wrote in all. */
  get bytesSeen(): number {
    return this.#seenBytes;
  }

  constructor(socket: Duplex, options: {outputBytes: number}, handlers: SessionHandlers = {}) {
    this.#socket = socket;
    this.#handlers = handlers;
    this.#outputBytes = options.outputBytes;
    this.#maxLine = Math.min(options.outputBytes, MAX_LINE_BYTES);
    this.#frames = new FrameParser((stream, part) => {
      if (this.#failure) return true;
      this.#seenBytes += part.length;
      if (this.#seenBytes > this.#outputBytes) {
        this.fail({kind: 'output-limit', message: `the server wrote more than ${this.#outputBytes} bytes`});
        return true;
      }
      if (stream === STDOUT_STREAM) this.#stdout(part);
      else if (stream === STDERR_STREAM) this.#keepStderr(part);
      return this.#failure !== undefined;
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.#failure) return;
      // Last line of defence: nothing the server sends may throw out of this listener (an
      // uncaught exception would end toolcell's process and every tenant's calls).
      try {
        this.#frames.push(chunk);
      } catch {
        this.fail({kind: 'protocol', message: 'toolcell could not handle what the server sent'});
      }
    });
    const ended = () => this.fail({kind: 'closed', message: 'the server closed its output'});
    socket.once('end', ended);
    socket.once('close', ended);
    socket.resume();
  }

  /**
   * Starts a new output budget: the bytes counted so far no longer count against `outputBytes`
   * (a long-lived server gets `outputBytes` per call, not per life).
   */
  resetOutputBudget(): void {
    this.#seenBytes = 0;
  }

  /** The failure that ended the session, if any. */
  get failure(): SessionFailure | undefined {
    return this.#failure;
  }

  /** What the server wrote on stderr (at most {@link MAX_STDERR_BYTES}), for the log only. */
  stderrText(): string {
    const buf = Buffer.concat(this.#stderr);
    return buf.subarray(0, utf8Boundary(buf)).toString('utf8');
  }

  /**
   * Sends a request and waits for its answer.
   * @returns the `result` member of the answer (untrusted JSON).
   * @throws JsonRpcError for an error answer; SessionError when the session failed first.
   */
  request(method: string, params?: Record<string, unknown>): Promise<unknown> {
    if (this.#failure) return Promise.reject(new SessionError(this.#failure));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, {resolve, reject});
      this.#send({jsonrpc: '2.0', id, method, ...(params === undefined ? {} : {params})});
    });
  }

  /** Sends a notification (no answer). */
  notify(method: string, params?: Record<string, unknown>): void {
    if (!this.#failure) this.#send({jsonrpc: '2.0', method, ...(params === undefined ? {} : {params})});
  }

  /** Ends the session: waiting requests reject with a SessionError carrying `failure`. Idempotent. */
  fail(failure: SessionFailure): void {
    if (this.#failure) return;
    this.#failure = failure;
    for (const p of this.#pending.values()) p.reject(new SessionError(failure));
    this.#pending.clear();
    this.#line = [];
    try {
      this.#handlers.onFailure?.(failure);
    } catch {
      // The session is over either way; a handler's throw must not reach the socket listener.
    }
  }

  #send(message: Record<string, unknown>): void {
    if (this.#socket.writableLength > MAX_PENDING_WRITE_BYTES) {
      this.fail({kind: 'protocol', message: 'the server does not read its stdin'});
      return;
    }
    this.#socket.write(`${JSON.stringify(message)}\n`);
  }

  #keepStderr(part: Buffer): void {
    const room = MAX_STDERR_BYTES - this.#stderrBytes;
    if (room <= 0) return;
    const kept = part.length > room ? part.subarray(0, room) : part;
    this.#stderr.push(Buffer.from(kept));
    this.#stderrBytes += kept.length;
  }

  #stdout(part: Buffer): void {
    let from = 0;
    for (let nl = part.indexOf(0x0a, from); nl !== -1 && !this.#failure; nl = part.indexOf(0x0a, from)) {
      this.#appendLine(part.subarray(from, nl));
      from = nl + 1;
      if (this.#failure) return;
      const line = Buffer.concat(this.#line);
      this.#line = [];
      this.#lineBytes = 0;
      this.#onLine(line);
    }
    if (from < part.length && !this.#failure) this.#appendLine(part.subarray(from));
  }

  #appendLine(piece: Buffer): void {
    this.#lineBytes += piece.length;
    if (this.#lineBytes > this.#maxLine) {
      this.fail({kind: 'output-limit', message: `the server wrote a line longer than ${this.#maxLine} bytes`});
      return;
    }
    if (piece.length > 0) this.#line.push(Buffer.from(piece));
  }

  #onLine(raw: Buffer): void {
    const text = raw.toString('utf8').replace(/\r$/, '');
    if (text.trim() === '') return; // blank lines between messages are tolerated
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      this.fail({kind: 'protocol', message: 'the server wrote a line on stdout that is not JSON (MCP stdio: only MCP messages may go to stdout)'});
      return;
    }
    if (!isRecord(message) || message.jsonrpc !== '2.0') {
      this.fail({kind: 'protocol', message: 'the server wrote something on stdout that is not a JSON-RPC 2.0 message'});
      return;
    }
    const hasId = Object.hasOwn(message, 'id') && (typeof message.id === 'number' || typeof message.id === 'string');
    if (typeof message.method === 'string') {
      if (hasId) this.#answerServerRequest(message.id as number | string, message.method);
      else this.#notification(message.method, message.params);
      return;
    }
    if (!hasId) {
      this.fail({kind: 'protocol', message: 'the server wrote a JSON-RPC message that is neither a request, a notification nor an answer'});
      return;
    }
    const pending = typeof message.id === 'number' ? this.#pending.get(message.id) : undefined;
    if (!pending) {
      this.fail({kind: 'protocol', message: 'the server answered a request that was never sent'});
      return;
    }
    this.#pending.delete(message.id as number);
    if (isRecord(message.error)) {
      const code = typeof message.error.code === 'number' ? message.error.code : -32603;
      const text = typeof message.error.message === 'string' ? message.error.message : 'error';
      pending.reject(new JsonRpcError(code, text, message.error.data));
    } else if (Object.hasOwn(message, 'result')) {
      pending.resolve(message.result);
    } else {
      pending.reject(new SessionError({kind: 'protocol', message: 'the server answered with neither result nor error'}));
    }
  }

  #answerServerRequest(id: number | string, method: string): void {
    if (++this.#serverRequests > MAX_SERVER_REQUESTS) {
      this.fail({kind: 'protocol', message: `the server sent more than ${MAX_SERVER_REQUESTS} requests to the client`});
      return;
    }
    // ping must be answered with an empty result (basic/utilities/ping); everything else is refused.
    if (method === 'ping') this.#send({jsonrpc: '2.0', id, result: {}});
    else this.#send({jsonrpc: '2.0', id, error: {code: -32601, message: `${method.slice(0, 100)}: ${NOT_AVAILABLE_MESSAGE}`}});
    this.#guarded('request', () => this.#handlers.onServerRequest?.(method));
  }

  #notification(method: string, params: unknown): void {
    if (!isRecord(params)) return;
    if (method === 'notifications/progress') this.#guarded('progress notification', () => this.#handlers.onProgress?.(params));
    else if (method === 'notifications/message') this.#guarded('log notification', () => this.#handlers.onLog?.(params));
  }

  /**
   * Runs a handler on something the server sent: it runs inside the socket's 'data' listener, so
   * a throw there would be an uncaught exception in toolcell's process. A throwing handler fails
   * this session (`protocol`) instead; the error itself is not relayed (it may hold host detail).
   */
  #guarded(what: string, handler: () => void): void {
    try {
      handler();
    } catch {
      this.fail({kind: 'protocol', message: `toolcell could not handle the server's ${what}`});
    }
  }
}
