/** The 2025-era leg of the HTTP endpoint: sessionful Streamable HTTP, one MCP server per session, bound to its principal. */
import {randomBytes} from 'node:crypto';
import {isInitializeRequest, WebStandardStreamableHTTPServerTransport, type AuthInfo, type Server} from '@modelcontextprotocol/server';
import {log} from '../../log.ts';
import type {Principal} from '../../policy/principal.ts';
import type {ToolRuntime} from '../call-tool.ts';
import {createMcpServer} from '../mcp-server.ts';
import {jsonRpcError, JSONRPC} from './http-io.ts';
import {SessionEventStore} from './session-event-store.ts';

/** Bounds of the 2025-era sessions. */
export interface SessionLimits {
  /** A session with no open request for this long ends, in ms. */
  idleMs: number;
  /** Open sessions per principal; opening one more closes that principal's least recently used (idle first). */
  maxPerPrincipal: number;
  /** Open sessions in total; beyond it, `initialize` gets 503. */
  max: number;
  /** Largest POST body the transport would read itself, in bytes (bodies arrive pre-parsed). */
  maxBodyBytes: number;
}

/** SSE `retry` hint sent with priming events, in ms (MCP transports §Sending Messages 6). */
export const SSE_RETRY_MS = 1000;
interface Session {
  readonly id: string;
  readonly principalId: string;
  /** The grant the session's server was built with; a request with another grant cannot use it. */
  readonly grantKey: string;
  readonly transport: WebStandardStreamableHTTPServerTransport;
  readonly server: Server;
  lastUsed: number;
  /** HTTP responses of this session still being written (SSE streams included). */
  open: number;
}

/**
 * The 2025-11-25 (and 2025-06-18 / 03-26) leg of the endpoint: sessionful Streamable HTTP with
 * the SDK's `WebStandardStreamableHTTPServerTransport`, one MCP server per session. Sessions
 * make `notifications/cancelled` reach the call it names, and progress flow on the call's SSE
 * stream (MCP transports §Session Management).
 *
 * Security (MCP security best practices §Session Hijacking): the session id is 192 random bits
 * (base64url, visible ASCII), never a credential: every request is authenticated before it
 * gets here, and a session answers only the principal that opened it, with the same grant.
 * An unknown, expired or foreign session id gets 404 with a JSON-RPC error, so that a client
 * re-initializes and a prober learns nothing about other principals' sessions.
 */
export class LegacySessions {
  readonly #runtime: ToolRuntime;
  readonly #limits: SessionLimits;
  readonly #sessions = new Map<string, Session>();
  readonly #sweeper: NodeJS.Timeout;
  readonly #log = log.child({component: 'http-sessions'});
  #closed = false;

  constructor(runtime: ToolRuntime, limits: SessionLimits) {
    this.#runtime = runtime;
    this.#limits = limits;
    this.#sweeper = setInterval(() => this.sweep(), Math.max(50, Math.min(60_000, Math.floor(limits.idleMs / 4))));
    this.#sweeper.unref();
  }

  /** Open sessions. */
  get size(): number {
    return this.#sessions.size;
  }

