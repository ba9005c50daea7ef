/** The 2025-era leg of the HTTP endpoint: sessionful Streamable HTTP, one MCP server per session, bound to its principal. */
import {randomBytes} from 'node:crypto';
import {isInitializeRequest, WebStandardStreamableHTTPServerTransport, type AuthInfo, type Server} from '@modelcontextprotocol/server';
import {log} from '../../log.ts';
import type {Principal} from '../../policy/principal.ts';
import type {SessionRecordStore} from '../../policy/session-records.ts';
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
  /** Whether its record is in the shared store (other replicas can rebuild it). */
  shared: boolean;
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
 *
 * Across replicas (`records`, the service config's `redis`): opening a session stores its record
 * (principal, grant, initialize params) before the initialize answer is returned; a replica that
 * gets a request for a session it does not hold rebuilds it from the record, for the same
 * principal and grant only, by replaying the initialize handshake into a fresh MCP server with
 * the same session id. Each request refreshes the record's TTL (`idleMs`); DELETE and eviction
 * remove it, and a replica that still holds a session whose record is gone closes it (404).
 * Not shared: SSE resumption (`Last-Event-ID`) and the standalone GET stream stay on the replica
 * that served them, and a `notifications/cancelled` reaches a call only on the replica running
 * it; the `max`/`maxPerPrincipal` bounds are per replica. Shared store unreachable: each
 * replica serves the sessions it holds; others get 404 and the client re-initializes.
 */
export class LegacySessions {
  readonly #runtime: ToolRuntime;
  readonly #limits: SessionLimits;
  readonly #sessions = new Map<string, Session>();
  readonly #sweeper: NodeJS.Timeout;
  readonly #log = log.child({component: 'http-sessions'});
  readonly #records: SessionRecordStore | undefined;
  /** Rebuilds under way, by session id (two requests for one foreign session rebuild it once). */
  readonly #rebuilding = new Map<string, Promise<Session | undefined>>();
  #closed = false;

  constructor(runtime: ToolRuntime, limits: SessionLimits, records?: SessionRecordStore) {
    this.#runtime = runtime;
    this.#limits = limits;
    this.#records = records;
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
    let session = this.#sessions.get(sessionId);
    const notFound = () => jsonRpcError(404, JSONRPC.SESSION_NOT_FOUND, 'Session not found');
    if (this.#records !== undefined) {
      const record = await this.#records.touch(sessionId, this.#limits.idleMs);
      if (record === null && (session === undefined || session.shared)) {
        // Ended elsewhere (DELETE or eviction on another replica) or expired there: end it here too.
        if (session !== undefined) await this.#close(session, false);
        return notFound();
      }
      if (record !== null && record !== 'unavailable') {
        if (record.principalId !== principal.id || record.grantKey !== grantKeyOf(principal)) {
          this.#log.info({principal: principal.id}, 'shared session id presented by a principal (or grant) other than its owner: answered as unknown');
          return notFound();
        }
        if (session === undefined) {
          let pending = this.#rebuilding.get(sessionId);
          if (pending === undefined) {
            pending = this.#rebuild(sessionId, record.initialize, principal, authInfo).finally(() => this.#rebuilding.delete(sessionId));
            this.#rebuilding.set(sessionId, pending);
          }
          session = await pending;
          if (session === undefined) return notFound();
        }
      }
      if (this.#closed) return jsonRpcError(503, JSONRPC.SERVER_ERROR, 'Service Unavailable: the server is shutting down.', {Connection: 'close'});
    }
    if (session === undefined || session.principalId !== principal.id || session.grantKey !== grantKeyOf(principal)) {
      if (session !== undefined) this.#log.info({principal: principal.id}, 'session id presented by a principal (or grant) other than its owner: answered as unknown');
      return notFound();
    }
    const response = await this.#serve(session, request, parsedBody, authInfo);
    if (request.method === 'DELETE' && session.shared && response.status < 300) await this.#records?.delete(sessionId);
    return response;
  }

  /** Applies the per-principal and total bounds before a session is added; a Response when it must be refused. */
  async #makeRoom(principal: Principal): Promise<Response | undefined> {
    const mine = [...this.#sessions.values()].filter((s) => s.principalId === principal.id);
    if (mine.length >= this.#limits.maxPerPrincipal) {
      // Prefer a session with nothing in flight; the least recently used among those.
      const oldest = mine.sort((a, b) => Number(a.open > 0) - Number(b.open > 0) || a.lastUsed - b.lastUsed)[0]!;
      this.#log.info({principal: principal.id, max: this.#limits.maxPerPrincipal}, 'per-principal session limit: closing the least recently used session');
      await this.#close(oldest, true);
    }
    if (this.#sessions.size >= this.#limits.max) {
      this.#log.warn({max: this.#limits.max}, 'session limit reached: initialize refused');
      return jsonRpcError(503, JSONRPC.SERVER_ERROR, 'Service Unavailable: too many open sessions; retry later.', {'Retry-After': '5'});
    }
    return undefined;
  }

  /**
   * Rebuilds a session opened on another replica: a fresh MCP server for `principal` (whose id
   * and grant the caller checked against the record), a transport whose only session id is
   * `id`, and the client's initialize + initialized replayed into it (answers discarded).
   * @returns the session, or undefined when the replay was refused or a bound refused it
   */
  async #rebuild(id: string, initialize: Record<string, unknown>, principal: Principal, authInfo: AuthInfo): Promise<Session | undefined> {
    if ((await this.#makeRoom(principal)) !== undefined) return undefined;
    const {session, transport, server} = await this.#create(principal, () => id);
    const headers = {'content-type': 'application/json', accept: 'application/json, text/event-stream'};
    const replay = async (body: Record<string, unknown>, extra: Record<string, string> = {}) => {
      const response = await transport.handleRequest(new Request('http://127.0.0.1/mcp', {method: 'POST', headers: {...headers, ...extra}, body: JSON.stringify(body)}), {parsedBody: body, authInfo});
      await response.text();
      return response;
    };
    try {
      const init = await replay({jsonrpc: '2.0', id: 'toolcell-rebuild', method: 'initialize', params: initialize});
      const built = session();
      if (init.status !== 200 || built === undefined) throw new Error(`initialize replay answered ${init.status}`);
      const version = typeof initialize.protocolVersion === 'string' ? initialize.protocolVersion : '2025-03-26';
      await replay({jsonrpc: '2.0', method: 'notifications/initialized'}, {'mcp-session-id': id, 'mcp-protocol-version': version});
      built.shared = true;
      this.#log.debug({principal: principal.id}, 'session rebuilt from its shared record');
      return built;
    } catch (err) {
      this.#log.warn({err, principal: principal.id}, 'a shared session could not be rebuilt; answered as unknown');
      const built = session();
      if (built !== undefined) await this.#close(built, false);
      else await server.close().catch(() => {});
      return undefined;
    }
  }

  /** A new MCP server and transport for `principal`; the session appears in the map once the transport has initialized. */
  async #create(principal: Principal, sessionIdGenerator: () => string) {
    const server = createMcpServer(this.#runtime, principal, 'http');
    let session: Session | undefined;
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator,
      onsessioninitialized: (id) => {
        session = {id, principalId: principal.id, grantKey: grantKeyOf(principal), transport, server, lastUsed: Date.now(), open: 0, shared: false};
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
    return {session: () => session, transport, server};
  }

  async #open(request: Request, parsedBody: unknown, principal: Principal, authInfo: AuthInfo): Promise<Response> {
    const refused = await this.#makeRoom(principal);
    if (refused !== undefined) return refused;
    const {session: created, transport, server} = await this.#create(principal, () => randomBytes(24).toString('base64url'));
    const response = await transport.handleRequest(request, {parsedBody, authInfo});
    const session = created();
    if (session === undefined) {
      // The initialize request was refused (bad version header, invalid params): nothing to keep.
      await server.close().catch(() => {});
      return response;
    }
    if (this.#records !== undefined) {
      // Stored before the client learns the id, so its next request may reach any replica.
      const params = (parsedBody as {params?: unknown}).params;
      session.shared = typeof params === 'object' && params !== null
        && await this.#records.put(session.id, {principalId: principal.id, grantKey: session.grantKey, initialize: params as Record<string, unknown>}, this.#limits.idleMs);
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
        void this.#close(session, false);
      }
    }
  }

  /** Closes a session here; `forget` also removes its shared record (it ended for every replica). */
  async #close(session: Session, forget: boolean): Promise<void> {
    this.#sessions.delete(session.id);
    if (forget && session.shared) await this.#records?.delete(session.id);
    await session.server.close().catch(() => {});
  }

  /**
   * Closes every session: in-flight calls are aborted (their sandboxes stopped) and open
   * streams end. Further requests get 503.
   */
  async closeAll(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    // Shared records stay: the sessions go on on the other replicas.
    await Promise.all([...this.#sessions.values()].map((s) => this.#close(s, false)));
  }
}

/** A stable key of what a principal is granted; a session is bound to it as well as to the principal id. */
function grantKeyOf(principal: Principal): string {
  return principal.packages === '*' ? '*' : JSON.stringify([...principal.packages].sort());
}
