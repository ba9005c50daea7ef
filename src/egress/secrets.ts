// Operator secrets for egress: the strict secrets file, per-call placeholders, and the substitution of the real value at the boundary.
import {randomBytes} from 'node:crypto';
import {constants} from 'node:fs';
import {open} from 'node:fs/promises';
import {isIP} from 'node:net';
import * as z from 'zod';
import {ConfigError, ToolcellError} from '../errors.ts';
import {describeZodIssues} from '../policy/schema-errors.ts';

/**
 * Secret names: upper-case environment-variable style (`GITHUB_TOKEN`), because a container or
 * hosted server sees the placeholder in an environment variable of that name.
 */
export const SECRET_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;

/**
 * Names a secret may not have: a container sees its placeholder in an environment variable of
 * that name, so these would override what toolcell or the loader sets (proxy, CA, search paths).
 */
const RESERVED_NAME = /^(HTTPS?_PROXY|ALL_PROXY|NO_PROXY|SSL_CERT_(FILE|DIR)|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|NODE_EXTRA_CA_CERTS|NODE_OPTIONS|PATH|HOME|USER|SHELL|TMPDIR|PYTHON\w*|LD_\w*|TOOLCELL_\w*)$/;

/** An environment variable name (POSIX portable set). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
/** An HTTP field name (RFC 9110 §5.1: a token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;
/** Fields a secret may not be put into: they frame or route the request (RFC 9110 §7.6.1, RFC 9112 §6). */
const FORBIDDEN_FIELDS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'cookie2']);
/** A host entry: `name`, `*.domain`, an IPv4 literal or a bracketed IPv6 literal, each with an optional `:port`. */
const HOST_ENTRY = /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*(?::\d{1,5})?$|^\[[0-9a-f:.]+\](?::\d{1,5})?$/;

/** One host a secret may be sent to, parsed: an exact name or IP, or `*.` plus a domain (one or more labels in front). */
export interface HostPattern {
  /** The name (lower case) or IP literal without brackets; for a wildcard, the domain after `*.`. */
  host: string;
  wildcard: boolean;
  /** The port, or undefined for the defaults (443 for HTTPS, the only scheme secrets are sent over). */
  port: number | undefined;
  /** The entry as written. */
  entry: string;
}

/**
 * Parses one allow entry of the form the egress grant uses (ARCHITECTURE.md, "Egress and
 * secrets"): `api.example.com`, `*.example.org:8443`, `127.0.0.1:8443`, `[::1]:8443`.
 * @throws Error naming the entry and the allowed forms.
 */
export function parseHostEntry(entry: string): HostPattern {
  const lower = entry.toLowerCase();
  if (!HOST_ENTRY.test(lower)) throw new Error(`"${entry}" is not a host entry; allowed: a host name, "*." plus a domain, or an IP literal ([v6] in brackets), each with an optional ":port"`);
  let host = lower;
  let port: number | undefined;
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(lower.startsWith('[') ? lower.replace(/^\[([^\]]+)\]/, '$1\u0000') : lower)!;
  host = m[1]!.replace('\u0000', '');
  if (m[2] !== undefined) {
    port = Number(m[2]);
    if (port < 1 || port > 65535) throw new Error(`"${entry}": port ${m[2]} is out of range (1-65535)`);
  }
  if (lower.startsWith('[') && isIP(host) !== 6) throw new Error(`"${entry}": ${host} is not an IPv6 address`);
  const wildcard = host.startsWith('*.');
  if (wildcard) host = host.slice(2);
  if (wildcard && isIP(host) !== 0) throw new Error(`"${entry}": a wildcard needs a domain name, not an IP address`);
  if (!wildcard && !host.includes('.') && isIP(host) === 0 && host !== 'localhost') {
    // Single-label names are resolved by search domains: refuse the ambiguity.
    throw new Error(`"${entry}": a host name needs a domain (e.g. "api.example.com")`);
  }
  return {host, wildcard, port, entry};
}

/**
 * Whether a request to `host:port` over HTTPS matches `pattern`: exact name or address,
 * or for `*.domain` any name with at least one more label; the port must equal the
 * pattern's, or 443 when the pattern has none. Host names compare in lower case and
 * without a trailing dot; IP literals compare as written by `net` (no normalisation of
 * IPv6 forms beyond lower case).
 */
