// The egress proxy: one HTTP forward proxy and CONNECT tunnel endpoint per call, on a Unix socket, enforcing the call's grant.
import {chmod, chown, mkdtemp, rm} from 'node:fs/promises';
import {createServer, request as httpRequest, STATUS_CODES, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse} from 'node:http';
import {connect as netConnect, type Socket} from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import type {Duplex} from 'node:stream';
import {newAuditId, type AuditEgressV2} from '../audit/audit-event.ts';
import {prepareScrubbedRequest, unscrubbableResponse} from './response-guard.ts';
import {resolveEgress, type EgressGrant, type EgressLookup, type ResolvedEgress} from './policy.ts';

/**
 * Why a Unix socket per call: the sandbox reaches the proxy only through a socket file that
 * toolcell bind-mounts into that call's container (a fresh 0700 directory owned by the call's
 * leased uid), so the proxy knows the call by the socket it accepted on: no credential the
 * sandbox could forge, no address another sandbox could reach.
 *
 * What it serves (node:http parses; no homemade parser):
 * - HTTP forward proxying of absolute-form requests (`GET http://host:port/path`), hop-by-hop
 *   headers (RFC 9110 §7.6.1: Connection and the fields it names, Keep-Alive, Proxy-*, TE,
 *   Trailer, Transfer-Encoding, Upgrade) stripped both ways;
 * - CONNECT tunnels (RFC 9110 §9.3.6) to an allowed host:port: any TCP protocol, bytes relayed
 *   untouched (opaque: TLS stays end to end) unless the call's secrets say the host carries a
 *   secret and an interceptor is installed (h-eg2's TLS interception); a call with secrets has
 *   the bytes it sends into an opaque tunnel scanned for a literal placeholder that does not
 *   belong to that host (found: the tunnel ends, `egress.denied` rule `secret`).
 * Every destination goes through `resolveEgress` (allowlist, one DNS answer, refused ranges);
 * the upstream connection goes to the address it returned, never to the name.
 *
 * Limits (the grant's, per call): `maxRequests` counts every HTTP request and CONNECT, allowed
 * or refused; `maxBytesOut`/`maxBytesIn` count body and tunnel payload bytes; `requestTimeoutMs`
 * bounds one HTTP request end to end and the connect of a tunnel, and is the longest a tunnel
 * may stay silent both ways. A limit reached answers 429 (requests), 413 (bytes out), 504
 * (timeout) or ends the stream (bytes in, once the response has started), and is recorded in
 * `session.limitHit` so the call's result can say which limit ended it.
 * Not guaranteed: what an allowed host relays further; HTTP/1.1 `Upgrade` (WebSocket) is
 * refused, use CONNECT; header bytes are not counted.
 */

/** Outcome label of `toolcell_egress_total`. */
export type EgressOutcome = 'allowed' | 'denied' | 'limit' | 'failed';

/** Connections open at once to one call's proxy socket (requests and tunnels); more are closed on accept. */
export const MAX_CALL_CONNECTIONS = 64;

/**
 * The secrets of a call, as h-eg2's secret module hands them to the proxy: `carries` says
 * whether requests to `host:port` must be intercepted (a secret belongs to that host). Opaque
 * otherwise: the proxy never reads a value.
 */
export interface EgressSecrets {
  carries(host: string, port: number): boolean;
  /**
   * A placeholder in a request the proxy does not intercept (plain HTTP: `tls` false; a CONNECT
   * target: `url` '' and no headers): the refusal (403, rule `secret`, audited with the secret's
   * name), else undefined (h-eg2, egress/secrets.ts `CallSecrets.refusal`).
   */
  refusal?(request: {host: string; port: number; tls: boolean; url: string; headers: IncomingMessage['headers']}): {secret: string; message: string; host: string} | undefined;
  /** Replaces the call's secret values by their placeholders in a plain-HTTP response (`CallSecrets.scrubber`). */
  scrubber?(): {whole(text: string): string; chunk(buf: Buffer): Buffer; flush(): Buffer};
  /** Whether a response header name carries a secret value, any case (`CallSecrets.inHeaderName`): such a header is dropped. */
  inHeaderName?(name: string): boolean;
  /**
   * Scans what the sandbox sends into an opaque tunnel (one chunk as latin1 text, and the carry
   * the previous chunk returned; returns the new carry): throws the refusal (ToolcellError
   * `DENIED`, data `{rule: "secret", secret}`) when a placeholder of a secret that does not belong
   * to `host:port` occurs literally (`CallSecrets.scanBody`). Only plaintext protocols can match
   * (Node's fetch sends http:// through CONNECT too); TLS bytes never carry a placeholder.
   */
  scanBody?(chunk: string, carry: string, host: string, port: number): string;
  /** Not the proxy's: replaces the values, raw and JSON-escaped, in what the call hands to its client (`CallSecrets.outputScrubber`, egress/output-scrub.ts). */
  outputScrubber?(): (text: string) => string;
}

