/**
 * The bridge between Node's HTTP objects and the web-standard ones the SDK speaks: a capped body
 * reader, `IncomingMessage` → `Request` without the client's credentials, `Response` →
 * `ServerResponse` with a readable refusal, and the JSON(-RPC) error answers (never an HTML page).
 */
import type {IncomingMessage, ServerResponse} from 'node:http';
import type {BodyReservation} from './body-budget.ts';

/** Request headers never handed to the SDK: credentials stay here, hop-by-hop headers are Node's. */
const DROPPED_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade']);

/**
 * The web-standard `Request` the SDK's handlers take, for a request whose body (if any) was
 * already read, size-checked and parsed: same method, path and query, the client's headers
 * except credentials (`Authorization`, `Cookie`, `Proxy-Authorization`) and hop-by-hop ones,
 * on a fixed origin (`http://localhost`: the client's Host header is checked by the router,
 * never trusted to build URLs). `signal` aborts when the client goes away.
 *
 * This replaces `@modelcontextprotocol/node`'s `toWebRequest`, which forwards every header,
 * credentials included, and builds the URL from the Host header.
 */
export function toWebRequest(req: IncomingMessage, url: URL, options: {method: string; signal: AbortSignal; body?: string}): Request {
  const headers = new Headers();
  for (const [key, value] of Object.entries(req.headers)) {
    if (value === undefined || DROPPED_HEADERS.has(key)) continue;
    if (Array.isArray(value)) for (const v of value) headers.append(key, v);
    else headers.set(key, value);
  }
  return new Request(`http://localhost${url.pathname}${url.search}`, {
    method: options.method,
    headers,
    signal: options.signal,
    body: options.body,
  });
}

/** JSON-RPC 2.0 error codes used by the transport guards. */
export const JSONRPC = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  /** Implementation-defined server error (the code the SDK uses for transport refusals). */
  SERVER_ERROR: -32000,
  /** Session not found (the SDK's code for an unknown session). */
  SESSION_NOT_FOUND: -32001,
} as const;

/**
 * A JSON-RPC error response with no `id` (MCP transports §Security Warning allows this body
 * for refusals): `{"jsonrpc":"2.0","error":{"code":…,"message":…},"id":null}`.
 */
export function jsonRpcError(status: number, code: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({jsonrpc: '2.0', error: {code, message}, id: null}), {
    status,
    headers: {'Content-Type': 'application/json', ...headers},
  });
}

/** A JSON response. */
export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {status, headers: {'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers}});
}

/** The outcome of reading a request body under a cap: the text, or why it was refused (too large; or, with a `BodyReservation`, the service's body buffers are full). */
export type BodyRead = {ok: true; text: string} | {ok: false; tooLarge: true} | {ok: false; busy: true};

/** First allocation for a body of unknown length, in bytes; the buffer then doubles up to the cap. */
const INITIAL_BODY_BUFFER = 16 * 1024;

/**
 * Reads a request body as UTF-8 text, at most `maxBytes` bytes. A declared `Content-Length`
 * over the cap is refused before anything is read; otherwise reading stops as soon as more
 * than the cap has arrived (chunked bodies included), and what was read is dropped. The
 * request stream is left open (not destroyed: that would reset the connection before the
 * client could read the refusal); `writeResponse` answers and then discards the rest.
 *
 * Memory: the body is copied into ONE buffer, allocated at the declared length or grown by
 * doubling (16 KiB first) and never past `maxBytes`, so however the client chunks it (even a
 * byte per chunk, each of which Node hands over as a slice of a larger socket read) the read
 * holds at most `maxBytes` of its own plus the chunk in hand. Each allocation is first reserved
 * from `reservation` when given; when it is refused, reading stops with `{busy: true}`.
 */
export async function readBody(req: IncomingMessage, maxBytes: number, reservation?: BodyReservation): Promise<BodyRead> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) return {ok: false, tooLarge: true};
  let buffer = Buffer.alloc(0);
  let received = 0;
  const grow = (needed: number, exact = false): boolean => {
    const size = exact ? needed : Math.min(maxBytes, Math.max(needed, 2 * buffer.length, INITIAL_BODY_BUFFER));
    if (reservation !== undefined && !reservation.reserve(size)) return false;
    const grown = Buffer.allocUnsafe(size);
    buffer.copy(grown, 0, 0, received);
    buffer = grown;
    return true;
  };
  if (Number.isFinite(declared) && declared > 0 && !grow(declared, true)) return {ok: false, busy: true};
  for await (const chunk of req.iterator({destroyOnReturn: false})) {
    const piece = chunk as Buffer;
    const needed = received + piece.byteLength;
    if (needed > maxBytes) return {ok: false, tooLarge: true};
    if (needed > buffer.length && !grow(needed)) return {ok: false, busy: true};
    piece.copy(buffer, received);
    received = needed;
  }
  return {ok: true, text: buffer.toString('utf8', 0, received)};
}

