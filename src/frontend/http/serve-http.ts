/** The Streamable HTTP service: binds the socket, builds the two MCP legs and the router, writes each answer, and shuts down by draining. */
import {createServer, type IncomingMessage, type ServerResponse} from 'node:http';
import {createServer as createHttpsServer} from 'node:https';
import type {AddressInfo} from 'node:net';
import {createMcpHandler, type AuthInfo, type McpHttpHandler} from '@modelcontextprotocol/server';
import type {JWTVerifyGetKey} from 'jose';
import {log} from '../../log.ts';
import type {Principal} from '../../policy/principal.ts';
import type {SessionRecordStore} from '../../policy/session-records.ts';
import {assertMayListen, type ServiceConfig} from '../../policy/service-config.ts';
import type {ToolRuntime} from '../call-tool.ts';
import {createMcpServer} from '../mcp-server.ts';
import {ServiceMetrics} from '../metrics.ts';
import {RefusalWatch} from '../refusal-watch.ts';
import {createAuthenticator, type Authenticator} from './authenticate.ts';
import {BodyBudget, DEFAULT_BODY_LIMITS, type BodyLimits} from './body-budget.ts';
import {drain, Exchanges} from './drain.ts';
import {guardConnections} from './connection-guard.ts';
import {closingSockets, jsonRpcError, Lingers, writeResponse} from './http-io.ts';
import {LegacySessions} from './legacy-sessions.ts';
import {Readiness, type ReadinessCheck, type SharedStateReport} from './readiness.ts';
import {createRouter, MCP_PATH, wasAuthenticated, type RouteName} from './router.ts';
import {readTlsFiles, type TlsFiles} from './tls-files.ts';

export {MCP_PATH, PRM_PATH} from './router.ts';

/** A runtime the service can serve: the call spine, plus (optionally) what `/readyz` and shutdown use. */
export type ServiceRuntime = ToolRuntime & {
  /** Loaded tools left out, for a fault or (`skipped`) on purpose (`Runtime.unavailable`). */
  readonly unavailable?: readonly {readonly tool: string; readonly reason: string; readonly skipped?: boolean}[];
  /** Stops the backends and reaps sandboxes (`Runtime.close`). */
  close?(): Promise<void>;
};

export interface HttpServiceOptions {
  runtime: ServiceRuntime;
  config: ServiceConfig;
  /** Address to bind, e.g. `127.0.0.1`. Anything but loopback needs authentication configured. */
  host: string;
  /** Port; 0 picks a free one (see `HttpService.port`). */
  port: number;
  /** Metrics registry to expose at `/metrics`; a new one when absent. */
  metrics?: ServiceMetrics;
  /** Extra readiness check (e.g. a Docker ping). */
  readinessCheck?: ReadinessCheck;
  /** State of the shared quota store for `/readyz` (`RedisQuotaStore.report`); absent without `redis` in the config. */
  sharedState?: () => SharedStateReport;
  /** Shared 2025-protocol session records (`RedisSessionRecords`), so any replica serves any session; absent: sessions live in this process only. */
  sessionRecords?: SessionRecordStore;
  /** Bounds on request-body reads (`BodyBudget`); missing fields take `DEFAULT_BODY_LIMITS` (whose byte total is raised to twice `maxBodyBytes` when that is larger). */
  bodyLimits?: Partial<BodyLimits>;
  /** Key source that overrides the config's JWKS (tests). */
  jwks?: JWTVerifyGetKey;
}

/** A running HTTP service. */
export interface HttpService {
  /** `http://HOST:PORT` as bound (`https://` when the config names a certificate). */
  readonly origin: string;
  /** The MCP endpoint URL, `http(s)://HOST:PORT/mcp`. */
  readonly url: string;
  readonly port: number;
  readonly metrics: ServiceMetrics;
  /** The resource URL tokens must name (config `resourceUrl`, or the endpoint URL). */
  readonly resourceUrl: string;
  /**
   * Graceful shutdown (`drain`): stop accepting connections, answer new requests on open
   * connections with 503, let in-flight calls finish for up to `drainMs` (default: the config's
   * `shutdown.drainMs`), then cancel what is left (sandboxes are stopped), close every session
   * and stream, close the runtime (backends and sandboxes are reaped) and the listening socket.
   * Idempotent; resolves when everything is closed.
   */
  shutdown(options?: {drainMs?: number}): Promise<void>;
  /**
   * Re-reads `tls.cert` and `tls.key` (`readTlsFiles`) and, when they are a valid pair, makes
   * them the certificate of every connection accepted from then on (`server.setSecureContext`);
   * open connections and the calls on them keep the one they negotiated, and the socket keeps
   * accepting throughout. A bad pair is logged (WARN) and the old one kept.
   * @returns `{reloaded: true, fingerprint256}`, or `{reloaded: false, reason}` (no TLS served
   *   here, or why the new pair was refused)
   */
  reloadTls(): Promise<{reloaded: true; fingerprint256: string} | {reloaded: false; reason: string}>;
}

