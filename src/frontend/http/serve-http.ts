import {createServer, type IncomingMessage, type ServerResponse} from 'node:http';
import type {AddressInfo} from 'node:net';
import {
  buildOAuthProtectedResourceMetadata,
  createMcpHandler,
  isJsonContentType,
  isLegacyRequest,
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  validateHostHeader,
  validateOriginHeader,
  type AuthInfo,
  type McpHttpHandler,
  type OAuthMetadata,
} from '@modelcontextprotocol/server';
import type {JWTVerifyGetKey} from 'jose';
import {DEFAULT_DISPATCH} from '../../dispatch/dispatcher.ts';
import {ConfigError, ToolcellError} from '../../errors.ts';
import {log} from '../../log.ts';
import type {Principal} from '../../policy/principal.ts';
import {QuotaAdmission, quotaQueueProblems} from '../../policy/quota.ts';
import {authConfigured, defaultServiceConfig, isLoopbackHostname, loadServiceConfig, mayReadMetrics, type ServiceConfig} from '../../policy/service-config.ts';
import type {RuntimeOptions} from '../../runtime.ts';
import type {ToolRuntime} from '../call-tool.ts';
import {createMcpServer} from '../mcp-server.ts';
import {ServiceMetrics} from '../metrics.ts';
import {createAuthenticator, type Authenticator, type AuthRefused} from './authenticate.ts';
import {jsonResponse, jsonRpcError, JSONRPC, readBody, writeResponse} from './http-io.ts';
import {LegacySessions} from './legacy-sessions.ts';
import {Readiness, type ReadinessCheck} from './readiness.ts';

/** The MCP endpoint path. */
export const MCP_PATH = '/mcp';
/** RFC 9728 well-known prefix of the protected resource metadata. */
export const PRM_PATH = '/.well-known/oauth-protected-resource';
/** Query parameters that would carry a credential (RFC 6750 §2.3 and common variants); refused. */
const CREDENTIAL_PARAMS = new Set(['access_token', 'token', 'id_token', 'api_key', 'apikey', 'key', 'auth', 'authorization', 'bearer', 'jwt']);
/** Request headers never handed to the SDK: credentials stay here, hop-by-hop headers are Node's. */
const DROPPED_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade']);

/** A runtime the service can serve: the call spine, plus (optionally) what `/readyz` and shutdown use. */
export type ServiceRuntime = ToolRuntime & {
  /** Loaded tools left out because their backend is unavailable (`Runtime.unavailable`). */
  readonly unavailable?: readonly unknown[];
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
  /** Key source that overrides the config's JWKS (tests). */
  jwks?: JWTVerifyGetKey;
}

/** A running HTTP service. */
export interface HttpService {
  /** `http://HOST:PORT` as bound. */
  readonly origin: string;
  /** The MCP endpoint URL, `http://HOST:PORT/mcp`. */
  readonly url: string;
  readonly port: number;
  readonly metrics: ServiceMetrics;
  /** The resource URL tokens must name (config `resourceUrl`, or the endpoint URL). */
  readonly resourceUrl: string;
  /**
   * Graceful shutdown: stop accepting connections, answer new requests on open connections
   * with 503, let in-flight calls finish for up to `drainMs` (default: the config's
   * `shutdown.drainMs`), then cancel what is left (sandboxes are stopped), close every
   * session and stream, close the runtime (backends and sandboxes are reaped) and the
   * listening socket. Idempotent; resolves when everything is closed.
   */
  shutdown(options?: {drainMs?: number}): Promise<void>;
}

/** Address bound when `--http` names only a port. */
export const DEFAULT_HOST = '127.0.0.1';

/**
 * Parses `HOST:PORT` (`[::1]:8080` for IPv6), or `PORT` / `:PORT`, which bind 127.0.0.1.
 * Port 0 asks for any free port.
 * @throws ConfigError on anything else
 */
export function parseListenAddress(hostPort: string): {host: string; port: number} {
  const text = hostPort.trim();
  const match = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+))?:)?(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65_535) throw new ConfigError('--http', `"${hostPort}" is not HOST:PORT or PORT (e.g. 127.0.0.1:8080, [::1]:8080, 8080)`);
  return {host: match[1] ?? match[2] ?? DEFAULT_HOST, port};
}