/** Who and what a call's egress belongs to; built by the caller for each call. */
export interface EgressCallContext {
  /** The call's job id (joins audit events and logs). */
  callId: string;
  principal: string;
  /** The MCP tool name. */
  tool: string;
  profile: string;
  grant: EgressGrant;
  /** Filled by the secrets module (h-eg2) when the profile grants secrets; absent: nothing is intercepted. */
  secrets?: EgressSecrets;
}

/** Bytes and requests a call used so far. */
export interface EgressUsage {
  requests: number;
  bytesOut: number;
  bytesIn: number;
  /** Decisions refused after a limit was reached and not audited one by one. */
  unaudited: number;
}

/** The limit that ended (part of) a call's egress, for its result (`DENIED`, `rule: "egress"`). */
export interface EgressLimitHit {
  limit: 'maxRequests' | 'maxBytesOut' | 'maxBytesIn' | 'requestTimeoutMs';
  /** Text for the tool's result, naming the limit and its value. */
  message: string;
}

/**
 * What an interceptor gets for one CONNECT it takes over (h-eg2): the call, its limits and the
 * means to charge bytes and record decisions, so interception counts against the same limits.
 */
export interface EgressCallHandle {
  readonly context: EgressCallContext;
  readonly usage: Readonly<EgressUsage>;
  /** Charges bytes sent upstream; false (and the call's limitHit set) when over `maxBytesOut`: stop sending. */
  chargeOut(bytes: number): boolean;
  /** Charges bytes received; false when over `maxBytesIn`. */
  chargeIn(bytes: number): boolean;
  /** Charges one more request (an inner request of an intercepted tunnel); false when over `maxRequests`. */
  chargeRequest(): boolean;
  /** Writes one audit event (and counts it in the metrics). */
  record(event: Omit<AuditEgressV2, 'v' | 'at' | 'auditId' | 'jobId' | 'principal' | 'tool' | 'profile'>, outcome: EgressOutcome): void;
}

/**
 * Takes over one allowed CONNECT tunnel to a host that carries a secret (TLS interception,
 * h-eg2). It must answer the client (`HTTP/1.1 200` or an error) and own both sockets from then
 * on; `head` holds bytes the client sent after the CONNECT header. Must not throw.
 */
export type EgressInterceptor = (target: ResolvedEgress, client: Duplex, head: Buffer, call: EgressCallHandle) => Promise<void>;

/** Options of {@link EgressProxy}. */
export interface EgressProxyOptions {
  /** Where each call's socket directory is created (default the OS temp dir). Must be on a filesystem Docker can bind-mount. */
  socketRoot?: string;
  /** Resolver (default the host's, `dns.promises.lookup`); tests map names to 127.0.0.x. */
  lookup?: EgressLookup;
  /** Receives every audit event. */
  audit?: (event: AuditEgressV2) => void;
  /** Counts every decision (`toolcell_egress_total{tool, outcome}`). */
  count?: (tool: string, outcome: EgressOutcome) => void;
  /** The TLS interceptor for hosts that carry a secret (h-eg2); absent: every tunnel is opaque. */
  intercept?: EgressInterceptor;
}

/** One call's proxy endpoint. Close it when the call ends (idempotent). */
export interface EgressSession extends AsyncDisposable {
  /** Host path of the Unix socket (inside `dir`). */
  readonly socketPath: string;
  /** The per-call directory holding the socket (mode 0700, owned by `uid`); bind-mount this. */
  readonly dir: string;
  readonly usage: Readonly<EgressUsage>;
  /** The first limit that was reached, if any. */
  readonly limitHit: EgressLimitHit | undefined;
  close(): Promise<void>;
}

