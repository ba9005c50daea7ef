// TLS interception for hosts that carry a granted secret: terminate the sandbox's TLS with a leaf of the egress CA, substitute secrets, forward each request to the resolved address over verified TLS.
import type {Duplex} from 'node:stream';
import {createServer, type IncomingMessage, type Server, type ServerResponse} from 'node:http';
import {request as httpsRequest} from 'node:https';
import {isIP} from 'node:net';
import {createSecureContext, getCACertificates, TLSSocket, type SecureContext} from 'node:tls';
import {log as rootLog} from '../log.ts';
import type {EgressCa} from './ca.ts';
import type {EgressCallHandle, EgressInterceptor, EgressOutcome} from './proxy.ts';
import {prepareScrubbedRequest, unscrubbableResponse} from './response-guard.ts';
import {CallSecrets, isSecretRefusal} from './secrets.ts';

const log = rootLog.child({component: 'tls-intercept'});

/** Where a CONNECT goes: the name the sandbox asked for and the address the proxy resolved and checked. */
export interface InterceptTarget {
  /** Host name (lower case) or IP literal as the sandbox named it; SNI and Host toward the upstream. */
  host: string;
  port: number;
  /** The address the egress policy resolved and allowed; the only address connected to (no second lookup: DNS rebinding). */
  address: string;
}

/**
 * The per-call limits interception counts against (the same counter as the proxy's tunnels and
 * the isolate `fetch`). Each method returns a refusal message when the call is over its limit,
 * undefined when the use fits.
 */
export interface EgressBudget {
  /** One more request (maxRequests). */
  request(): string | undefined;
  /** `bytes` more sent upstream (maxBytesOut). */
  out(bytes: number): string | undefined;
  /** `bytes` more received from upstream (maxBytesIn). */
  in(bytes: number): string | undefined;
}

/** One egress decision, for the audit event `egress.allowed` / `egress.denied` (never a value, a body or a header). */
export interface EgressDecision {
  allowed: boolean;
  host: string;
  port: number;
  method: string;
  /** The upstream's status (allowed requests that got an answer). */
  status?: number;
  bytesOut: number;
  bytesIn: number;
  /** For a refusal: `secret` (placeholder to the wrong place), `egress` (limits, Host mismatch), `upstream-tls` (the upstream's certificate is not trusted), `timeout`. */
  rule?: 'secret' | 'egress' | 'upstream-tls' | 'timeout' | 'upstream';
  /** The secret a `secret` refusal is about, or the secrets substituted in an allowed request (names only). */
  secrets?: string[];
  /** Why, in words (no host paths, no values). */
  reason?: string;
}

/** What interception needs from the call. */
export interface InterceptContext {
  /** The call's placeholders. */
  secrets: CallSecrets;
  budget: EgressBudget;
  /** Per-request timeout (ms): headers and body of the upstream's answer must arrive within it. */
  requestTimeoutMs: number;
  /** Aborted when the call ends: every connection and upstream request of the call is destroyed. */
  signal: AbortSignal;
  /** Called once per request (and once per refused connection). */
  onDecision(decision: EgressDecision): void;
}

/** Options of the interceptor. */
export interface TlsInterceptorOptions {
  ca: EgressCa;
  /**
   * Extra CA certificates (PEM) trusted for upstream servers besides Node's default store
   * (`serve --upstream-ca FILE`); this is how tests trust a local HTTPS test server.
   */
  upstreamCa?: string;
}

/** The call's limits as the proxy counts them, in the shape `intercept` uses. */
function budgetOf(call: EgressCallHandle): EgressBudget {
  const {grant, profile} = call.context;
  const over = (limit: 'maxRequests' | 'maxBytesOut' | 'maxBytesIn') => `the profile "${profile}" allows ${limit} = ${grant[limit]} ${limit === 'maxRequests' ? 'requests' : 'bytes'} per call (${limit})`;
  return {
    request: () => (call.chargeRequest() ? undefined : over('maxRequests')),
    out: (bytes) => (call.chargeOut(bytes) ? undefined : over('maxBytesOut')),
    in: (bytes) => (call.chargeIn(bytes) ? undefined : over('maxBytesIn')),
  };
}

/** Hop-by-hop and proxy fields never forwarded (RFC 9110 §7.6.1), plus Host, which is set from the target. */
const DROP_REQUEST = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'accept-encoding']);
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** Node error codes of an upstream certificate that does not verify. */
const CERT_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH/;

interface Connection {
  target: InterceptTarget;
  ctx: InterceptContext;
}