/**
 * Starts the shared execution service: MCP Streamable HTTP at `/mcp` with the SDK v2
 * (2026-07-28 per-request exchanges through `createMcpHandler`; 2025-era clients through
 * sessionful `WebStandardStreamableHTTPServerTransport`s), plus `/healthz`, `/readyz`,
 * `/metrics` and the RFC 9728 protected resource metadata. In front of the SDK, on every
 * request (MCP transports §Security Warning; MCP-SECURITY-CHECKLIST 2.2–2.6):
 * Origin (403 for a foreign one) and Host (403: DNS rebinding) validation, no credentials in
 * the URL (400), authentication of every request (401/403 with `WWW-Authenticate`), a body cap
 * (413 with a JSON-RPC error), JSON-RPC batches refused (400), and sessions bound to the
 * principal that opened them (404 otherwise).
 *
 * @throws ConfigError when `host` is not loopback and no authentication is configured
 */
export async function startHttpService(options: HttpServiceOptions): Promise<HttpService> {
  const {runtime, config, host} = options;
  if (!isLoopbackHostname(host) && !authConfigured(config)) {
    throw new ConfigError('--http', `refusing to listen on ${host}: binding an address other than loopback requires authentication (apiKeys or oauth in --config)`);
  }
  const metrics = options.metrics ?? new ServiceMetrics();
  metrics.watchQueues(() => runtime.dispatcher.stats());
  const httpLog = log.child({component: 'http'});
  const readiness = new Readiness(runtime, options.readinessCheck);
  // At the drain deadline this signal stops every call still in flight; each call then ends
  // with its own CANCELLED result, which the client receives before the streams are closed.
  const stopCalls = new AbortController();
  const served: ToolRuntime = {...runtime, stopSignal: stopCalls.signal};
  const sessions = new LegacySessions(served, {
    idleMs: config.sessions.idleSeconds * 1000,
    maxPerPrincipal: config.sessions.maxPerPrincipal,
    max: config.sessions.max,
    maxBodyBytes: config.maxBodyBytes,
  });
  metrics.watchSessions(() => sessions.size);
  const modern: McpHttpHandler = createMcpHandler(({authInfo}) => createMcpServer(served, principalOf(authInfo), 'http'), {
    legacy: 'reject',
    maxRequestBodySize: config.maxBodyBytes,
    onerror: (err) => httpLog.debug({err}, 'mcp handler: request refused or failed'),
  });

  const server = createServer({requestTimeout: 60_000, headersTimeout: 15_000});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const origin = `http://${urlHost}:${address.port}`;
  const resourceUrl = config.resourceUrl ?? `${origin}${MCP_PATH}`;
  let authenticator: Authenticator;
  try {
    authenticator = await createAuthenticator(config, {resourceUrl, ...(options.jwks ? {keys: options.jwks} : {})});
  } catch (err) {
    server.close();
    throw err;
  }
  const allowedHosts = hostAllowlist(config, host, resourceUrl);
  const allowedOrigins = config.allowedOrigins ? [...config.allowedOrigins] : localhostAllowedOrigins();
  const prm = config.oauth === undefined ? undefined : {
    ...buildOAuthProtectedResourceMetadata({
      oauthMetadata: {issuer: config.oauth.issuer} as OAuthMetadata,
      resourceServerUrl: new URL(resourceUrl),
      resourceName: 'toolcell',
      ...(() => {
        const scopes = config.oauth!.scopesSupported ?? config.oauth!.requiredScopes;
        return scopes.length > 0 ? {scopesSupported: [...scopes]} : {};
      })(),
    }),
    bearer_methods_supported: ['header'],
  };
  const prmPaths = new Set([PRM_PATH, `${PRM_PATH}${MCP_PATH}`, `${PRM_PATH}${trimSlash(new URL(resourceUrl).pathname)}`]);

  let draining = false;
  let activeExchanges = 0;

  async function route(req: IncomingMessage, res: ServerResponse, closed: AbortSignal): Promise<{route: string; response: Response}> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      return {route: 'other', response: jsonResponse(400, {error: 'bad_request'})};
    }
    const path = url.pathname;
    const name = path === MCP_PATH ? 'mcp' : path === '/healthz' ? 'healthz' : path === '/readyz' ? 'readyz' : path === '/metrics' ? 'metrics'
      : prmPaths.has(path) ? 'prm' : 'other';
    const originCheck = validateOriginHeader(req.headers.origin, allowedOrigins);
    if (!originCheck.ok) {
      httpLog.info({route: name}, 'request refused: foreign Origin');
      return {route: name, response: jsonRpcError(403, JSONRPC.SERVER_ERROR, 'Forbidden: Origin not allowed')};
    }
    if (name !== 'healthz' && name !== 'readyz') {
      const hostCheck = validateHostHeader(req.headers.host, allowedHosts);
      if (!hostCheck.ok) {
        httpLog.info({route: name}, 'request refused: Host not allowed (DNS rebinding defence)');
        return {route: name, response: jsonRpcError(403, JSONRPC.SERVER_ERROR, 'Forbidden: Host not allowed')};
      }
    }
    switch (name) {
      case 'healthz':
        return {route: name, response: jsonResponse(200, {status: 'ok'})};
      case 'readyz': {
        const report = await readiness.report();
        return {route: name, response: jsonResponse(report.ready ? 200 : 503, report)};
      }
      case 'metrics': {
        if (!config.metrics.public) {
          const auth = await authenticator.authenticate(req.headers.authorization);
          if (!auth.ok) return {route: name, response: refusal(auth)};
          if (!mayReadMetrics(config, auth.principal)) {
            httpLog.info({principal: auth.principal.id}, 'request refused: principal may not read /metrics');
            return {route: name, response: jsonResponse(403, {error: 'forbidden', error_description: 'This principal may not read /metrics (the service configuration lists who may, in metrics.principals).'})};
          }
        }
        const {contentType, body} = await metrics.render();
        return {route: name, response: new Response(body, {status: 200, headers: {'Content-Type': contentType, 'Cache-Control': 'no-store'}})};
      }
      case 'prm':
        if (prm === undefined) return {route: name, response: jsonResponse(404, {error: 'not_found'})};
        if (req.method !== 'GET' && req.method !== 'HEAD') return {route: name, response: jsonResponse(405, {error: 'method_not_allowed'}, {Allow: 'GET, HEAD'})};
        return {route: name, response: jsonResponse(200, prm, {'Access-Control-Allow-Origin': '*'})};
      case 'mcp':
        return {route: name, response: await mcp(req, url, closed)};
      default:
        return {route: name, response: jsonResponse(404, {error: 'not_found'})};
    }
  }

  /** The answer to a refused authentication (an unread body is then discarded by `writeResponse`, and the connection closed). */
  function refusal(auth: AuthRefused): Response {
    metrics.authFailure(auth.reason);
    return jsonResponse(auth.status, auth.body, auth.headers);
  }

  async function mcp(req: IncomingMessage, url: URL, closed: AbortSignal): Promise<Response> {
    const method = (req.method ?? 'GET').toUpperCase();
    if (draining) return jsonRpcError(503, JSONRPC.SERVER_ERROR, 'Service Unavailable: the server is shutting down.', {Connection: 'close', 'Retry-After': '1'});
    if (method !== 'GET' && method !== 'POST' && method !== 'DELETE') {
      return jsonRpcError(405, JSONRPC.SERVER_ERROR, 'Method not allowed.', {Allow: 'GET, POST, DELETE'});
    }
    if ([...url.searchParams.keys()].some((k) => CREDENTIAL_PARAMS.has(k.toLowerCase()))) {
      httpLog.info('request refused: credential in the query string');
      return refusal(authenticator.queryTokenRefusal());
    }
    const auth = await authenticator.authenticate(req.headers.authorization);
    if (!auth.ok) return refusal(auth);
    const principal = auth.principal;

    let text: string | undefined;
    let parsed: unknown;
    if (method === 'POST') {
      if (!isJsonContentType(req.headers['content-type'] ?? null)) {
        return jsonRpcError(415, JSONRPC.SERVER_ERROR, 'Unsupported Media Type: Content-Type must be application/json');
      }
      let read;
      try {
        read = await readBody(req, config.maxBodyBytes);
      } catch {
        return jsonRpcError(400, JSONRPC.PARSE_ERROR, 'Parse error: the request body could not be read');
      }
      if (!read.ok) {
        httpLog.info({maxBodyBytes: config.maxBodyBytes}, 'request refused: body too large');
        return jsonRpcError(413, JSONRPC.SERVER_ERROR, `Payload Too Large: the request body must not exceed ${config.maxBodyBytes} bytes`);
      }
      text = read.text;
      try {
        parsed = JSON.parse(text);
      } catch {
        return jsonRpcError(400, JSONRPC.PARSE_ERROR, 'Parse error: the request body is not valid JSON');
      }
      if (Array.isArray(parsed)) {
        return jsonRpcError(400, JSONRPC.INVALID_REQUEST, 'Invalid Request: JSON-RPC batches are not supported (removed from MCP in 2025-06-18); send one message per request');
      }
      if (parsed === null || typeof parsed !== 'object') {
        return jsonRpcError(400, JSONRPC.INVALID_REQUEST, 'Invalid Request: the body must be one JSON-RPC message object');
      }
    }
    const headers = new Headers();
    for (const [key, value] of Object.entries(req.headers)) {
      if (value === undefined || DROPPED_HEADERS.has(key)) continue;
      if (Array.isArray(value)) for (const v of value) headers.append(key, v);
      else headers.set(key, value);
    }
    const request = new Request(`http://localhost${url.pathname}${url.search}`, {
      method,
      headers,
      signal: closed,
      ...(text === undefined ? {} : {body: text}),
    });
    const authInfo: AuthInfo = {
      token: '',
      clientId: principal.id,
      scopes: [...principal.scopes],
      ...(auth.expiresAt === undefined ? {} : {expiresAt: auth.expiresAt}),
      ...(authenticator.resourceMetadataUrl === undefined ? {} : {resourceMetadataUrl: authenticator.resourceMetadataUrl}),
      extra: {principal},
    };
    const legacy = await isLegacyRequest(request, parsed, {maxRequestBodySize: config.maxBodyBytes});
    if (legacy) return sessions.handle(request, parsed, principal, authInfo);
    return modern.fetch(request, {...(parsed === undefined ? {} : {parsedBody: parsed}), authInfo});
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const controller = new AbortController();
    let finished = false;
    res.on('close', () => {
      if (!finished) controller.abort();
    });
    // An exchange that may run a tool: what shutdown waits for (GET streams wait for nothing).
    const exchange = req.method === 'POST';
    if (exchange) activeExchanges++;
    void (async () => {
      let routeName = 'other';
      let status = 500;
      try {
        const {route: name, response} = await route(req, res, controller.signal);
        routeName = name;
        status = response.status;
        await writeResponse(res, response, controller.signal, req);
      } catch (err) {
        httpLog.error({err}, 'request failed');
        if (!res.headersSent) {
          await writeResponse(res, jsonRpcError(500, -32603, 'Internal server error'), controller.signal).catch(() => {});
        } else if (!res.writableEnded) {
          res.end();
        }
      } finally {
        finished = true;
        if (exchange) activeExchanges--;
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
  let stopping: Promise<void> | undefined;
  const closedListening = new Promise<void>((resolve) => server.once('close', () => resolve()));
  return {
    origin,
    url: `${origin}${MCP_PATH}`,
    port: address.port,
    metrics,
    resourceUrl,
    shutdown(shutdownOptions = {}) {
      stopping ??= (async () => {
        const drainMs = shutdownOptions.drainMs ?? config.shutdown.drainMs;
        draining = true;
        readiness.draining = true;
        server.close();
        server.closeIdleConnections();
        const deadline = performance.now() + drainMs;
        while (activeExchanges > 0 && performance.now() < deadline) await sleep(20);
        if (activeExchanges > 0) {
          httpLog.warn({inFlight: activeExchanges, drainMs}, 'shutdown: cancelling calls still in flight after the drain deadline');
          stopCalls.abort(new ToolcellError('CANCELLED', 'The server is shutting down; the call was stopped.'));
          const answered = performance.now() + CANCEL_GRACE_MS;
          while (activeExchanges > 0 && performance.now() < answered) await sleep(20);
        }
        await Promise.allSettled([modern.close(), sessions.closeAll()]);
        await runtime.close?.();
        const flushed = performance.now() + 1000;
        while (activeExchanges > 0 && performance.now() < flushed) await sleep(20);
        server.closeAllConnections();
        await closedListening;
      })();
      return stopping;
    },
  };
}

/** How long cancelled calls get to send their CANCELLED results before the streams are closed, in ms. */
const CANCEL_GRACE_MS = 3000;

/** The principal the transport attached to a request (`authInfo.extra.principal`). */
function principalOf(authInfo: AuthInfo | undefined): Principal {
  const principal = authInfo?.extra?.principal as Principal | undefined;
  if (principal === undefined) throw new Error('request reached the MCP server without an authenticated principal');
  return principal;
}

/** Host header names accepted: the configured list, or loopback names plus the bind address; always the resource URL's host. */
function hostAllowlist(config: ServiceConfig, host: string, resourceUrl: string): string[] {
  const hosts = new Set<string>(config.allowedHosts ?? localhostAllowedHostnames());
  if (config.allowedHosts === undefined && host !== '0.0.0.0' && host !== '::') hosts.add(host.includes(':') ? `[${host}]` : host);
  hosts.add(new URL(resourceUrl).hostname);
  return [...hosts];
}

const trimSlash = (path: string) => (path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * `toolcell serve --http HOST:PORT [--config FILE]`: loads the service configuration, builds
 * the runtime with per-principal quotas and metrics, serves until SIGTERM or SIGINT, then shuts
 * down gracefully (see `HttpService.shutdown`). Prints the endpoint URL on stderr.
 *
 * @returns the exit code: 0 after a graceful shutdown, 2 for a configuration or address error
 *   (message on stderr)
 */
export async function serveHttpCommand(hostPort: string, options: RuntimeOptions, configPath?: string): Promise<number> {
  const say = (text: string) => process.stderr.write(`toolcell: ${text}\n`);
  let service: HttpService;
  let close: (() => Promise<void>) | undefined;
  try {
    const {host, port} = parseListenAddress(hostPort);
    const config = configPath === undefined ? defaultServiceConfig() : await loadServiceConfig(configPath);
    if (!isLoopbackHostname(host) && !authConfigured(config)) {
      throw new ConfigError('--http', `refusing to listen on ${host}: binding an address other than loopback requires authentication (apiKeys or oauth in --config)`);
    }
    const metrics = new ServiceMetrics();
    const quota = new QuotaAdmission({
      defaults: {ratePerSec: config.quotas.ratePerSec, burst: config.quotas.burst, maxInFlight: config.quotas.maxInFlight},
      principals: config.quotas.principals,
      onLimited: (_principal, limit) => metrics.rateLimited(limit),
    });
    const dispatch = options.dispatch ?? DEFAULT_DISPATCH;
    const problems = quotaQueueProblems(quota, Object.keys(config.quotas.principals), {isolate: dispatch.isolate, container: dispatch.container});
    if (problems.length > 0) throw new ConfigError(configPath ?? '(defaults)', `quotas: ${problems.join('; ')}`);
    const {createRuntime} = await import('../../runtime.ts');
    const runtime = await createRuntime({...options, admission: quota, onCallFinished: metrics.onCallFinished});
    close = () => runtime.close();
    for (const r of runtime.rejected) say(`package ${r.name ?? r.dir} rejected: ${r.reason}`);
    metrics.watchPools(() => runtime.poolSizes());
    service = await startHttpService({runtime, config, host, port, metrics, readinessCheck: () => runtime.containersReachable()});
  } catch (err) {
    await close?.().catch(() => {});
    if (err instanceof ConfigError) {
      say(err.message);
      return 2;
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL' || code === 'EACCES') {
      say(`cannot listen on ${hostPort}: ${code}`);
      return 2;
    }
    throw err;
  }
  say(`serving MCP over Streamable HTTP at ${service.url}`);
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      say(`${signal}: shutting down (in-flight calls may take up to the drain deadline)`);
      process.once('SIGTERM', forceExit);
      process.once('SIGINT', forceExit);
      void service.shutdown().then(resolve, (err: unknown) => {
        log.error({err}, 'shutdown failed');
        resolve();
      });
    };
    const forceExit = () => {
      say('second signal: exiting now');
      process.exit(1);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  say('stopped');
  // Anything still holding the event loop (a stray socket) must not keep a stopped server alive.
  setTimeout(() => process.exit(0), 3000).unref();
  return 0;
}