export function hostMatches(pattern: HostPattern, host: string, port: number): boolean {
  const name = host.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  if (port !== (pattern.port ?? 443)) return false;
  return pattern.wildcard ? name.endsWith(`.${pattern.host}`) && name.length > pattern.host.length + 1 : name === pattern.host;
}

const FORMAT_PROBLEM = 'must contain "{}" exactly once (where the value goes), e.g. "Bearer {}"';

/** One entry of the operator's secrets file. */
const SecretDeclaration = z.strictObject({
  env: z.string().regex(ENV_NAME, 'must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)')
    .describe('Host environment variable that holds the value, read once when serve starts.'),
  hosts: z.array(z.string().superRefine((value, ctx) => {
    try {
      parseHostEntry(value);
    } catch (err) {
      ctx.addIssue({code: 'custom', message: (err as Error).message});
    }
  })).min(1).max(32).describe('The only hosts (HTTPS) the value is sent to.'),
  header: z.string().regex(FIELD_NAME, 'must be an HTTP header name (RFC 9110 token)')
    .refine((h) => !FORBIDDEN_FIELDS.has(h.toLowerCase()), 'may not be a framing or routing header (Host, Content-Length, Transfer-Encoding, Connection, ...)')
    .describe('The request header the value is put into, e.g. "Authorization".'),
  format: z.string().max(200).refine((f) => f.split('{}').length === 2, FORMAT_PROBLEM).default('{}')
    .describe('The header value, "{}" standing for the secret, e.g. "Bearer {}" (default "{}").'),
});

/** The secrets file (`serve --secrets FILE`): secret name → declaration. */
export const SecretsFile = z.record(z.string().regex(SECRET_NAME, 'secret names are upper case: A-Z, then A-Z, 0-9 or _ (at most 64)'), SecretDeclaration)
  .refine((r) => Object.keys(r).length <= 256, 'at most 256 secrets');

