import type {IncomingMessage, ServerResponse} from 'node:http';

/**
 * Small HTTP helpers of the service: JSON-RPC error answers (never an HTML page), a capped body
 * reader, and the bridge from a web-standard `Response` back to Node's `ServerResponse`.
 */

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

/** The outcome of reading a request body under a cap. */
export type BodyRead = {ok: true; text: string} | {ok: false; tooLarge: true};

/**
 * Reads a request body as UTF-8 text, at most `maxBytes` bytes. A declared `Content-Length`
 * over the cap is refused before anything is read; otherwise reading stops as soon as more
 * than the cap has arrived (chunked bodies included). The rest of an oversized body is never
 * read: answer with `Connection: close`.
 */
export async function readBody(req: IncomingMessage, maxBytes: number): Promise<BodyRead> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) return {ok: false, tooLarge: true};
  const chunks: Buffer[] = [];
  let received = 0;
  for await (const chunk of req) {
    const buffer = chunk as Buffer;
    received += buffer.byteLength;
    if (received > maxBytes) return {ok: false, tooLarge: true};
    chunks.push(buffer);
  }
  return {ok: true, text: Buffer.concat(chunks).toString('utf8')};
}

/**
 * Writes a web-standard `Response` to Node's `res`, streaming its body (SSE included) with
 * backpressure. When the client goes away (`closed` aborts), the body is cancelled, which lets
 * the SDK transport release the stream.
 * @returns when the response has been written completely or the client is gone
 */
export async function writeResponse(res: ServerResponse, response: Response, closed: AbortSignal): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  if (res.headersSent || res.destroyed) {
    await response.body?.cancel().catch(() => {});
    return;
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
