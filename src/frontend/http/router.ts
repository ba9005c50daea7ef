/** The route and guard table of the HTTP service: which path is which route, and what every request passes before it reaches one. */
import type {IncomingMessage} from 'node:http';
import {
  buildOAuthProtectedResourceMetadata,
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
import {log} from '../../log.ts';
import {authConfigured, mayReadMetrics, type ServiceConfig} from '../../policy/service-config.ts';
import type {ServiceMetrics} from '../metrics.ts';
import type {Authenticator, AuthRefused} from './authenticate.ts';
import type {BodyBudget} from './body-budget.ts';
import {jsonResponse, jsonRpcError, JSONRPC, readBody, toWebRequest} from './http-io.ts';
import type {LegacySessions} from './legacy-sessions.ts';
import type {Readiness} from './readiness.ts';

/** The MCP endpoint path. */
export const MCP_PATH = '/mcp';
/** RFC 9728 well-known prefix of the protected resource metadata. */
export const PRM_PATH = '/.well-known/oauth-protected-resource';
/** Query parameters that would carry a credential (RFC 6750 §2.3 and common variants); refused. */
const CREDENTIAL_PARAMS = new Set(['access_token', 'token', 'id_token', 'api_key', 'apikey', 'key', 'auth', 'authorization', 'bearer', 'jwt']);

/** Requests whose credentials were accepted (by `/mcp` or `/metrics`); the others linger less after a refusal (`Lingers`). */
const authenticatedRequests = new WeakSet<IncomingMessage>();

/** Whether `req` passed authentication (or the service has none configured, which is the local principal). */
export function wasAuthenticated(req: IncomingMessage): boolean {
  return authenticatedRequests.has(req);
}

/** Route names: fixed labels for metrics and logs, never the raw path. */
export type RouteName = 'mcp' | 'healthz' | 'readyz' | 'metrics' | 'prm' | 'other';

/** What the router needs of the service it routes for. */
export interface RouterParts {
  config: ServiceConfig;
  /** The bound address (its name is an allowed Host unless the config lists hosts). */
  host: string;
  /** The resource URL tokens must name. */
  resourceUrl: string;
  authenticator: Authenticator;
  metrics: ServiceMetrics;
  readiness: Readiness;
  /** The 2025-era leg of `/mcp`. */
  sessions: LegacySessions;
  /** The 2026-07-28 leg of `/mcp` (`createMcpHandler`). */
  modern: McpHttpHandler;
  /** Admission of request-body reads (concurrency and bytes buffered). */
  bodyBudget: BodyBudget;
  /** Whether the service is shutting down (new MCP requests get 503). */
  draining: () => boolean;
}

/** Routes one request to its answer; `closed` aborts when the client goes away. */
export type Router = (req: IncomingMessage, closed: AbortSignal) => Promise<{route: RouteName; response: Response}>;

/**
 * Builds the router of the HTTP service. The table, in the order a request meets it:
 *
 * | route | path | Origin | Host | credentials | answer |
 * |---|---|---|---|---|---|
 * | healthz | `/healthz` | checked | not checked (probes use the pod address) | none | 200 |
 * | readyz | `/readyz` | checked | not checked | none | 200 / 503 (`Readiness`) |
 * | metrics | `/metrics` | checked | checked, unless a bearer credential is required (see below) | like /mcp, and `mayReadMetrics` (unless `metrics.public`) | 200 / 401 / 403 |
 * | prm | RFC 9728 well-known paths | checked | checked | none | 200 with OAuth, else 404 |
 * | mcp | `/mcp` | checked | checked | every request | see below |
 * | other | anything else | checked | checked | none | 404 |
 *
 * `/mcp` guards (MCP transports §Security Warning; MCP-SECURITY-CHECKLIST 2.2–2.6): 503 while
 * draining; only GET, POST, DELETE (405); no credential in the query string (400); authentication
 * (401/403 with `WWW-Authenticate`); for POST a JSON content type (415), a body-read slot
 * (`BodyBudget`: 429 when the principal already has its share of bodies being read, 503 when
 * the service has, or its body buffers are full; both with `Retry-After`), the body cap (413 with a
 * JSON-RPC error), valid JSON (400, -32700), one message object and never a batch (400, -32600).
 * Then the request goes to the 2025 sessions or the 2026 handler, with the principal as
 * `authInfo.extra.principal` and without the client's credentials (`toWebRequest`).
 * A foreign Origin or Host is 403 with a JSON-RPC error on every route it applies to.
 *
 * `/metrics` skips the Host check when it requires a bearer credential (authentication configured
 * and `metrics.public` false): a scraper reaches each replica by its pod address (a Host nobody can
 * list in advance), and DNS rebinding gains a web page nothing there, since a browser never sends
 * a bearer token by itself. Public metrics, and the unauthenticated loopback mode, keep the check.
 */
export function createRouter(parts: RouterParts): Router {
  const {config, authenticator, metrics, readiness, sessions, modern} = parts;
  const httpLog = log.child({component: 'http'});
  const allowedHosts = hostAllowlist(config, parts.host, parts.resourceUrl);
  const metricsNeedBearer = !config.metrics.public && authConfigured(config);
  const allowedOrigins = config.allowedOrigins ? [...config.allowedOrigins] : localhostAllowedOrigins();
  const prm = protectedResourceMetadata(config, parts.resourceUrl);
  const prmPaths = new Set([PRM_PATH, `${PRM_PATH}${MCP_PATH}`, `${PRM_PATH}${trimSlash(new URL(parts.resourceUrl).pathname)}`]);

  const routeOf = (path: string): RouteName => path === MCP_PATH ? 'mcp' : path === '/healthz' ? 'healthz' : path === '/readyz' ? 'readyz'
    : path === '/metrics' ? 'metrics' : prmPaths.has(path) ? 'prm' : 'other';

  /** The answer to a refused authentication (an unread body is then discarded by `writeResponse`, and the connection closed). */
  function refusal(auth: AuthRefused): Response {
    metrics.authFailure(auth.reason);
    return jsonResponse(auth.status, auth.body, auth.headers);
  }

  /** The answer when the service is reading as many bodies (or buffering as many bytes) as it will at once. */
  function bodiesBusy(): Response {
    metrics.bodyRefused('busy');
    httpLog.warn('request refused: the service is reading as many request bodies as it will at once');
    return jsonRpcError(503, JSONRPC.SERVER_ERROR, 'Service Unavailable: the server is reading as many request bodies as it will at once; retry shortly', {'Retry-After': '1'});
  }

  async function metricsRoute(req: IncomingMessage): Promise<Response> {
    if (!config.metrics.public) {
      const auth = await authenticator.authenticate(req.headers.authorization);
      if (!auth.ok) return refusal(auth);
      authenticatedRequests.add(req);
      if (!mayReadMetrics(config, auth.principal)) {
        httpLog.info({principal: auth.principal.id}, 'request refused: principal may not read /metrics');
        return jsonResponse(403, {error: 'forbidden', error_description: 'This principal may not read /metrics (the service configuration lists who may, in metrics.principals).'});
      }
    }
    const {contentType, body} = await metrics.render();
    return new Response(body, {status: 200, headers: {'Content-Type': contentType, 'Cache-Control': 'no-store'}});
  }

  async function mcpRoute(req: IncomingMessage, url: URL, closed: AbortSignal): Promise<Response> {
    const method = (req.method ?? 'GET').toUpperCase();
    if (parts.draining()) return jsonRpcError(503, JSONRPC.SERVER_ERROR, 'Service Unavailable: the server is shutting down.', {Connection: 'close', 'Retry-After': '1'});
    if (method !== 'GET' && method !== 'POST' && method !== 'DELETE') {
      return jsonRpcError(405, JSONRPC.SERVER_ERROR, 'Method not allowed.', {Allow: 'GET, POST, DELETE'});
    }
    if ([...url.searchParams.keys()].some((k) => CREDENTIAL_PARAMS.has(k.toLowerCase()))) {
      httpLog.info('request refused: credential in the query string');
      return refusal(authenticator.queryTokenRefusal());
    }
    const auth = await authenticator.authenticate(req.headers.authorization);
    if (!auth.ok) return refusal(auth);
    authenticatedRequests.add(req);
    const principal = auth.principal;

    let text: string | undefined;
    let parsed: unknown;
    if (method === 'POST') {
      if (!isJsonContentType(req.headers['content-type'] ?? null)) {
        return jsonRpcError(415, JSONRPC.SERVER_ERROR, 'Unsupported Media Type: Content-Type must be application/json');
      }
      const slot = parts.bodyBudget.begin(principal.id);
      if (slot === 'principal-busy') {
        metrics.bodyRefused('principal-busy');
        httpLog.info({principal: principal.id}, 'request refused: too many bodies of this principal being read');
        return jsonRpcError(429, JSONRPC.SERVER_ERROR, `Too Many Requests: at most ${parts.bodyBudget.limits.maxConcurrentPerPrincipal} request bodies of one principal are read at once; retry when one has been sent`, {'Retry-After': '1'});
      }
      if (slot === 'busy') return bodiesBusy();
      let read;
      try {
        read = await readBody(req, config.maxBodyBytes, slot);
      } catch {
        return jsonRpcError(400, JSONRPC.PARSE_ERROR, 'Parse error: the request body could not be read');
      } finally {
        slot.release();
      }
      if (!read.ok && 'busy' in read) return bodiesBusy();
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
    const request = toWebRequest(req, url, {method, signal: closed, body: text});
    const authInfo: AuthInfo = {
      token: '',
      clientId: principal.id,
      scopes: [...principal.scopes],
      expiresAt: auth.expiresAt,
      resourceMetadataUrl: authenticator.resourceMetadataUrl,
      extra: {principal},
    };
    const legacy = await isLegacyRequest(request, parsed, {maxRequestBodySize: config.maxBodyBytes});
    if (legacy) return sessions.handle(request, parsed, principal, authInfo);
    return modern.fetch(request, {parsedBody: parsed, authInfo});
  }

  return async (req, closed) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      return {route: 'other', response: jsonResponse(400, {error: 'bad_request'})};
    }
    const route = routeOf(url.pathname);
    if (!validateOriginHeader(req.headers.origin, allowedOrigins).ok) {
      httpLog.info({route}, 'request refused: foreign Origin');
      return {route, response: jsonRpcError(403, JSONRPC.SERVER_ERROR, 'Forbidden: Origin not allowed')};
    }
    const hostChecked = route !== 'healthz' && route !== 'readyz' && !(route === 'metrics' && metricsNeedBearer);
    if (hostChecked && !validateHostHeader(req.headers.host, allowedHosts).ok) {
      httpLog.info({route}, 'request refused: Host not allowed (DNS rebinding defence)');
      return {route, response: jsonRpcError(403, JSONRPC.SERVER_ERROR, 'Forbidden: Host not allowed')};
    }
    switch (route) {
      case 'healthz':
        return {route, response: jsonResponse(200, {status: 'ok'})};
      case 'readyz': {
        const report = await readiness.report();
        return {route, response: jsonResponse(report.ready ? 200 : 503, report)};
      }
      case 'metrics':
        return {route, response: await metricsRoute(req)};
      case 'prm':
        if (prm === undefined) return {route, response: jsonResponse(404, {error: 'not_found'})};
        if (req.method !== 'GET' && req.method !== 'HEAD') return {route, response: jsonResponse(405, {error: 'method_not_allowed'}, {Allow: 'GET, HEAD'})};
        return {route, response: jsonResponse(200, prm, {'Access-Control-Allow-Origin': '*'})};
      case 'mcp':
        return {route, response: await mcpRoute(req, url, closed)};
      default:
        return {route, response: jsonResponse(404, {error: 'not_found'})};
    }
  };
}