/**
 * After answering a request whose body was not read to the end (a refusal), how long the
 * client may go on sending before the connection is closed under it, in ms. Closing a socket
 * with unread data makes the kernel send a reset, which can discard the answer before the client
 * reads it (EPIPE / ECONNRESET on its side); this is the "lingering close" of HTTP servers
 * (RFC 9112 §9.6; Apache `lingering_close`).
 */
export const LINGER_MS = 5000;
/** At most this many bytes of an unread body are discarded before the connection is closed anyway. */
export const LINGER_MAX_BYTES = 64 * 1024 * 1024;
/** The linger bounds for a request that did not authenticate: 1 s and 256 KiB (discarding costs CPU per chunk, and anyone can send one). */
export const UNAUTHENTICATED_LINGER_MS = 1000;
export const UNAUTHENTICATED_LINGER_MAX_BYTES = 256 * 1024;
/** Body chunks discarded at most while lingering (each costs CPU whatever its size): 4096 unauthenticated, 65536 authenticated (a 64 MiB body in 1 KiB chunks). */
export const UNAUTHENTICATED_LINGER_MAX_CHUNKS = 4096;
export const LINGER_MAX_CHUNKS = 65_536;
/** Connections lingering at once, in total and of them unauthenticated; past these a refusal closes its connection at once. */
export const MAX_LINGERS = 64;
export const MAX_UNAUTHENTICATED_LINGERS = 16;

/** One admitted linger: how long and how much to discard, and `release` (once) when done. */
export interface LingerGrant {
  maxMs: number;
  maxBytes: number;
  maxChunks: number;
  release(): void;
}

/**
 * Admission for lingering closes (`writeResponse`): an authenticated request lingers up to
 * `LINGER_MS` / `LINGER_MAX_BYTES`, an unauthenticated one up to `UNAUTHENTICATED_LINGER_MS` /
 * `UNAUTHENTICATED_LINGER_MAX_BYTES`; at most `MAX_LINGERS` connections linger at once, at most
 * `MAX_UNAUTHENTICATED_LINGERS` of them unauthenticated. A refusal past these bounds is written
 * and its connection closed at once, so the client may see a reset instead of the answer
 * (the bound is what keeps anonymous senders from tying up the CPU).
 */
export class Lingers {
  #active = 0;
  #unauthenticated = 0;
  readonly #max: number;
  readonly #maxUnauthenticated: number;

  constructor(max = MAX_LINGERS, maxUnauthenticated = MAX_UNAUTHENTICATED_LINGERS) {
    this.#max = max;
    this.#maxUnauthenticated = maxUnauthenticated;
  }

  /** A linger for a request that did (or did not) authenticate, or undefined when none may start now. */
  take(authenticated: boolean): LingerGrant | undefined {
    if (this.#active >= this.#max || (!authenticated && this.#unauthenticated >= this.#maxUnauthenticated)) return undefined;
    this.#active++;
    if (!authenticated) this.#unauthenticated++;
    let released = false;
    return {
      maxMs: authenticated ? LINGER_MS : UNAUTHENTICATED_LINGER_MS,
      maxBytes: authenticated ? LINGER_MAX_BYTES : UNAUTHENTICATED_LINGER_MAX_BYTES,
      maxChunks: authenticated ? LINGER_MAX_CHUNKS : UNAUTHENTICATED_LINGER_MAX_CHUNKS,
      release: () => {
        if (released) return;
        released = true;
        this.#active--;
        if (!authenticated) this.#unauthenticated--;
      },
    };
  }
}

/** The linger of a call to `writeResponse` without a `Lingers` budget: the authenticated bounds. */
const DEFAULT_LINGER = (): LingerGrant => ({maxMs: LINGER_MS, maxBytes: LINGER_MAX_BYTES, maxChunks: LINGER_MAX_CHUNKS, release: () => {}});

/**
 * Reads and discards what remains of a request body, without buffering it, until the client
 * has sent it all, or `maxBytes` more bytes (or `maxChunks` chunks) arrived, or `maxMs` passed, or `signal` aborts.
 * @returns whether the body was read to its end
 */
export function discardBody(req: IncomingMessage, options: {maxBytes: number; maxMs: number; maxChunks?: number; signal?: AbortSignal}): Promise<boolean> {
  if (req.complete || req.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    let discarded = 0;
    let chunks = 0;
    const maxChunks = options.maxChunks ?? Number.POSITIVE_INFINITY;
    const finish = (complete: boolean) => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      req.off('error', onClose);
      options.signal?.removeEventListener('abort', onClose);
      if (!complete) req.pause();
      resolve(complete);
    };
    const onData = (chunk: Buffer) => {
      discarded += chunk.byteLength;
      chunks++;
      if (discarded > options.maxBytes || chunks > maxChunks) finish(false);
    };
    const onEnd = () => finish(true);
    const onClose = () => finish(false);
    const timer = setTimeout(onClose, options.maxMs);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onClose);
    req.once('error', onClose);
    options.signal?.addEventListener('abort', onClose, {once: true});
    req.resume();
  });
}