/**
 * Terminates TLS toward the sandbox for hosts that carry a granted secret, and serves the
 * HTTP/1.1 requests inside with node:http: each request has its placeholders substituted
 * (`CallSecrets.substitute`; a placeholder that does not belong to the host is refused with
 * 403 and an `egress.denied` decision, rule `secret`), its body scanned for other secrets'
 * placeholders, and is forwarded to the already resolved address with node:https, SNI and Host
 * = the name, the upstream certificate verified against Node's default roots plus `upstreamCa`.
 * Responses have every substituted value replaced by its placeholder (headers and body;
 * `Accept-Encoding: identity` is sent and `Range`/`If-Range` are not forwarded, and a response
 * that is compressed, transfer-encoded other than chunked, or partial (206, multipart/byteranges)
 * is refused with 502 and an `egress.denied` decision, rule `upstream`: response-guard.ts).
 *
 * Only what the proxy hands over is intercepted: hosts without a granted secret are tunnelled
 * untouched by the proxy and never reach this class.
 * Does NOT guarantee: that the upstream cannot get the secret back to the tool transformed
 * (base64, split, compressed in a format of its own); HTTP/2, WebSocket and other upgrades are
 * refused (HTTP/1.1 only); a request body is scanned for foreign placeholders as it streams, so a
 * refusal may come after part of it was sent to the (allowed) upstream.
 */
export class TlsInterceptor {
  readonly #ca: EgressCa;
  readonly #trust: string[];
  readonly #http: Server;
  readonly #connections = new WeakMap<Duplex, Connection>();

  constructor(options: TlsInterceptorOptions) {
    this.#ca = options.ca;
    this.#trust = [...getCACertificates('default'), ...(options.upstreamCa ? [options.upstreamCa] : [])];
    this.#http = createServer({maxHeaderSize: 16 * 1024, headersTimeout: 30_000, requestTimeout: 0, keepAliveTimeout: 5_000}, (req, res) => this.#handle(req, res));
    this.#http.on('upgrade', (_req, socket: Duplex) => socket.end('HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-length: 0\r\n\r\n'));
    this.#http.on('connect', (_req, socket: Duplex) => socket.end('HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ncontent-length: 0\r\n\r\n'));
    this.#http.on('clientError', (_err, socket: Duplex) => socket.destroy());
  }