/**
 * Starts the shared execution service: MCP Streamable HTTP at `/mcp` with the SDK v2
 * (2026-07-28 per-request exchanges through `createMcpHandler`; 2025-era clients through
 * sessionful `WebStandardStreamableHTTPServerTransport`s), plus `/healthz`, `/readyz`,
 * `/metrics` and the RFC 9728 protected resource metadata. Every request passes the guards of
 * `createRouter` (Origin, Host, credentials in the URL, authentication, body cap, batches) before
 * it reaches the SDK; sessions answer only the principal that opened them (`LegacySessions`).
 * Server timeouts: 60 s to receive a whole request, 15 s for its headers (Node's `requestTimeout`,
 * `headersTimeout`); a connection's first request headers must arrive within
 * `connections.firstRequestMs` of accepting it, idle keep-alive connections close after
 * `connections.keepAliveMs`, and `connections.max` / `connections.maxPerAddress` cap open
 * connections (`guardConnections`). Request bodies are read under `BodyBudget` (by default 64 at once, 8 per
 * principal, 64 MiB of buffers in total): over it a request is answered 429 or 503 unread.
 *
 * TLS: with `tls.cert`/`tls.key` in the config it serves HTTPS (node:https, TLS 1.2 or later)
 * with that pair, swapped by `reloadTls()` without closing anything.
 *
 * @throws ConfigError when `host` is not loopback and authentication or TLS is not configured
 *   (`assertMayListen`), or when the TLS files are unusable (`readTlsFiles`)
 */