/** Name of the socket file inside a session's directory. */
export const EGRESS_SOCKET_NAME = 'proxy.sock';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

/** Headers without the hop-by-hop ones (and those `Connection` names). Pure. */
export function endToEndHeaders(headers: IncomingMessage['headers']): OutgoingHttpHeaders {
  const named = String(headers.connection ?? '').split(',').map((v) => v.trim().toLowerCase()).filter(Boolean);
  const drop = new Set([...HOP_BY_HOP, ...named]);
  const out: OutgoingHttpHeaders = {};
  for (const [key, value] of Object.entries(headers)) if (value !== undefined && !drop.has(key)) out[key] = value;
  return out;
}

/** Parses a CONNECT authority (`host:port`, `[v6]:port`); undefined when malformed. */
function parseAuthority(text: string): {host: string; port: number} | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/@]+):([0-9]{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65_535 ? {host: m[1]!, port} : undefined;
}

/** Hosts in refusal texts: at most 100 characters of what the sandbox sent. */
const shown = (host: string) => (host.length > 100 ? `${host.slice(0, 100)}…` : host);

/**
 * The egress proxy: a host-side service that opens one endpoint per call (`open`). Backends are
 * handed sessions; the proxy is never a backend. All upstream connections are made by this
 * process, to addresses `resolveEgress` returned.
 */
export class EgressProxy {
  readonly #options: EgressProxyOptions;
  readonly #sessions = new Set<EgressSession>();

  constructor(options: EgressProxyOptions = {}) {
    this.#options = options;
  }

  /**
   * Opens the proxy endpoint of one call: a fresh directory (mode 0700) with a Unix socket
   * (mode 0600), both owned by `uid`/`gid` when given (the container's leased uid, so that only
   * that call's processes can connect), else by this process.
   * @throws Error when the directory or socket cannot be made (permissions: chown needs root)
   */
  async open(context: EgressCallContext, owner?: {uid: number; gid: number}): Promise<EgressSession> {
    const dir = await mkdtemp(join(this.#options.socketRoot ?? tmpdir(), 'toolcell-egress-'));
    try {
      await chmod(dir, 0o700);
      const session = new Session(dir, context, this.#options, () => this.#sessions.delete(session));
      await session.listen();
      if (owner) {
        await chown(session.socketPath, owner.uid, owner.gid);
        await chown(dir, owner.uid, owner.gid);
      }
      this.#sessions.add(session);
      return session;
    } catch (error) {
      await rm(dir, {recursive: true, force: true});
      throw error;
    }
  }

  /** Closes every open session (shutdown). */
  async close(): Promise<void> {
    await Promise.all([...this.#sessions].map((s) => s.close()));
  }
}

class Session implements EgressSession {
  readonly dir: string;
  readonly socketPath: string;
  readonly usage: EgressUsage = {requests: 0, bytesOut: 0, bytesIn: 0, unaudited: 0};
  limitHit: EgressLimitHit | undefined;
  readonly #context: EgressCallContext;
  readonly #options: EgressProxyOptions;
  readonly #server: Server;
  readonly #sockets = new Set<Duplex>();
  readonly #onClose: () => void;
  #closed: Promise<void> | undefined;

  constructor(dir: string, context: EgressCallContext, options: EgressProxyOptions, onClose: () => void) {
    this.dir = dir;
    this.socketPath = join(dir, EGRESS_SOCKET_NAME);
    this.#context = context;
    this.#options = options;
    this.#onClose = onClose;
    // A connection that has not sent a whole request head within min(30 s, requestTimeoutMs) gets 408 and is closed (checked every second).
    this.#server = createServer({requestTimeout: context.grant.requestTimeoutMs + 5000, headersTimeout: Math.min(30_000, context.grant.requestTimeoutMs),
      connectionsCheckingInterval: 1000, maxHeaderSize: 64 * 1024});
    // Open connections (requests and tunnels) of one call; beyond, a new one is closed at once (a flood cannot exhaust the server's descriptors).
    this.#server.maxConnections = MAX_CALL_CONNECTIONS;
    this.#server.on('connection', (socket: Socket) => this.#track(socket));
    this.#server.on('request', (req, res) => void this.#forward(req, res));
    this.#server.on('connect', (req, socket, head) => void this.#tunnel(req, socket, head));
    this.#server.on('upgrade', (req, socket) => {
      this.#chargeRequest(); // counted like any request: a flood of them cannot grow the audit stream
      this.#refuseRaw(socket, 501, 'protocol', req.method ?? 'GET', shown(String(req.headers.host ?? '')), 0,
        'HTTP Upgrade (WebSocket) is not proxied; use a CONNECT tunnel (wss:// through HTTPS_PROXY).');
    });
    this.#server.on('clientError', (_err, socket) => socket.destroy());
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.socketPath, () => {
        this.#server.off('error', reject);
        chmod(this.socketPath, 0o600).then(resolve, reject);
      });
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#onClose();
      for (const s of this.#sockets) s.destroy();
      await new Promise<void>((resolve) => this.#server.close(() => resolve()));
      await rm(this.dir, {recursive: true, force: true});
    })();
    return this.#closed;
  }

  #track(socket: Duplex): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    if (this.#closed) socket.destroy();
  }

  get #grant(): EgressGrant {
    return this.#context.grant;
  }

  #hit(limit: EgressLimitHit['limit'], what: string): string {
    const value = this.#grant[limit];
    const unit = limit === 'requestTimeoutMs' ? 'ms' : limit === 'maxRequests' ? 'requests' : 'bytes';
    const message = `egress ${what} stopped: the profile "${this.#context.profile}" allows ${limit} = ${value} ${unit} per call`;
    this.limitHit ??= {limit, message};
    return message;
  }

  #record(event: Omit<AuditEgressV2, 'v' | 'at' | 'auditId' | 'jobId' | 'principal' | 'tool' | 'profile'>, outcome: EgressOutcome): void {
    this.#options.count?.(this.#context.tool, outcome);
    // Bounded per call: decisions beyond maxRequests (+ the one that reached it) are counted, not written.
    if (this.usage.requests > this.#grant.maxRequests + 1) {
      this.usage.unaudited++;
      return;
    }
    this.#options.audit?.({
      v: 2, at: new Date().toISOString(), auditId: newAuditId(), jobId: this.#context.callId, principal: this.#context.principal,
      tool: this.#context.tool, profile: this.#context.profile, ...event,
    });
  }

  #chargeRequest(): boolean {
    this.usage.requests++;
    return this.usage.requests <= this.#grant.maxRequests;
  }

  #chargeOut(bytes: number): boolean {
    this.usage.bytesOut += bytes;
    return this.usage.bytesOut <= this.#grant.maxBytesOut;
  }

  #chargeIn(bytes: number): boolean {
    this.usage.bytesIn += bytes;
    return this.usage.bytesIn <= this.#grant.maxBytesIn;
  }

  /** Answers a raw socket (CONNECT, Upgrade) with a status and a text body, then closes it; audits the refusal. */
  #refuseRaw(socket: Duplex, status: number, rule: string, method: string, host: string, port: number, text: string, started = performance.now(), secrets?: string[]): void {
    const body = `${text}\n`;
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    this.#record({type: 'egress.denied', host, port, method, status, bytesOut: 0, bytesIn: 0, rule, ...(secrets ? {secrets} : {}), durationMs: Math.round(performance.now() - started)},
      status === 429 || status === 413 || status === 504 ? 'limit' : status === 502 ? 'failed' : 'denied');
  }

  #refuseHttp(res: ServerResponse, status: number, rule: string, method: string, host: string, port: number, text: string, started: number, secrets?: string[]): void {
    if (!res.headersSent) {
      res.writeHead(status, {'content-type': 'text/plain; charset=utf-8', connection: 'close'});
      res.end(`${text}\n`);
    } else {
      res.destroy();
    }
    this.#record({type: 'egress.denied', host, port, method, status, bytesOut: 0, bytesIn: 0, rule, ...(secrets ? {secrets} : {}), durationMs: Math.round(performance.now() - started)},
      status === 429 || status === 413 || status === 504 ? 'limit' : status === 502 ? 'failed' : 'denied');
  }

  /** Decides a destination: the request limit, then the grant. Returns the target or the refusal (status, rule, text). */
  async #decide(host: string, port: number): Promise<{target: ResolvedEgress} | {status: number; rule: string; text: string}> {
    if (!this.#chargeRequest()) {
      return {status: 429, rule: 'maxRequests', text: this.#hit('maxRequests', `request to ${shown(host)}:${port}`)};
    }
    const r = await resolveEgress(this.#grant, host, port, {lookup: this.#options.lookup, timeoutMs: Math.min(5000, this.#grant.requestTimeoutMs)});
    if (!r.allowed) {
      const rule = r.rule === undefined ? 'allowlist' : /could not be resolved|no address|not an address/.test(r.reason) ? 'resolve' : 'address';
      return {status: 403, rule, text: `egress refused by the profile "${this.#context.profile}": ${r.reason}`};
    }
    // The lookup may answer after the call ended: nothing is opened for a closed session.
    if (this.#closed) return {status: 503, rule: 'egress', text: 'toolcell egress: the call has ended; nothing was sent.'};
    const {allowed: _allowed, ...target} = r;
    return {target};
  }

  async #forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const method = req.method ?? 'GET';
    let url: URL;
    try {
      if (!/^http:\/\//i.test(req.url ?? '')) throw new Error('not absolute-form');
      url = new URL(req.url!);
    } catch {
      req.resume();
      const https = /^https:/i.test(req.url ?? '');
      this.#chargeRequest();
      this.#refuseHttp(res, 400, 'protocol', method, shown(String(req.headers.host ?? '')), 0, https
        ? 'https:// URLs go through a CONNECT tunnel (HTTPS_PROXY), not as a plain proxy request.'
        : 'This is toolcell\'s egress proxy: send absolute-form requests (GET http://host:port/path) or CONNECT host:port.', started);
      return;
    }
    const host = url.hostname;
    const port = url.port === '' ? 80 : Number(url.port);
    const leak = this.#context.secrets?.refusal?.({host: host.replace(/^\[|\]$/g, ''), port, tls: false, url: req.url ?? '', headers: req.headers});
    if (leak !== undefined) {
      req.resume();
      this.#chargeRequest();
      this.#refuseHttp(res, 403, 'secret', method, shown(leak.host), port, `egress refused: ${leak.message}`, started, [leak.secret]);
      return;
    }
    const decision = await this.#decide(host, port);
    if (!('target' in decision)) {
      req.resume();
      this.#refuseHttp(res, decision.status, decision.rule, method, shown(host), port, decision.text, started);
      return;
    }
    const {target} = decision;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (Number.isFinite(declared) && this.usage.bytesOut + declared > this.#grant.maxBytesOut) {
      req.resume();
      this.#refuseHttp(res, 413, 'maxBytesOut', method, target.host, port, this.#hit('maxBytesOut', `request body to ${target.host}:${port}`), started);
      return;
    }
    const headers = endToEndHeaders(req.headers);
    headers.host = url.host;
    // A call with secrets has its responses scrubbed: whole, uncompressed bodies only (response-guard.ts).
    if (this.#context.secrets?.scrubber !== undefined) prepareScrubbedRequest(headers);
    let bytesOut = 0;
    let bytesIn = 0;
    let status = 0;
    let done = false;
    let failure: {status: number; rule: string; text: string} | undefined;
    const upstream = httpRequest({host: target.address, family: target.family, port, method, path: `${url.pathname}${url.search}`, headers, setHost: false, agent: false});
    // Destroyed with the session (and at once if it closed meanwhile).
    upstream.once('socket', (socket) => this.#track(socket));
    const timer = setTimeout(() => {
      failure ??= {status: 504, rule: 'requestTimeoutMs', text: this.#hit('requestTimeoutMs', `request to ${target.host}:${port}`)};
      upstream.destroy();
      finish();
    }, this.#grant.requestTimeoutMs);
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (failure) {
        this.#refuseHttp(res, failure.status, failure.rule, method, target.host, port, failure.text, started);
        return;
      }
      this.#record({type: 'egress.allowed', host: target.host, port, address: target.address, method, status, bytesOut, bytesIn, rule: target.rule,
        durationMs: Math.round(performance.now() - started)}, 'allowed');
    };
    req.on('data', (chunk: Buffer) => {
      bytesOut += chunk.length;
      if (!this.#chargeOut(chunk.length)) {
        failure ??= {status: 413, rule: 'maxBytesOut', text: this.#hit('maxBytesOut', `request body to ${target.host}:${port}`)};
        upstream.destroy();
        finish();
        return;
      }
      if (!upstream.write(chunk)) {
        req.pause();
        upstream.once('drain', () => req.resume());
      }
    });
    req.on('end', () => upstream.end());
    req.on('error', () => upstream.destroy());
    res.on('close', () => {
      if (res.writableFinished) return;
      upstream.destroy();
      finish();
    });
    upstream.on('response', (up) => {
      status = up.statusCode ?? 502;
      const length = Number(up.headers['content-length'] ?? 0);
      if (Number.isFinite(length) && this.usage.bytesIn + length > this.#grant.maxBytesIn) {
        failure ??= {status: 502, rule: 'maxBytesIn', text: this.#hit('maxBytesIn', `response from ${target.host}:${port}`)};
        up.destroy();
        upstream.destroy();
        finish();
        return;
      }
      // A stored secret value may come back from any host: scrubbed here too; the upstream's reason phrase is not passed on.
      const scrub = this.#context.secrets?.scrubber?.();
      // A compressed or partial body would pass the scrubber unread (the sandbox's client decompresses it after): refused.
      const unreadable = scrub === undefined ? undefined : unscrubbableResponse(up.statusCode, up.headers);
      if (unreadable !== undefined) {
        failure ??= {status: 502, rule: 'upstream', text: `egress from ${target.host}:${port} refused: ${unreadable}`};
        up.on('error', () => undefined);
        up.destroy();
        upstream.destroy();
        finish();
        return;
      }
      const headers = endToEndHeaders(up.headers);
      if (scrub !== undefined) {
        delete headers['content-length'];
        for (const [name, value] of Object.entries(headers)) {
          if (value === undefined || this.#context.secrets?.inHeaderName?.(name)) delete headers[name];
          else headers[name] = Array.isArray(value) ? value.map(scrub.whole) : scrub.whole(String(value));
        }
      }
      res.writeHead(status, headers);
      up.on('data', (chunk: Buffer) => {
        bytesIn += chunk.length;
        if (!this.#chargeIn(chunk.length)) {
          this.#hit('maxBytesIn', `response from ${target.host}:${port}`);
          up.destroy();
          res.destroy();
          failure ??= {status, rule: 'maxBytesIn', text: ''};
          finish();
          return;
        }
        if (!res.write(scrub === undefined ? chunk : scrub.chunk(chunk))) {
          up.pause();
          res.once('drain', () => up.resume());
        }
      });
      up.on('end', () => {
        res.end(scrub?.flush());
        finish();
      });
      up.on('error', () => {
        res.destroy();
        finish();
      });
    });
    upstream.on('error', () => {
      failure ??= {status: 502, rule: 'connect', text: `egress to ${target.host}:${port} failed: the upstream did not answer`};
      finish();
    });
  }

  async #tunnel(req: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    const started = performance.now();
    const authority = parseAuthority(req.url ?? '');
    if (!authority) {
      this.#chargeRequest();
      this.#refuseRaw(client, 400, 'protocol', 'CONNECT', shown(req.url ?? ''), 0, 'CONNECT needs host:port (an IPv6 address in brackets).', started);
      return;
    }
    const leak = this.#context.secrets?.refusal?.({host: authority.host.replace(/^\[|\]$/g, ''), port: authority.port, tls: true, url: '', headers: {}});
    if (leak !== undefined) {
      this.#chargeRequest();
      this.#refuseRaw(client, 403, 'secret', 'CONNECT', shown(leak.host), authority.port, `egress refused: ${leak.message}`, started, [leak.secret]);
      return;
    }
    const decision = await this.#decide(authority.host, authority.port);
    if (!('target' in decision)) {
      this.#refuseRaw(client, decision.status, decision.rule, 'CONNECT', shown(authority.host), authority.port, decision.text, started);
      return;
    }
    const {target} = decision;
    const port = target.port;
    const secrets = this.#context.secrets;
    if (this.#options.intercept && secrets?.carries(target.host, port)) {
      await this.#options.intercept(target, client, head, this.#handle());
      return;
    }
    let bytesOut = 0;
    let bytesIn = 0;
    let established = false;
    let ended = false;
    let limit: {status: number; rule: string} | undefined;
    // A call with secrets: the bytes it sends into the tunnel are scanned for a placeholder that does not belong here.
    let carry = '';
    let leaked: string | undefined;
    const upstream = netConnect({host: target.address, port, family: target.family});
    this.#track(upstream);
    const end = (failure?: {status: number; rule: string; text: string}) => {
      if (ended) return;
      ended = true;
      clearTimeout(connectTimer);
      if (!established && failure) {
        upstream.destroy();
        this.#refuseRaw(client, failure.status, failure.rule, 'CONNECT', target.host, port, failure.text, started);
        return;
      }
      upstream.destroy();
      client.destroy();
      if (leaked !== undefined) {
        this.#record({type: 'egress.denied', host: target.host, port, address: target.address, method: 'CONNECT', status: 403, bytesOut, bytesIn,
          rule: 'secret', secrets: [leaked], durationMs: Math.round(performance.now() - started)}, 'denied');
        return;
      }
      if (limit) {
        this.#record({type: 'egress.denied', host: target.host, port, address: target.address, method: 'CONNECT', status: limit.status, bytesOut, bytesIn,
          rule: limit.rule, durationMs: Math.round(performance.now() - started)}, 'limit');
        return;
      }
      this.#record({type: 'egress.allowed', host: target.host, port, address: target.address, method: 'CONNECT', status: 200, bytesOut, bytesIn,
        rule: target.rule, durationMs: Math.round(performance.now() - started)}, 'allowed');
    };
    const connectTimer = setTimeout(() => end({status: 504, rule: 'requestTimeoutMs', text: this.#hit('requestTimeoutMs', `connect to ${target.host}:${port}`)}),
      this.#grant.requestTimeoutMs);
    upstream.once('error', () => end({status: 502, rule: 'connect', text: `egress to ${target.host}:${port} failed: the upstream refused or did not answer`}));
    client.once('error', () => end());
    client.once('close', () => end());
    upstream.once('close', () => end());
    upstream.once('connect', () => {
      clearTimeout(connectTimer);
      established = true;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      // Silent both ways for requestTimeoutMs: the tunnel ends.
      upstream.setTimeout(this.#grant.requestTimeoutMs, () => {
        limit ??= {status: 504, rule: 'requestTimeoutMs'};
        this.#hit('requestTimeoutMs', `tunnel to ${target.host}:${port} (silent)`);
        end();
      });
      const out = (chunk: Buffer) => {
        if (secrets?.scanBody !== undefined) {
          try {
            carry = secrets.scanBody(chunk.toString('latin1'), carry, target.host, port);
          } catch (err) {
            // The chunk that completes the placeholder is never sent; the tunnel ends (nothing can be answered inside it).
            const data = (err as {data?: {secret?: unknown}}).data;
            leaked = typeof data?.secret === 'string' ? data.secret : 'unknown';
            end();
            return;
          }
        }
        bytesOut += chunk.length;
        if (!this.#chargeOut(chunk.length)) {
          limit ??= {status: 413, rule: 'maxBytesOut'};
          this.#hit('maxBytesOut', `tunnel to ${target.host}:${port}`);
          end();
          return;
        }
        upstream.setTimeout(this.#grant.requestTimeoutMs);
        if (!upstream.write(chunk)) {
          client.pause();
          upstream.once('drain', () => client.resume());
        }
      };
      if (head.length > 0) out(head);
      client.on('data', out);
      upstream.on('data', (chunk: Buffer) => {
        bytesIn += chunk.length;
        if (!this.#chargeIn(chunk.length)) {
          limit ??= {status: 502, rule: 'maxBytesIn'};
          this.#hit('maxBytesIn', `tunnel from ${target.host}:${port}`);
          end();
          return;
        }
        if (!client.write(chunk)) {
          upstream.pause();
          client.once('drain', () => upstream.resume());
        }
      });
      client.once('end', () => upstream.end());
      upstream.once('end', () => client.end());
    });
  }

  #handle(): EgressCallHandle {
    return {
      context: this.#context,
      usage: this.usage,
      chargeOut: (bytes) => this.#chargeOut(bytes) || (this.#hit('maxBytesOut', 'intercepted request'), false),
      chargeIn: (bytes) => this.#chargeIn(bytes) || (this.#hit('maxBytesIn', 'intercepted response'), false),
      chargeRequest: () => this.#chargeRequest() || (this.#hit('maxRequests', 'intercepted request'), false),
      record: (event, outcome) => this.#record(event, outcome),
    };
  }
}
