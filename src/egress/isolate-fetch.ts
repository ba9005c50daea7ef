// The host side of an isolate's `fetch`: validates what the tool asked for, applies the egress policy and secrets, performs it against the resolved address, and answers with a bounded copy.
import {request as httpRequest, STATUS_CODES, type IncomingMessage} from 'node:http';
import {request as httpsRequest} from 'node:https';
import {isIP} from 'node:net';
import {getCACertificates} from 'node:tls';
import type {IsolateEgress} from '../backends/backend.ts';
import {log as rootLog} from '../log.ts';
import {prepareScrubbedRequest, unscrubbableResponse} from './response-guard.ts';
import {isSecretRefusal, type CallSecrets} from './secrets.ts';
import type {EgressBudget, EgressDecision} from './tls-intercept.ts';

const log = rootLog.child({component: 'isolate-fetch'});

/** What the policy says about one destination: the address to connect to (already checked), or why not. */
export type ResolvedDestination = {address: string} | {refused: string};

/** What `isolateEgress` needs for one call. */
export interface IsolateFetchOptions {
  /** The call's placeholders (`context.secrets`); substituted toward their hosts only. */
  secrets: CallSecrets;
  /** The call's counters (maxRequests, maxBytesOut, maxBytesIn), shared with the proxy. */
  budget: EgressBudget;
  /** Per-request timeout, ms: the whole answer (headers and body) must arrive within it. */
  requestTimeoutMs: number;
  /**
   * The egress policy for `host:port` (the allowlist, then a lookup of the name and the
   * address classes, e.g. h-eg1's `resolveEgress`): the address to connect to, never looked
   * up again (DNS rebinding), or a refusal message naming the grant.
   */
  resolve(host: string, port: number, signal: AbortSignal): Promise<ResolvedDestination>;
  /** One audit decision per request (`egress.allowed` / `egress.denied`). */
  onDecision(decision: EgressDecision): void;
  /** The isolate's memoryMb: a response body is also capped at memoryMb / 8 (see `isolateEgress`). */
  memoryMb: number;
  /** Extra CA certificates (PEM) trusted for HTTPS upstreams besides Node's default store (`serve --upstream-ca`). */
  upstreamCa?: string;
  /**
   * The grant's maxBytesOut: a request whose JSON text is longer than its body could be
   * (6 characters per byte, JSON's worst case, plus 128 KiB) is refused before it is parsed,
   * so a tool cannot make the server process parse megabytes it would refuse anyway.
   */
  maxBytesOut?: number;
  /**
   * Called with the running count of decisions not written because the call was already over
   * maxRequests (the first refusal by the limit is written; the rest are only counted, like the
   * proxy's `usage.unaudited`), so a flood of refused requests cannot grow the audit stream.
   */
  onUnaudited?(count: number): void;
}

/** Fetches of one call whose answers are not yet delivered: beyond this a new fetch is refused (the tool awaits some first). */
export const MAX_FETCHES_IN_FLIGHT = 4;

/** Methods a tool may use (RFC 9110 §9); CONNECT, TRACE and others are refused. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** Header fields the host sets or that frame the message: a tool's are dropped (the WHATWG "forbidden request-header" idea). */
const FORBIDDEN = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'expect', 'accept-encoding']);
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]{1,128}$/;
const MAX_HEADERS = 100;
const MAX_HEADER_BYTES = 64 * 1024;
/** Room in a serialized answer besides the base64 body (status, URL, headers as JSON), chars. */
const ANSWER_SLACK = 512 * 1024;
/** Longest URL accepted, in characters. */
const MAX_URL = 8192;

interface ToolRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body: Buffer | undefined;
}

class Refused extends Error {
  readonly rule: NonNullable<EgressDecision['rule']>;
  readonly secret: string | undefined;
  constructor(rule: NonNullable<EgressDecision['rule']>, message: string, secret?: string) {
    super(message);
    this.rule = rule;
    this.secret = secret;
  }
}