  /**
   * Takes over `clientSocket`, the sandbox's side of a CONNECT tunnel to `target` (the proxy
   * has answered `200` and put back any bytes that came with the CONNECT), and serves it until
   * the sandbox closes it or `ctx.signal` aborts. Never throws: failures close the socket.
   */
  intercept(target: InterceptTarget, clientSocket: Duplex, ctx: InterceptContext): void {
    const refuse = (reason: string, rule: EgressDecision['rule'], secret?: string) => {
      ctx.onDecision({allowed: false, host: target.host, port: target.port, method: 'CONNECT', bytesOut: 0, bytesIn: 0, rule, reason, ...(secret ? {secrets: [secret]} : {})});
      clientSocket.destroy();
    };
    try {
      ctx.secrets.checkTarget(target.host, target.port);
    } catch (err) {
      return refuse('a placeholder in the target host', 'secret', isSecretRefusal(err) ? err.data.secret : undefined);
    }
    if (ctx.signal.aborted) return refuse('the call has ended', 'egress');
    void this.#ca.leaf(target.host).then((leaf) => {
      if (ctx.signal.aborted || clientSocket.destroyed) return clientSocket.destroy();
      const context: SecureContext = createSecureContext({cert: leaf.cert, key: leaf.key, minVersion: 'TLSv1.2'});
      const tls = new TLSSocket(clientSocket, {
        isServer: true,
        secureContext: context,
        ALPNProtocols: ['http/1.1'],
        SNICallback: (servername, cb) => {
          const name = servername.toLowerCase().replace(/\.$/, '');
          if (name !== target.host) {
            const placeholder = ctx.secrets.found(servername).length > 0;
            refuse(placeholder ? 'a placeholder in the TLS server name' : `the TLS server name does not match the CONNECT host ${target.host}`, placeholder ? 'secret' : 'egress', ctx.secrets.found(servername)[0]?.name);
            return cb(new Error('server name mismatch'));
          }
          cb(null, context);
        },
      });
      this.#connections.set(tls, {target, ctx});
      const onAbort = () => tls.destroy();
      ctx.signal.addEventListener('abort', onAbort, {once: true});
      tls.once('close', () => ctx.signal.removeEventListener('abort', onAbort));
      tls.on('error', (err) => log.debug({err, host: target.host}, 'sandbox TLS connection failed'));
      this.#http.emit('connection', tls);
    }, (err: unknown) => {
      log.warn({err, host: target.host}, 'cannot mint a leaf certificate');
      refuse('no certificate for this host', 'egress');
    });
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.#connections.get(req.socket);
    if (conn === undefined) {
      res.writeHead(500).end();
      return;
    }
    const {target, ctx} = conn;
    const method = req.method ?? 'GET';
    let bytesOut = 0;
    let bytesIn = 0;
    let decided = false;
    const decide = (d: Omit<EgressDecision, 'host' | 'port' | 'method' | 'bytesOut' | 'bytesIn'>) => {
      if (decided) return;
      decided = true;
      ctx.onDecision({host: target.host, port: target.port, method, bytesOut, bytesIn, ...d});
    };
    const fail = (status: number, text: string, d: Parameters<typeof decide>[0]) => {
      decide(d);
      if (!res.headersSent) res.writeHead(status, {'content-type': 'text/plain; charset=utf-8', 'x-toolcell-egress': d.rule ?? 'refused', connection: 'close'}).end(`toolcell egress: ${text}\n`);
      else res.destroy();
      req.resume();
    };

    const hostHeader = (req.headers.host ?? '').toLowerCase().replace(/^\[([^\]]+)\](:\d+)?$/, '$1').replace(/:\d+$/, '').replace(/\.$/, '');
    if (hostHeader !== target.host) {
      return fail(421, `the Host header does not name ${target.host}, the host this connection was opened to`, {allowed: false, rule: 'egress', reason: 'Host header mismatch'});
    }
    const over = ctx.budget.request();
    if (over !== undefined) return fail(429, over, {allowed: false, rule: 'egress', reason: over});

    let headers: Record<string, string | string[]>;
    try {
      headers = ctx.secrets.substitute({host: target.host, port: target.port, tls: true, url: req.url ?? '/', headers: req.headers});
    } catch (err) {
      if (!isSecretRefusal(err)) throw err;
      return fail(403, err.message, {allowed: false, rule: 'secret', secrets: [err.data.secret], reason: `placeholder in the ${err.data.where}`});
    }
    const used = ctx.secrets.secretsFor(target.host, target.port).filter((s) => {
      const sent = req.headers[s.header];
      return sent !== undefined && ctx.secrets.found(Array.isArray(sent) ? sent.join('\n') : sent).includes(s);
    });
    for (const name of Object.keys(headers)) if (DROP_REQUEST.has(name.toLowerCase())) delete headers[name];
    headers.host = (isIP(target.host) === 6 ? `[${target.host}]` : target.host) + (target.port === 443 ? '' : `:${target.port}`);
    // Whole, uncompressed bodies only: Range/If-Range removed, Accept-Encoding identity (response-guard.ts).
    prepareScrubbedRequest(headers);

    const timeout = AbortSignal.timeout(ctx.requestTimeoutMs);
    const signal = AbortSignal.any([ctx.signal, timeout]);
    const upstream = httpsRequest({
      host: target.address,
      port: target.port,
      ...(isIP(target.host) === 0 ? {servername: target.host} : {}),
      method,
      path: req.url ?? '/',
      headers,
      ca: this.#trust,
      agent: false,
      signal,
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (timeout.aborted) return fail(504, `the upstream did not answer within ${ctx.requestTimeoutMs} ms`, {allowed: false, rule: 'timeout', reason: 'request timeout'});
      if (ctx.signal.aborted) return fail(503, 'the call has ended', {allowed: false, rule: 'egress', reason: 'call ended'});
      if (CERT_ERRORS.test(err.code ?? '')) {
        log.info({host: target.host, code: err.code}, 'upstream certificate refused');
        return fail(502, `the upstream's TLS certificate for ${target.host} is not trusted (${err.code}); the request was not sent`, {allowed: false, rule: 'upstream-tls', reason: err.code ?? 'certificate'});
      }
      log.debug({err, host: target.host}, 'upstream request failed');
      fail(502, `the upstream ${target.host}:${target.port} could not be reached (${err.code ?? 'error'})`, {allowed: false, rule: 'upstream', reason: err.code ?? 'error'});
    });
    upstream.on('response', (answer) => {
      // Every secret of the call, not only those sent in this request: an upstream may hand back a stored value.
      const scrub = ctx.secrets.scrubber();
      // A compressed or partial body would pass the scrubber unread (the sandbox's fetch decompresses it after): refused.
      const unreadable = unscrubbableResponse(answer.statusCode, answer.headers);
      if (unreadable !== undefined) {
        fail(502, unreadable, {allowed: false, rule: 'upstream', status: 502, reason: 'unscrubbable response'});
        answer.on('error', () => undefined);
        answer.destroy();
        return;
      }
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(answer.headers)) {
        if (value === undefined || DROP_RESPONSE.has(name) || ctx.secrets.inHeaderName(name)) continue;
        out[name] = Array.isArray(value) ? value.map(scrub.whole) : scrub.whole(value);
      }
      // The body is scrubbed, so its length may change.
      delete out['content-length'];
      // The upstream's reason phrase is not passed on (it may carry the secret): Node sends the standard one (STATUS_CODES).
      res.writeHead(answer.statusCode ?? 502, out);
      answer.on('data', (chunk: Buffer) => {
        bytesIn += chunk.length;
        const refused = ctx.budget.in(chunk.length);
        if (refused !== undefined) {
          upstream.destroy();
          decide({allowed: false, rule: 'egress', status: answer.statusCode, reason: refused});
          res.destroy();
          return;
        }
        res.write(scrub.chunk(chunk));
      });
      answer.on('end', () => {
        res.end(scrub.flush());
        decide({allowed: true, status: answer.statusCode, ...(used.length ? {secrets: used.map((s) => s.name)} : {})});
      });
      answer.on('error', () => res.destroy());
    });

    let carry = '';
    req.on('data', (chunk: Buffer) => {
      bytesOut += chunk.length;
      const refused = ctx.budget.out(chunk.length);
      if (refused !== undefined) {
        upstream.destroy();
        return fail(413, refused, {allowed: false, rule: 'egress', reason: refused});
      }
      try {
        carry = ctx.secrets.scanBody(chunk.toString('latin1'), carry, target.host, target.port);
      } catch (err) {
        if (!isSecretRefusal(err)) throw err;
        upstream.destroy();
        return fail(403, err.message, {allowed: false, rule: 'secret', secrets: [err.data.secret], reason: 'placeholder in the body'});
      }
      if (!upstream.destroyed) upstream.write(chunk);
    });
    req.on('end', () => {
      if (!upstream.destroyed) upstream.end();
    });
    req.on('error', () => upstream.destroy());
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
  }

  /**
   * The hook the egress proxy calls for an allowed CONNECT to a host that carries one of the
   * call's secrets (`EgressProxyOptions.intercept`): answers `200`, puts back the bytes that
   * came with the CONNECT, and serves the tunnel with `intercept`, counting against the call's
   * limits (`chargeRequest`/`chargeOut`/`chargeIn`) and auditing each request through the
   * proxy's `record` (`egress.allowed` with the allow entry as rule, `egress.denied` with
   * `secret`, `upstream-tls`, ...; secret names only). A call whose context carries no
   * `CallSecrets` is refused (502): nothing is intercepted without them.
   */
  proxyHook(): EgressInterceptor {
    return async (target, client, head, call) => {
      const started = performance.now();
      const secrets = call.context.secrets;
      const record = (d: EgressDecision, outcome: EgressOutcome) => call.record({
        type: d.allowed ? 'egress.allowed' : 'egress.denied', host: d.host, port: d.port, ...(d.allowed ? {address: target.address} : {}),
        method: d.method, status: d.status ?? (d.allowed ? 200 : d.rule === 'timeout' ? 504 : d.rule === 'secret' ? 403 : 502), bytesOut: d.bytesOut, bytesIn: d.bytesIn,
        rule: d.allowed ? target.rule : d.rule === 'timeout' ? 'requestTimeoutMs' : d.rule ?? 'egress', ...(d.secrets ? {secrets: d.secrets} : {}),
        durationMs: Math.round(performance.now() - started),
      }, outcome);
      if (!(secrets instanceof CallSecrets)) {
        client.end('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        record({allowed: false, host: target.host, port: target.port, method: 'CONNECT', bytesOut: 0, bytesIn: 0, rule: 'egress', status: 502}, 'failed');
        return;
      }
      const ended = new AbortController();
      client.once('close', () => ended.abort());
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) client.unshift(head);
      this.intercept({host: target.host, port: target.port, address: target.address}, client, {
        secrets,
        requestTimeoutMs: call.context.grant.requestTimeoutMs,
        signal: ended.signal,
        budget: budgetOf(call),
        onDecision: (d) => record(d, d.allowed ? 'allowed' : d.rule === 'timeout' || /max(Requests|Bytes)/.test(d.reason ?? '') ? 'limit' : d.rule === 'upstream' || d.rule === 'upstream-tls' ? 'failed' : 'denied'),
      });
    };
  }

  /** Stops serving: open intercepted connections are closed. */
  close(): void {
    this.#http.closeAllConnections();
    this.#http.close();
  }
}