/**
 * Sockets whose current response closes the connection (`Connection: close` after a body that
 * was not read to its end): a request pipelined behind it on the same socket must not run
 * (Node still parses and emits it while the unread body is being discarded).
 */
export const closingSockets = new WeakSet<object>();

/**
 * Writes a web-standard `Response` to Node's `res`, streaming its body (SSE included) with
 * backpressure. When the client goes away (`closed` aborts), the body is cancelled, which lets
 * the SDK transport release the stream.
 *
 * When the request body has not been read to its end (`req` incomplete: a refusal answered
 * before or while reading it), the answer is sent whole with `Content-Length` and
 * `Connection: close`, and the connection stays open while the rest of the body is discarded
 * (`discardBody`, within the bounds `linger` grants: by default `LINGER_MS` and `LINGER_MAX_BYTES`;
 * the service passes `Lingers.take`, shorter for unauthenticated requests), so that a client still sending
 * reads the answer instead of a reset; only then is the response ended and the socket closed.
 * The socket is marked in `closingSockets` first, so that a request pipelined behind the unread
 * body is never run.
 * Not guaranteed: a client that neither reads nor stops sending within the bounds is cut off.
 * @returns when the response has been written completely or the client is gone
 */
export async function writeResponse(res: ServerResponse, response: Response, closed: AbortSignal, req?: IncomingMessage, linger: () => LingerGrant | undefined = DEFAULT_LINGER): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  if (res.headersSent || res.destroyed) {
    await response.body?.cancel().catch(() => {});
    return;
  }
  const stream = (response.headers.get('content-type') ?? '').startsWith('text/event-stream');
  if (req !== undefined && !req.complete) closingSockets.add(req.socket);
  if (req !== undefined && !req.complete && !stream) {
    const body = Buffer.from(await response.arrayBuffer());
    res.writeHead(response.status, {...headers, connection: 'close', 'content-length': String(body.byteLength)});
    const grant = linger();
    if (grant === undefined) {
      // Too many connections lingering already: answer and close now.
      res.end(body);
      return;
    }
    res.write(body);
    try {
      await discardBody(req, {maxBytes: grant.maxBytes, maxMs: grant.maxMs, maxChunks: grant.maxChunks, signal: closed});
    } finally {
      grant.release();
    }
    res.end();
    return;
  }
  if (req !== undefined && !req.complete) {
    // A body nobody reads (e.g. on a GET stream): discard it within the same bounds, or close.
    headers.connection = 'close';
    const grant = linger();
    if (grant === undefined) {
      res.destroy();
      return;
    }
    void discardBody(req, {maxBytes: grant.maxBytes, maxMs: grant.maxMs, maxChunks: grant.maxChunks, signal: closed}).then((complete) => {
      grant.release();
      if (!complete && !closed.aborted) res.destroy();
    });
  }
  res.writeHead(response.status, headers);
  if (response.body === null) {
    res.end();
    return;
  }
  // An SSE stream may stay silent for a while: send the status and headers now, so the client
  // knows the stream is open.
  if ((response.headers.get('content-type') ?? '').startsWith('text/event-stream')) res.flushHeaders();
  const reader = response.body.getReader();
  const onAbort = () => {
    reader.cancel().catch(() => {});
  };
  if (closed.aborted) onAbort();
  else closed.addEventListener('abort', onAbort, {once: true});
  try {
    for (;;) {
      const {done, value} = await reader.read();
      if (done || closed.aborted) break;
      if (!res.write(value)) {
        await new Promise<void>((resolve) => {
          const release = () => {
            res.off('drain', release);
            closed.removeEventListener('abort', release);
            resolve();
          };
          res.on('drain', release);
          closed.addEventListener('abort', release, {once: true});
        });
      }
    }
  } catch {
    // The stream failed or was cancelled: end the response below.
  } finally {
    closed.removeEventListener('abort', onAbort);
    if (!res.writableEnded) res.end();
  }
}