/** A declared secret with its value. The value is a private field: logging or serialising a `Secret` never shows it. */
export class Secret {
  readonly name: string;
  readonly hosts: readonly HostPattern[];
  /** Header name, lower case. */
  readonly header: string;
  readonly format: string;
  readonly #value: string;
  constructor(name: string, declaration: z.infer<typeof SecretDeclaration>, value: string) {
    this.name = name;
    this.hosts = declaration.hosts.map(parseHostEntry);
    this.header = declaration.header.toLowerCase();
    this.format = declaration.format;
    this.#value = value;
  }
  /** Whether the value may be sent to `host:port` (over HTTPS). */
  allows(host: string, port: number): boolean {
    return this.hosts.some((p) => hostMatches(p, host, port));
  }
  /** The header value with the secret in place of `{}`. */
  headerValue(): string {
    return this.format.replace('{}', this.#value);
  }
  /** The value itself (for scrubbing responses and the redaction tests); never log it. */
  reveal(): string {
    return this.#value;
  }
  toJSON(): object {
    return {name: this.name, hosts: this.hosts.map((h) => h.entry), header: this.header};
  }
}

/** Why a placeholder was refused, for the audit event (names the secret and the host, never a value). */
export interface SecretRefusal {
  secret: string;
  host: string;
  port: number;
  /** Where the placeholder was found: `url`, `header`, `body`, `target` (the CONNECT/SNI host), or `plaintext` (a secret host over http). */
  where: 'url' | 'header' | 'body' | 'target' | 'plaintext';
}

/** A request as substitution sees it: the destination and its header fields (lower-case names). */
export interface OutboundRequest {
  host: string;
  port: number;
  /** Whether the request goes over TLS to the upstream (secrets are sent only then). */
  tls: boolean;
  /** The request target (path and query), or the whole URL. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * The secrets of one call: an unguessable placeholder per granted secret (`toolcell-secret-
 * NAME-` plus 32 random bytes, base64url), valid until `close()`. The sandbox sees only the
 * placeholders; `substitute` puts the real value in at the boundary.
 *
 * Does NOT guarantee: that a tool cannot learn the secret from the upstream (the upstream sees
 * the real value and may echo it back: responses are scrubbed by the interceptor and the isolate
 * fetch with `scrubber()`, literal values only); that a
 * placeholder transformed by the tool (split, encoded, reversed) is detected when sent elsewhere
 * (only literal occurrences are, and a placeholder alone is worthless: it is substituted only
 * toward the secret's hosts, during this call); that a tool uses the credential against its own
 * hosts only for what the operator intended (it may do whatever the credential allows there).
 */
export class CallSecrets {
  readonly #byPlaceholder = new Map<string, Secret>();
  readonly #placeholders: Record<string, string> = Object.create(null);
  #closed = false;
  readonly #maxLength: number;
  constructor(secrets: readonly Secret[]) {
    for (const secret of secrets) {
      const placeholder = `toolcell-secret-${secret.name}-${randomBytes(32).toString('base64url')}`;
      this.#byPlaceholder.set(placeholder, secret);
      this.#placeholders[secret.name] = placeholder;
    }
    this.#maxLength = Math.max(0, ...[...this.#byPlaceholder.keys()].map((p) => p.length));
  }
  /** Secret name → placeholder: the environment of a container, `context.secrets` of an isolate. Empty after `close()`. */
  get placeholders(): Readonly<Record<string, string>> {
    return this.#closed ? {} : {...this.#placeholders};
  }
  /** Whether this call has any secret. */
  get size(): number {
    return this.#byPlaceholder.size;
  }
  /** Length of the longest placeholder (the carry a streaming scanner keeps). */
  get maxPlaceholderLength(): number {
    return this.#maxLength;
  }
  /** Whether a granted secret may be sent to `host:port`: such hosts are intercepted (TLS) by the proxy. */
  hasSecretFor(host: string, port: number): boolean {
    return [...this.#byPlaceholder.values()].some((s) => s.allows(host, port));
  }
  /**
   * The egress proxy's check of a request it does not intercept (a plain-HTTP forward request,
   * or a CONNECT target, `url` '' and no headers): the refusal when a placeholder is in its
   * target, URL or headers (any placeholder over plain HTTP, a placeholder in a target name),
   * else undefined. Never substitutes.
   */
  refusal(request: OutboundRequest): {secret: string; where: string; message: string; host: string} | undefined {
    try {
      this.substitute(request);
      return undefined;
    } catch (err) {
      if (!isSecretRefusal(err)) throw err;
      return {secret: err.data.secret, where: err.data.where, message: err.message, host: this.redact(request.host)};
    }
  }
  /** The egress proxy's question (egress/proxy.ts `EgressSecrets`): must a CONNECT to `host:port` be intercepted? */
  carries(host: string, port: number): boolean {
    return !this.#closed && this.hasSecretFor(host, port);
  }
  /** The secrets of this call that belong to `host:port`. */
  secretsFor(host: string, port: number): Secret[] {
    return [...this.#byPlaceholder.values()].filter((s) => s.allows(host, port));
  }
  /** Secrets whose placeholder occurs literally in `text`. */
  found(text: string): Secret[] {
    if (this.#closed || text.length === 0) return [];
    const out: Secret[] = [];
    for (const [placeholder, secret] of this.#byPlaceholder) if (text.includes(placeholder)) out.push(secret);
    return out;
  }
  /**
   * Refuses a destination whose name carries a placeholder (a CONNECT target, an SNI name or a
   * URL host: exfiltration by DNS name or by the proxy's own log).
   * @throws ToolcellError DENIED, data `{rule: "secret", secret, host}`.
   */
  checkTarget(host: string, port: number): void {
    // Host names compare without case (RFC 4343): a lower-cased placeholder is still one.
    const lower = host.toLowerCase();
    const hit = this.#closed ? undefined : [...this.#byPlaceholder].find(([placeholder]) => lower.includes(placeholder.toLowerCase()))?.[1];
    if (hit !== undefined) throw refusal({secret: hit.name, host: this.redact(host), port, where: 'target'}, hit);
  }
  /**
   * Refuses a request body part (`chunk`, with `carry` from the previous part) that carries
   * the placeholder of a secret that does not belong to `host:port`; returns the new carry.
   * @throws ToolcellError DENIED (rule "secret").
   */
  scanBody(chunk: string, carry: string, host: string, port: number): string {
    const text = carry + chunk;
    for (const secret of this.found(text)) {
      if (!secret.allows(host, port)) throw refusal({secret: secret.name, host, port, where: 'body'}, secret);
    }
    return text.slice(-Math.max(0, this.#maxLength - 1));
  }
  /**
   * The headers to send upstream: in a request over TLS to one of a secret's hosts, the
   * secret's configured header becomes the formatted value when the tool sent exactly the
   * placeholder there, and any occurrence of the placeholder in that header becomes the value
   * (so `Authorization: Bearer <placeholder>` works too). Placeholders elsewhere in a request to
   * the secret's own host are left as they are (the upstream sees a worthless token).
   * `request.headers` is not modified.
   * @throws ToolcellError DENIED (rule "secret") when a placeholder occurs in the URL or a header
   *   of a request to a host the secret does not belong to, or in any request over plain HTTP.
   */
  substitute(request: OutboundRequest): Record<string, string | string[]> {
    const {host, port} = request;
    this.checkTarget(host, port);
    const out: Record<string, string | string[]> = {};
    for (const secret of this.found(request.url)) {
      if (!secret.allows(host, port)) throw refusal({secret: secret.name, host, port, where: 'url'}, secret);
    }
    for (const [name, raw] of Object.entries(request.headers)) {
      if (raw === undefined) continue;
      const values = Array.isArray(raw) ? raw : [raw];
      for (const secret of this.found(name + '\n' + values.join('\n'))) {
        if (!secret.allows(host, port)) throw refusal({secret: secret.name, host, port, where: 'header'}, secret);
        if (!request.tls) throw refusal({secret: secret.name, host, port, where: 'plaintext'}, secret);
      }
      const lower = name.toLowerCase();
      const mine = this.#closed ? [] : [...this.#byPlaceholder].filter(([, s]) => s.header === lower && s.allows(host, port));
      out[name] = mine.length === 0 ? raw : values.map((v) => mine.reduce((acc, [placeholder, s]) =>
        acc === placeholder ? s.headerValue() : acc.split(placeholder).join(s.reveal()), v)).join(', ');
    }
    return out;
  }
  /**
   * A response scrubber for every secret of this call (`valueScrubber`: value → its
   * placeholder), whatever host the response comes from: an upstream may store the value and
   * hand it back later, to another request or from another host, so scrubbing only the secrets
   * sent in this request is not enough. Works after `close()` too.
   * Does NOT guarantee: that a transformed value (encoded, split, compressed) is found.
   */
  scrubber(): ReturnType<typeof valueScrubber> {
    return valueScrubber([...this.#byPlaceholder].map(([placeholder, secret]) => [secret.reveal(), placeholder]));
  }
  /**
   * The scrubber of what a call hands to its client (egress/output-scrub.ts): each value of this
   * call's secrets, as it is and as it appears inside a JSON string (escaped), becomes its
   * placeholder. Works after `close()` too.
   * Does NOT guarantee: that a transformed value (encoded, split, other escapes) is found.
   */
  outputScrubber(): (text: string) => string {
    const pairs: Array<[string, string]> = [];
    for (const [placeholder, secret] of this.#byPlaceholder) {
      const value = secret.reveal();
      const escaped = JSON.stringify(value).slice(1, -1);
      pairs.push([value, placeholder]);
      if (escaped !== value) pairs.push([escaped, placeholder]);
    }
    return valueScrubber(pairs).whole;
  }
  /**
   * Whether a response header name carries one of this call's secret values, compared without
   * case (HTTP field names are case-insensitive, RFC 9110 §5.1, and Node lower-cases them):
   * such a header is dropped, since a name cannot be rewritten into a placeholder faithfully.
   */
  inHeaderName(name: string): boolean {
    const lower = name.toLowerCase();
    return [...this.#byPlaceholder.values()].some((s) => lower.includes(s.reveal().toLowerCase()));
  }
  /** `text` with each of this call's placeholders replaced by `<placeholder:NAME>` (for audit events and messages). */
  redact(text: string): string {
    let out = text;
    for (const [placeholder, secret] of this.#byPlaceholder) {
      out = out.split(placeholder).join(`<placeholder:${secret.name}>`).split(placeholder.toLowerCase()).join(`<placeholder:${secret.name}>`);
    }
    return out;
  }
  /** Ends the call: its placeholders are no longer substituted or recognised. */
  close(): void {
    this.#closed = true;
  }
}

/** The DENIED error for a placeholder sent where it does not belong; `data` carries what the audit event needs. */
function refusal(r: SecretRefusal, secret: Secret): ToolcellError {
  const where = r.where === 'plaintext'
    ? `over plain HTTP to ${r.host}:${r.port} (secrets are sent only over HTTPS)`
    : `in the ${r.where} of a request to ${r.host}:${r.port}`;
  return new ToolcellError('DENIED',
    `The placeholder of secret "${r.secret}" was found ${where}; it may be sent only to ${secret.hosts.map((h) => h.entry).join(', ')}. The request was refused.`,
    {rule: 'secret', secret: r.secret, host: r.host, port: r.port, where: r.where});
}

/** Whether `err` is a placeholder refusal from this module. */
export function isSecretRefusal(err: unknown): err is ToolcellError & {data: SecretRefusal & {rule: 'secret'}} {
  return err instanceof ToolcellError && err.code === 'DENIED' && err.data.rule === 'secret';
}

/** The operator's secrets, loaded once at start. */
export class SecretStore {
  readonly #secrets: ReadonlyMap<string, Secret>;
  private constructor(secrets: ReadonlyMap<string, Secret>) {
    this.#secrets = secrets;
  }
  /** No secrets (serve without --secrets). */
  static empty(): SecretStore {
    return new SecretStore(new Map());
  }
  /**
   * Reads and validates the secrets file and each secret's value from the environment.
   * The file holds no value, only where values live; it must be a regular file (not a
   * symlink) that neither group nor others may write (else someone could add a host that
   * receives a secret).
   * @throws ConfigError naming the file and the field, or the missing environment variable;
   *   a value with CR, LF or NUL (header injection) or shorter than 8 characters is refused too.
   */
  static async load(file: string, env: NodeJS.ProcessEnv = process.env): Promise<SecretStore> {
    // Opened without following a symlink and checked on the descriptor it is read from: no swap between check and read.
    const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) => {
      throw new ConfigError(file, err.code === 'ELOOP' ? 'the secrets file must be a regular file, not a symlink' : `cannot read the secrets file (${err.code ?? err.message})`);
    });
    let text: string;
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new ConfigError(file, 'the secrets file must be a regular file, not a symlink');
      if ((info.mode & 0o022) !== 0) throw new ConfigError(file, `the secrets file is writable by group or others (mode ${(info.mode & 0o777).toString(8)}); chmod go-w it`);
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(file, `not valid JSON (${(err as Error).message})`);
    }
    if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
      const bad = Object.keys(raw).find((k) => !SECRET_NAME.test(k));
      if (bad !== undefined) throw new ConfigError(file, `secret name ${JSON.stringify(bad).slice(0, 80)}: secret names are upper case: A-Z, then A-Z, 0-9 or _ (at most 64)`);
      const reserved = Object.keys(raw).find((k) => RESERVED_NAME.test(k));
      if (reserved !== undefined) throw new ConfigError(file, `secret name "${reserved}" is reserved: a container sees the placeholder in an environment variable of that name (proxy, CA, PATH, LD_*, PYTHON*, TOOLCELL_* and similar are refused)`);
    }
    const parsed = SecretsFile.safeParse(raw);
    if (!parsed.success) throw new ConfigError(file, describeZodIssues(parsed.error.issues, raw).join('; '));
    const secrets = new Map<string, Secret>();
    for (const [name, declaration] of Object.entries(parsed.data)) {
      const value = env[declaration.env];
      if (value === undefined || value === '') throw new ConfigError(file, `secret "${name}": the environment variable ${declaration.env} is not set (or empty)`);
      if (value.length < 8) throw new ConfigError(file, `secret "${name}": the value of ${declaration.env} is shorter than 8 characters (too short to be told apart from ordinary text, so it could not be kept out of logs)`);
      if (/[\r\n\0]/.test(value)) throw new ConfigError(file, `secret "${name}": the value of ${declaration.env} contains CR, LF or NUL, which cannot go into a header`);
      secrets.set(name, new Secret(name, declaration, value));
    }
    return new SecretStore(secrets);
  }
  /** Secret names, sorted. */
  names(): string[] {
    return [...this.#secrets.keys()].sort();
  }
  has(name: string): boolean {
    return this.#secrets.has(name);
  }
  /** Every value (for log redaction and leak tests); never log the result. */
  values(): string[] {
    return [...this.#secrets.values()].map((s) => s.reveal());
  }
  /**
   * Fresh placeholders for one call of a profile that grants `names`.
   * @throws ConfigError for a name this store does not declare (profiles are checked at load
   *   with `checkGranted`, so this means a programming error).
   */
  forCall(names: readonly string[]): CallSecrets {
    return new CallSecrets(names.map((name) => {
      const secret = this.#secrets.get(name);
      if (secret === undefined) throw new ConfigError('secrets', `no secret named "${name}"`);
      return secret;
    }));
  }
  /**
   * Checks that every secret a profile grants is declared.
   * @throws ConfigError naming the profile and the unknown secret, and the declared ones.
   */
  checkGranted(profile: string, names: readonly string[]): void {
    for (const name of names) {
      if (!this.#secrets.has(name)) {
        throw new ConfigError(`profile "${profile}"`, `grants secret "${name}", which the secrets file does not declare (declared: ${this.names().join(', ') || 'none; start serve with --secrets FILE'})`);
      }
    }
  }
}

/**
 * Replaces each real value with its placeholder, in whole strings (`whole`) and across the
 * chunks of a byte stream (`chunk`, then `flush` at its end; a latin1 view, so bytes map 1:1,
 * with a carry of the longest value minus one byte). `pairs`: [value, placeholder]; replaced
 * longest value first, so a value that contains another (a prefix, a substring) is replaced
 * whole rather than leaving its remainder around the shorter one's placeholder.
 * Not guaranteed: a value that arrives transformed (encoded, compressed, split by the sender
 * into parts it reassembles) is not found; two values that merely overlap in the text (the end
 * of one is the start of the other) leave the non-shared part of the second.
 */
export function valueScrubber(given: Array<[string, string]>): {whole(text: string): string; chunk(buf: Buffer): Buffer; flush(): Buffer} {
  // One alternation, longest value first: at each position the longest value that starts there wins (a regex tries its alternatives in order).
  const matcher = (pairs: ReadonlyArray<readonly [string, string]>) => {
    const sorted = [...pairs].filter(([v]) => v !== '').sort((a, b) => b[0].length - a[0].length);
    const map = new Map(sorted);
    const pattern = sorted.length === 0 ? undefined : new RegExp(sorted.map(([v]) => v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
    return {map, pattern, replace: (text: string) => (pattern === undefined ? text : text.replace(pattern, (m) => map.get(m)!))};
  };
  const text = matcher(given);
  const bytes = matcher(given.map(([value, placeholder]) => [Buffer.from(value, 'utf8').toString('latin1'), placeholder] as const));
  const keep = Math.max(0, ...[...bytes.map.keys()].map((v) => v.length - 1));
  // Raw (not yet scrubbed) bytes held back: they may be the start of a value the next chunk completes.
  let held = '';
  return {
    whole: text.replace,
    chunk: (buf) => {
      if (bytes.pattern === undefined) return buf;
      const pending = held + buf.toString('latin1');
      // A value that starts before `safe` lies wholly in `pending`; one that starts at or after it may continue in the next chunk.
      const safe = pending.length - keep;
      let out = '';
      let last = 0;
      bytes.pattern.lastIndex = 0;
      for (let m = bytes.pattern.exec(pending); m !== null && m.index < safe; m = bytes.pattern.exec(pending)) {
        out += pending.slice(last, m.index) + bytes.map.get(m[0])!;
        last = m.index + m[0].length;
      }
      const emit = Math.max(safe, last);
      out += pending.slice(last, emit);
      held = pending.slice(emit);
      return Buffer.from(out, 'latin1');
    },
    flush: () => {
      const rest = Buffer.from(bytes.replace(held), 'latin1');
      held = '';
      return rest;
    },
  };
}