/** RFC 9728 protected resource metadata, when OAuth is configured. */
function protectedResourceMetadata(config: ServiceConfig, resourceUrl: string): Record<string, unknown> | undefined {
  const oauth = config.oauth;
  if (oauth === undefined) return undefined;
  const scopes = oauth.scopesSupported ?? oauth.requiredScopes;
  return {
    ...buildOAuthProtectedResourceMetadata({
      oauthMetadata: {issuer: oauth.issuer} as OAuthMetadata,
      resourceServerUrl: new URL(resourceUrl),
      resourceName: 'toolcell',
      ...(scopes.length > 0 ? {scopesSupported: [...scopes]} : {}),
    }),
    bearer_methods_supported: ['header'],
  };
}

/** Host header names accepted: the configured list, or loopback names plus the bind address; always the resource URL's host. */
function hostAllowlist(config: ServiceConfig, host: string, resourceUrl: string): string[] {
  const hosts = new Set<string>(config.allowedHosts ?? localhostAllowedHostnames());
  if (config.allowedHosts === undefined && host !== '0.0.0.0' && host !== '::') hosts.add(host.includes(':') ? `[${host}]` : host);
  hosts.add(new URL(resourceUrl).hostname);
  return [...hosts];
}

const trimSlash = (path: string) => (path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path);