export async function startHttpService(options: HttpServiceOptions): Promise<HttpService> {
  const {runtime, config, host} = options;
  assertMayListen(host, config);
  const metrics = options.metrics ?? new ServiceMetrics();
  metrics.watchQueues(() => runtime.dispatcher.stats());
  const httpLog = log.child({component: 'http'});
  const readiness = new Readiness(runtime, options.readinessCheck, options.sharedState);
  // At the drain deadline this signal stops every call still in flight; each call then ends
  // with its own CANCELLED result, which the client receives before the streams are closed.
  const stopCalls = new AbortController();
  // Refusals on the spine feed the metrics (per rule, and bursts by one principal) on their way to the audit sink.
  const refusals = new RefusalWatch({onRefusal: (rule) => metrics.refused(rule), onBurst: (rule) => metrics.refusalBurst(rule)});
  const served: ToolRuntime = {...runtime, stopSignal: stopCalls.signal, audit: refusals.tap(runtime.audit)};
  const sessions = new LegacySessions(served, {
    idleMs: config.sessions.idleSeconds * 1000,
    maxPerPrincipal: config.sessions.maxPerPrincipal,
    max: config.sessions.max,
    maxBodyBytes: config.maxBodyBytes,
  }, options.sessionRecords);
  metrics.watchSessions(() => sessions.size);
  const modern: McpHttpHandler = createMcpHandler(({authInfo}) => createMcpServer(served, principalOf(authInfo), 'http'), {
    legacy: 'reject',
    maxRequestBodySize: config.maxBodyBytes,
    onerror: (err) => httpLog.debug({err}, 'mcp handler: request refused or failed'),
  });

  const tlsPaths = config.tls !== undefined && 'cert' in config.tls ? config.tls : undefined;
  const tlsFiles: TlsFiles | undefined = tlsPaths === undefined ? undefined : await readTlsFiles(tlsPaths);
  const timeouts = {requestTimeout: 60_000, headersTimeout: 15_000};
  const server = tlsFiles === undefined
    ? createServer(timeouts)
    : createHttpsServer({...timeouts, cert: tlsFiles.cert, key: tlsFiles.key, minVersion: 'TLSv1.2', handshakeTimeout: config.connections.firstRequestMs});
  // Idle and slow connections are closed before they can exhaust file descriptors (connection-guard.ts).
  const guard = guardConnections(server, config.connections);
  const closedListening = new Promise<void>((resolve) => server.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const origin = `${tlsFiles === undefined ? 'http' : 'https'}://${urlHost}:${address.port}`;
  const resourceUrl = config.resourceUrl ?? `${origin}${MCP_PATH}`;
  let authenticator: Authenticator;
  try {
    authenticator = await createAuthenticator(config, {resourceUrl, keys: options.jwks});
  } catch (err) {
    server.close();
    throw err;
  }
  const exchanges = new Exchanges();
  const bodyBudget = new BodyBudget({
    ...DEFAULT_BODY_LIMITS,
    maxBufferedBytes: Math.max(DEFAULT_BODY_LIMITS.maxBufferedBytes, 2 * config.maxBodyBytes),
    ...options.bodyLimits,
  });
  const route = createRouter({config, host, resourceUrl, authenticator, metrics, readiness, sessions, modern, bodyBudget, draining: () => exchanges.draining});

  const lingers = new Lingers();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    guard.firstRequest(req.socket);
    if (closingSockets.has(req.socket)) {
      // Pipelined behind a refused body on a connection being closed: never run, never answered
      // (Node closes the socket once the refusal is written).
      httpLog.info('request refused: pipelined on a connection that is being closed');
      res.shouldKeepAlive = false;
      return;
    }
    const controller = new AbortController();
    let finished = false;
    res.on('close', () => {
      if (!finished) controller.abort();
    });
    // An exchange that may run a tool: what shutdown waits for (GET streams wait for nothing).
    const end = req.method === 'POST' ? exchanges.begin() : undefined;
    void (async () => {
      let routeName: RouteName = 'other';
      let status = 500;
      try {
        const answer = await route(req, controller.signal);
        routeName = answer.route;
        status = answer.response.status;
        await writeResponse(res, answer.response, controller.signal, req, () => lingers.take(wasAuthenticated(req)));
      } catch (err) {
        httpLog.error({err}, 'request failed');
        if (!res.headersSent) {
          await writeResponse(res, jsonRpcError(500, -32603, 'Internal server error'), controller.signal, req, () => lingers.take(wasAuthenticated(req))).catch(() => {});
        } else if (!res.writableEnded) {
          res.end();
        }
      } finally {
        finished = true;
        end?.();
        metrics.httpResponse(routeName, status);
      }
    })();
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });

  if (!authenticator.required) {
    httpLog.warn('no authentication configured: any process that can reach this loopback address can call every tool');
  }
  if (config.metrics.public) httpLog.warn('/metrics is public (metrics.public): anyone who reaches it sees the name of every tool called');
  if (tlsFiles !== undefined) httpLog.info({fingerprint256: tlsFiles.fingerprint256, validTo: tlsFiles.validTo.toISOString()}, 'serving HTTPS');
  let stopping: Promise<void> | undefined;
  return {
    origin,
    url: `${origin}${MCP_PATH}`,
    port: address.port,
    metrics,
    resourceUrl,
    shutdown(shutdownOptions = {}) {
      stopping ??= drain({
        server,
        closedListening,
        exchanges,
        readiness,
        stopCalls,
        closeTransports: () => Promise.allSettled([modern.close(), sessions.closeAll()]),
        closeRuntime: runtime.close?.bind(runtime),
      }, shutdownOptions.drainMs ?? config.shutdown.drainMs);
      return stopping;
    },
    async reloadTls() {
      if (tlsPaths === undefined || !('setSecureContext' in server)) return {reloaded: false, reason: 'no certificate configured (tls.cert/tls.key): nothing to reload'};
      try {
        const next = await readTlsFiles(tlsPaths);
        server.setSecureContext({cert: next.cert, key: next.key, minVersion: 'TLSv1.2'});
        httpLog.info({fingerprint256: next.fingerprint256, validTo: next.validTo.toISOString()}, 'TLS certificate reloaded');
        return {reloaded: true, fingerprint256: next.fingerprint256};
      } catch (err) {
        httpLog.warn({err}, 'TLS reload refused: the old certificate stays in use');
        return {reloaded: false, reason: (err as Error).message};
      }
    },
  };
}

/** The principal the transport attached to a request (`authInfo.extra.principal`). */
function principalOf(authInfo: AuthInfo | undefined): Principal {
  const principal = authInfo?.extra?.principal as Principal | undefined;
  if (principal === undefined) throw new Error('request reached the MCP server without an authenticated principal');
  return principal;
}