/** Parses and validates the tool's request (untrusted JSON text from the isolate). @throws Refused (rule "egress"). */
function parseRequest(requestJson: string): ToolRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(requestJson);
  } catch {
    throw new Refused('egress', 'toolcell egress: the request could not be read.');
  }
  const r = raw as {method?: unknown; url?: unknown; headers?: unknown; body?: unknown};
  if (typeof r !== 'object' || r === null) throw new Refused('egress', 'toolcell egress: the request could not be read.');
  const method = typeof r.method === 'string' ? r.method.toUpperCase() : '';
  if (!METHODS.has(method)) throw new Refused('egress', `toolcell egress: method ${JSON.stringify(String(r.method)).slice(0, 40)} is not allowed; allowed: ${[...METHODS].join(', ')}.`);
  if (typeof r.url !== 'string' || r.url.length > MAX_URL) throw new Refused('egress', `toolcell egress: the URL must be a string of at most ${MAX_URL} characters.`);
  let url: URL;
  try {
    url = new URL(r.url);
  } catch {
    throw new Refused('egress', 'toolcell egress: the URL is not an absolute http: or https: URL.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Refused('egress', `toolcell egress: only http: and https: URLs can be fetched (not ${url.protocol}).`);
  if (url.username !== '' || url.password !== '') throw new Refused('egress', 'toolcell egress: credentials in the URL are not allowed; use a header.');
  if (!Array.isArray(r.headers) || r.headers.length > MAX_HEADERS) throw new Refused('egress', `toolcell egress: at most ${MAX_HEADERS} headers.`);
  const headers: Record<string, string> = {};
  let size = 0;
  for (const pair of r.headers as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') throw new Refused('egress', 'toolcell egress: each header must be a [name, value] pair of strings.');
    const name = pair[0].toLowerCase();
    const value = pair[1];
    if (!FIELD_NAME.test(name)) throw new Refused('egress', `toolcell egress: ${JSON.stringify(name).slice(0, 60)} is not a header name.`);
    if (/[\r\n\0]/.test(value)) throw new Refused('egress', `toolcell egress: the value of header ${name} contains CR, LF or NUL.`);
    size += name.length + value.length;
    if (size > MAX_HEADER_BYTES) throw new Refused('egress', `toolcell egress: the headers exceed ${MAX_HEADER_BYTES} bytes.`);
    if (FORBIDDEN.has(name) || name.startsWith('proxy-')) continue;
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  let body: Buffer | undefined;
  if (r.body !== null && r.body !== undefined) {
    if (typeof r.body !== 'string' || /[^\x00-\xff]/.test(r.body)) throw new Refused('egress', 'toolcell egress: the body could not be read.');
    if (method === 'GET' || method === 'HEAD') throw new Refused('egress', `toolcell egress: a ${method} request cannot have a body.`);
    body = Buffer.from(r.body, 'latin1');
  }
  return {method, url, headers, body};
}

/** Default port of a URL's scheme. */
const portOf = (url: URL): number => (url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80);
/** A URL's host without IPv6 brackets, lower case. */
const hostOf = (url: URL): string => url.hostname.replace(/^\[|\]$/g, '').toLowerCase();

/**
 * The egress of one isolate call: `context.secrets` (placeholders) and the `fetch` the backend
 * relays the tool's requests to. Per request: count it (maxRequests; before anything of it is
 * read, so refused and unreadable requests count too; past the limit only the first refusal is
 * audited, the rest counted through `onUnaudited`) → at most MAX_FETCHES_IN_FLIGHT unanswered
 * fetches per call → parse and validate (methods GET, HEAD, POST, PUT,
 * PATCH, DELETE, OPTIONS; http: and https: only; no credentials in the URL; header names and
 * values checked, framing headers dropped) → refuse a placeholder where
 * it does not belong and substitute it where it does (HTTPS only; `CallSecrets.substitute`,
 * `scanBody`) → count the body (maxBytesOut) → `resolve` (the policy; refusals name the grant)
 * → connect to the resolved address (SNI and Host = the name; the certificate verified against
 * Node's default roots plus `upstreamCa`) → read the answer within `requestTimeoutMs`, at most
 * what is left of maxBytesIn and at most memoryMb / 8 bytes, also for all the call's fetches in
 * flight together (the body crosses into the isolate as base64 in JSON text, 4/3 chars per byte,
 * and becomes bytes there, then perhaps a string: a few copies of it must fit the isolate's heap;
 * the serialized answer is capped at 4/3 of that plus 512 KiB) → replace echoed secret values by their placeholders → answer. Redirects
 * are not followed (a 3xx is the answer; a tool that follows one makes a new, checked request).
 *
 * Every refusal is an answer `{ok: false, message}` (the isolate's fetch rejects with a
 * TypeError carrying the message) and an `egress.denied` decision; `signal` (the call ended)
 * destroys the request. Nothing of the host (objects, paths, stacks) reaches the isolate:
 * the answer is JSON text.
 * Does NOT guarantee: that what an allowed host returns is harmless, or that an upstream does
 * not hand the secret back transformed (see `CallSecrets`).
 */
export function isolateEgress(options: IsolateFetchOptions): IsolateEgress {
  const trust = [...getCACertificates('default'), ...(options.upstreamCa ? [options.upstreamCa] : [])];
  const memoryCap = Math.floor((options.memoryMb * 2 ** 20) / 8);
  // Per call: fetches not yet answered, and response body bytes held for them (together at most memoryCap).
  let inFlight = 0;
  let held = 0;
  // Refusals by maxRequests: the first is audited, the rest counted (a flood cannot grow the audit stream).
  let overLimit = 0;
  let unaudited = 0;
  return {
    secrets: options.secrets.placeholders,
    fetch: async (requestJson, signal) => {
      let host = '';
      let port = 0;
      let method = '';
      let bytesOut = 0;
      let bytesIn = 0;
      let counted = false;
      let chargedOver = false;
      const decide = (d: Omit<EgressDecision, 'host' | 'port' | 'method' | 'bytesOut' | 'bytesIn'>) => {
        if (chargedOver && overLimit > 1) {
          unaudited++;
          options.onUnaudited?.(unaudited);
          return;
        }
        options.onDecision({host: options.secrets.redact(host), port, method, bytesOut, bytesIn, ...d});
      };
      try {
        // Charged before anything of the request is read: a refused or unreadable request counts too.
        const over = options.budget.request();
        if (over !== undefined) {
          chargedOver = true;
          overLimit++;
          throw new Refused('egress', `toolcell egress: ${over}`);
        }
        if (inFlight >= MAX_FETCHES_IN_FLIGHT) {
          throw new Refused('egress', `toolcell egress: at most ${MAX_FETCHES_IN_FLIGHT} fetches of a call may wait for their answers at once; await some before starting more.`);
        }
        inFlight++;
        counted = true;
        if (options.maxBytesOut !== undefined && requestJson.length > 6 * options.maxBytesOut + 128 * 1024) {
          throw new Refused('egress', `toolcell egress: the request is larger than maxBytesOut (${options.maxBytesOut} bytes) allows.`);
        }
        const request = parseRequest(requestJson);
        method = request.method;
        host = hostOf(request.url);
        port = portOf(request.url);
        const tls = request.url.protocol === 'https:';
        let headers: Record<string, string | string[]>;
        try {
          options.secrets.checkTarget(host, port);
          headers = options.secrets.substitute({host, port, tls, url: request.url.pathname + request.url.search + request.url.hash, headers: request.headers});
          if (request.body !== undefined) options.secrets.scanBody(request.body.toString('latin1'), '', host, port);
        } catch (err) {
          if (isSecretRefusal(err)) throw new Refused('secret', err.message, err.data.secret);
          throw err;
        }
        const used = options.secrets.secretsFor(host, port).filter((s) => {
          const sent = request.headers[s.header];
          return tls && sent !== undefined && options.secrets.found(sent).includes(s);
        });
        bytesOut = request.body?.length ?? 0;
        const outOver = options.budget.out(bytesOut);
        if (outOver !== undefined) throw new Refused('egress', `toolcell egress: ${outOver}`);
        const timeout = AbortSignal.timeout(options.requestTimeoutMs);
        const both = AbortSignal.any([signal, timeout]);
        const destination = await options.resolve(host, port, both);
        if ('refused' in destination) throw new Refused('egress', destination.refused);
        headers.host = request.url.host;
        // Whole, uncompressed bodies only: Range/If-Range removed, Accept-Encoding identity (response-guard.ts).
        prepareScrubbedRequest(headers);
        if (request.body !== undefined) headers['content-length'] = String(request.body.length);
        const answer = await new Promise<IncomingMessage>((resolve, reject) => {
          const common = {host: destination.address, port, method, path: request.url.pathname + request.url.search, headers, agent: false as const, signal: both};
          const req = tls
            ? httpsRequest({...common, ...(isIP(host) === 0 ? {servername: host} : {}), ca: trust})
            : httpRequest(common);
          req.on('response', resolve);
          req.on('error', reject);
          req.end(request.body);
        }).catch((err: NodeJS.ErrnoException) => {
          if (timeout.aborted) throw new Refused('timeout', `toolcell egress: ${host} did not answer within ${options.requestTimeoutMs} ms (requestTimeoutMs).`);
          if (signal.aborted) throw new Refused('egress', 'toolcell egress: the call has ended.');
          if (/CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME/.test(err.code ?? '')) throw new Refused('upstream-tls', `toolcell egress: the TLS certificate of ${host} is not trusted (${err.code}); the request was not sent.`);
          log.debug({err, host}, 'isolate fetch failed');
          throw new Refused('upstream', `toolcell egress: ${host}:${port} could not be reached (${err.code ?? 'error'}).`);
        });
        // A compressed or partial body would pass the scrubber unread: refused.
        const unreadable = unscrubbableResponse(answer.statusCode, answer.headers);
        if (unreadable !== undefined) {
          answer.on('error', () => undefined);
          answer.destroy();
          throw new Refused('upstream', `toolcell egress: ${unreadable}.`);
        }
        // Every secret of the call, not only those sent in this request: an upstream may hand back a stored value.
        const scrub = options.secrets.scrubber();
        const chunks: Buffer[] = [];
        try {
          for await (const chunk of answer as AsyncIterable<Buffer>) {
            bytesIn += chunk.length;
            held += chunk.length;
            const inOver = options.budget.in(chunk.length);
            if (inOver !== undefined) throw new Refused('egress', `toolcell egress: ${inOver}`);
            if (bytesIn > memoryCap) throw new Refused('egress', `toolcell egress: the response is larger than ${memoryCap} bytes (memoryMb / 8 of this isolate).`);
            if (held > memoryCap) throw new Refused('egress', `toolcell egress: the responses of this call's fetches in flight together exceed ${memoryCap} bytes (memoryMb / 8 of this isolate); await one before starting the next.`);
            chunks.push(scrub.chunk(chunk));
          }
        } catch (err) {
          answer.destroy();
          if (err instanceof Refused) throw err;
          if (timeout.aborted) throw new Refused('timeout', `toolcell egress: ${host} did not answer within ${options.requestTimeoutMs} ms (requestTimeoutMs).`);
          throw new Refused('upstream', `toolcell egress: the response from ${host} was cut off.`);
        }
        chunks.push(scrub.flush());
        const pairs: string[][] = [];
        for (let i = 0; i + 1 < answer.rawHeaders.length; i += 2) {
          const name = answer.rawHeaders[i]!.toLowerCase();
          if (name === 'transfer-encoding' || name === 'connection' || name === 'keep-alive' || options.secrets.inHeaderName(name)) continue;
          pairs.push([name, scrub.whole(answer.rawHeaders[i + 1]!)]);
        }
        // base64: 4/3 chars per byte whatever the byte (a JSON-escaped binary string costs up to 6).
        const answerJson = JSON.stringify({
          ok: true, status: answer.statusCode ?? 0, statusText: STATUS_CODES[answer.statusCode ?? 0] ?? '', url: request.url.href,
          headers: pairs, body64: Buffer.concat(chunks).toString('base64'),
        });
        // The serialized answer is bounded too (headers are bounded by Node's maxHeaderSize, but escaped).
        if (answerJson.length > Math.ceil((memoryCap * 4) / 3) + ANSWER_SLACK) {
          throw new Refused('egress', `toolcell egress: the answer from ${host} is larger than ${memoryCap} bytes (memoryMb / 8 of this isolate) allow.`);
        }
        decide({allowed: true, status: answer.statusCode, ...(used.length ? {secrets: used.map((s) => s.name)} : {})});
        return answerJson;
      } catch (err) {
        if (err instanceof Refused) {
          decide({allowed: false, rule: err.rule, reason: err.message, ...(err.secret ? {secrets: [err.secret]} : {})});
          return JSON.stringify({ok: false, message: err.message});
        }
        log.warn({err}, 'isolate fetch failed unexpectedly');
        decide({allowed: false, rule: 'egress', reason: 'internal error'});
        return JSON.stringify({ok: false, message: 'toolcell egress: the request failed.'});
      } finally {
        if (counted) inFlight--;
        held -= bytesIn;
      }
    },
  };
}