  /**
   * Serves one 2025-era request of an authenticated principal.
   * @param parsedBody the JSON body of a POST (already size-checked, parsed, and not a batch)
   */
  async handle(request: Request, parsedBody: unknown, principal: Principal, authInfo: AuthInfo): Promise<Response> {
    if (this.#closed) return jsonRpcError(503, JSONRPC.SERVER_ERROR, 'Service Unavailable: the server is shutting down.', {Connection: 'close'});
    const sessionId = request.headers.get('mcp-session-id');
    if (sessionId === null) {
      if (request.method === 'POST' && isInitializeRequest(parsedBody)) return this.#open(request, parsedBody, principal, authInfo);
      if (request.method === 'POST' || request.method === 'GET' || request.method === 'DELETE') {
        return jsonRpcError(400, JSONRPC.SERVER_ERROR, 'Bad Request: Mcp-Session-Id header is required');
      }
      return jsonRpcError(405, JSONRPC.SERVER_ERROR, 'Method not allowed.', {Allow: 'GET, POST, DELETE'});
    }
    const session = this.#sessions.get(sessionId);
    if (session === undefined || session.principalId !== principal.id || session.grantKey !== grantKeyOf(principal)) {
      if (session !== undefined) this.#log.info({principal: principal.id}, 'session id presented by a principal (or grant) other than its owner: answered as unknown');
      return jsonRpcError(404, JSONRPC.SESSION_NOT_FOUND, 'Session not found');
    }
    return this.#serve(session, request, parsedBody, authInfo);
  }

  async #open(request: Request, parsedBody: unknown, principal: Principal, authInfo: AuthInfo): Promise<Response> {
    const mine = [...this.#sessions.values()].filter((s) => s.principalId === principal.id);
    if (mine.length >= this.#limits.maxPerPrincipal) {
      // Prefer a session with nothing in flight; the least recently used among those.
      const oldest = mine.sort((a, b) => Number(a.open > 0) - Number(b.open > 0) || a.lastUsed - b.lastUsed)[0]!;
      this.#log.info({principal: principal.id, max: this.#limits.maxPerPrincipal}, 'per-principal session limit: closing the least recently used session');
      await this.#close(oldest);
    }
    if (this.#sessions.size >= this.#limits.max) {
      this.#log.warn({max: this.#limits.max}, 'session limit reached: initialize refused');
      return jsonRpcError(503, JSONRPC.SERVER_ERROR, 'Service Unavailable: too many open sessions; retry later.', {'Retry-After': '5'});
    }
    const server = createMcpServer(this.#runtime, principal, 'http');
    let session: Session | undefined;
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomBytes(24).toString('base64url'),
      onsessioninitialized: (id) => {
        session = {id, principalId: principal.id, grantKey: grantKeyOf(principal), transport, server, lastUsed: Date.now(), open: 0};
        this.#sessions.set(id, session);
      },
      onsessionclosed: (id) => {
        this.#sessions.delete(id);
      },
      maxRequestBodySize: this.#limits.maxBodyBytes,
      eventStore: new SessionEventStore(),
      retryInterval: SSE_RETRY_MS,
    });
    transport.onerror = (err) => this.#log.debug({err}, 'session transport error');
    await server.connect(transport);
    const previous = server.onclose;
    server.onclose = () => {
      if (session !== undefined && this.#sessions.get(session.id) === session) this.#sessions.delete(session.id);
      previous?.();
    };
    const response = await transport.handleRequest(request, {parsedBody, authInfo});
    if (session === undefined) {
      // The initialize request was refused (bad version header, invalid params): nothing to keep.
      await server.close().catch(() => {});
      return response;
    }
    return this.#track(session, response);
  }

  async #serve(session: Session, request: Request, parsedBody: unknown, authInfo: AuthInfo): Promise<Response> {
    session.lastUsed = Date.now();
    session.open++;
    let response: Response;
    try {
      response = await session.transport.handleRequest(request, {parsedBody, authInfo});
    } catch (err) {
      session.open--;
      throw err;
    }
    session.open--;
    return this.#track(session, response);
  }

  /** Counts the response as open until its body has been written or cancelled. */
  #track(session: Session, response: Response): Response {
    if (response.body === null) {
      session.lastUsed = Date.now();
      return response;
    }
    session.open++;
    const reader = response.body.getReader();
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      session.open--;
      session.lastUsed = Date.now();
    };
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const chunk = await reader.read();
          if (chunk.done) {
            finish();
            controller.close();
          } else {
            controller.enqueue(chunk.value);
          }
        } catch (err) {
          finish();
          controller.error(err);
        }
      },
      async cancel(reason) {
        finish();
        await reader.cancel(reason).catch(() => {});
      },
    });
    return new Response(body, {status: response.status, statusText: response.statusText, headers: response.headers});
  }

  /** Ends sessions idle for longer than `idleMs` (no open response). Their ids then get 404. */
  sweep(now = Date.now()): void {
    for (const session of this.#sessions.values()) {
      if (session.open === 0 && now - session.lastUsed > this.#limits.idleMs) {
        this.#log.debug({principal: session.principalId}, 'session expired');
        void this.#close(session);
      }
    }
  }

  async #close(session: Session): Promise<void> {
    this.#sessions.delete(session.id);
    await session.server.close().catch(() => {});
  }

  /**
   * Closes every session: in-flight calls are aborted (their sandboxes stopped) and open
   * streams end. Further requests get 503.
   */
  async closeAll(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    await Promise.all([...this.#sessions.values()].map((s) => this.#close(s)));
  }
}

/** A stable key of what a principal is granted; a session is bound to it as well as to the principal id. */
function grantKeyOf(principal: Principal): string {
  return principal.packages === '*' ? '*' : JSON.stringify([...principal.packages].sort());
}
