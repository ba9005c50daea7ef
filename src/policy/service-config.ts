/** The HTTP service configuration: its strict schema, loading, and the pure decisions on it (grants, metrics readers, who may listen where). */
import {createHash} from 'node:crypto';
import {readFile} from 'node:fs/promises';
import {isAbsolute, resolve} from 'node:path';
import * as z from 'zod';
import {ConfigError} from '../errors.ts';
import {deepFreeze, parseJsonConfig} from './json-config.ts';
import type {Principal} from './principal.ts';

/**
 * The HTTP service configuration (`toolcell serve --http HOST:PORT --config FILE`): who may
 * authenticate (API keys, OAuth 2.1 access tokens), what each principal is granted, the
 * per-principal quotas, and the transport guards (allowed origins and hosts, body cap).
 * Strict: an unknown key is a load error naming the field. Secrets are never stored: API
 * keys appear only as SHA-256 hashes.
 *
 * Example (every field but `apiKeys`/`oauth` is optional):
 * ```json
 * {
 *   "resourceUrl": "https://tools.example.com/mcp",
 *   "apiKeys": [{"name": "ci-bot", "sha256": "<64 hex digits: hashApiKey(key)>"}],
 *   "oauth": {
 *     "issuer": "https://auth.example.com",
 *     "jwksUri": "https://auth.example.com/.well-known/jwks.json",
 *     "algorithms": ["ES256", "RS256"],
 *     "requiredScopes": ["tools"]
 *   },
 *   "grants": [
 *     {"principal": "key:ci-bot", "packages": ["text"]},
 *     {"principal": "sub:alice", "packages": "*"},
 *     {"principal": "scope:tools.math", "packages": ["math"]}
 *   ],
 *   "quotas": {"ratePerSec": 20, "burst": 40, "maxInFlight": 16,
 *              "principals": {"key:ci-bot": {"ratePerSec": 100, "burst": 200}}},
 *   "allowedOrigins": ["app.example.com"],
 *   "allowedHosts": ["tools.example.com"],
 *   "maxBodyBytes": 1048576,
 *   "metrics": {"principals": ["key:prometheus"]},
 *   "fairShare": {"weights": {"key:ci-bot": 2}},
 *   "audit": {"signingKey": "/etc/toolcell/audit-ed25519.pem"}
 * }
 * ```
 */

/** Signature algorithms a JWT may use: asymmetric only (a JWKS holds public keys); never `none`, never HMAC. */
export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

/** Largest request body the service accepts when the config does not say, in bytes (1 MiB). */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

const Hex256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be the SHA-256 of the key as 64 lower-case hex digits (see hashApiKey)');
const KeyName = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 characters from A-Z a-z 0-9 . _ -');

/** An HTTP(S) URL; plain `http:` only for loopback hosts (local development and tests). */
const SecureUrl = z.string().url().refine((value) => {
  const url = new URL(value);
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHostname(url.hostname));
}, {message: 'must be an https URL (http is accepted only for localhost, 127.0.0.1 and [::1])'});

export const ApiKeyEntry = z.strictObject({
  name: KeyName.describe('Principal id becomes "key:NAME".'),
  sha256: Hex256,
});

export const OAuthConfig = z.strictObject({
  issuer: SecureUrl.describe('Expected "iss" of access tokens, and the authorization server listed in the protected resource metadata.'),
  jwksUri: SecureUrl.optional().describe('JWKS URL of the issuer (fetched and cached with jose createRemoteJWKSet).'),
  jwksFile: z.string().min(1).optional().describe('A local JWKS JSON file, read at start-up (relative to the config file).'),
  audience: z.string().min(1).optional()
    .describe('Required "aud" of access tokens; default: resourceUrl (RFC 8707 / RFC 9068). Compared in canonical form.'),
  algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).default(['ES256', 'RS256'])
    .describe('Signature algorithm allowlist; "none" and HMAC algorithms are not accepted.'),
  requiredScopes: z.array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'must be a scope token (RFC 6749 §3.3)')).default([])
    .describe('Scopes every access token must carry; otherwise 403 insufficient_scope.'),
  scopesSupported: z.array(z.string().min(1)).optional()
    .describe('Scopes advertised in the protected resource metadata; default: requiredScopes.'),
  clockToleranceSeconds: z.number().int().min(0).max(300).default(5)
    .describe('Leeway for exp/nbf/iat, in seconds.'),
}).refine((o) => (o.jwksUri === undefined) !== (o.jwksFile === undefined), {message: 'exactly one of "jwksUri" or "jwksFile" is required'});

export const Grant = z.strictObject({
  principal: z.string().regex(/^(key|sub|scope):.{1,256}$/, 'must be "key:NAME", "sub:SUBJECT" or "scope:SCOPE"'),
  packages: z.union([z.literal('*'), z.array(z.string().regex(/^[a-z][a-z0-9-]*$/, 'must be a package name')).min(1)])
    .describe('Tool packages this principal may list and call, or "*" for every loaded package.'),
});

export const QuotaLimits = z.strictObject({
  ratePerSec: z.number().positive().max(1e6).describe('Token-bucket refill rate: calls per second.'),
  burst: z.number().int().min(1).max(1e6).describe('Token-bucket size: calls that may start at once after a quiet period.'),
  maxInFlight: z.number().int().min(1).max(10_000).describe('Calls one principal may have running or queued at once.'),
});

/** Quotas applied when the config does not set them. */
export const DEFAULT_QUOTAS = {ratePerSec: 20, burst: 40, maxInFlight: 16} as const;

export const Quotas = z.strictObject({
  ratePerSec: QuotaLimits.shape.ratePerSec.default(DEFAULT_QUOTAS.ratePerSec),
  burst: QuotaLimits.shape.burst.default(DEFAULT_QUOTAS.burst),
  maxInFlight: QuotaLimits.shape.maxInFlight.default(DEFAULT_QUOTAS.maxInFlight),
  principals: z.record(z.string().regex(/^(key|sub|local)(:.{1,256})?$/, 'must be a principal id such as "key:NAME" or "sub:SUBJECT"'),
    QuotaLimits.partial()).default({}).describe('Per-principal overrides, by principal id.'),
});

/**
 * Who may read `/metrics`. Its series name every tool that was called, granted to the reader
 * or not, so by default a reader must authenticate like `/mcp` **and** be listed; and a listed
 * reader must not be a principal granted only some packages (refused at load: it would see the
 * names its grants hide). Not checked: a token whose other scopes or subject carry partial
 * grants while one of its scopes is a listed `scope:SCOPE` reader.
 */
export const MetricsAccess = z.strictObject({
  public: z.boolean().default(false)
    .describe('true serves /metrics to anyone who can reach it (no credentials); for a scraper on a private network only.'),
  principals: z.array(z.string().regex(/^(key|sub|scope):.{1,256}$/, 'must be "key:NAME", "sub:SUBJECT" or "scope:SCOPE"')).max(1000).default([])
    .describe('Principals (key:NAME, sub:SUBJECT, or scope:SCOPE for any token carrying that scope) that may read /metrics with their credentials.'),
});

/**
 * Each principal's share of a backend's queue when several wait (deficit round robin weights,
 * `dispatch/fair-queue.ts`): a principal of weight 2 starts two calls per round where one of
 * weight 1 starts one. Default 1. Not a quota: it orders waiting calls, it admits none.
 */
export const FairShare = z.strictObject({
  weights: z.record(z.string().regex(/^(key|sub|local)(:.{1,256})?$/, 'must be a principal id such as "key:NAME" or "sub:SUBJECT"'),
    z.number().min(0.01).max(1000).describe('Calls started per round; 0.01-1000, default 1.')).default({}),
});

/**
 * Where TLS ends. Either the service serves HTTPS itself from a certificate chain and its
 * private key (PEM files, read at start and again on SIGHUP; the key file must be private: see
 * `readTlsFiles`), or the operator states that TLS ends at a proxy or load balancer in front of
 * it. Binding anything but loopback needs one of the two (`assertMayListen`). The statement
 * `terminatedBy: "proxy"` is not checked: the service cannot see whether its clients' bearer
 * tokens crossed a network in clear before they reached the proxy.
 */
export const TlsConfig = z.union([
  z.strictObject({
    cert: z.string().min(1).describe('PEM certificate chain (leaf first); relative to the config file.'),
    key: z.string().min(1).describe('PEM private key of the leaf; relative to the config file; readable by this user (or root) only.'),
  }),
  z.strictObject({
    terminatedBy: z.literal('proxy').describe('TLS ends at a proxy or load balancer in front of the service, which then serves plain HTTP.'),
  }),
], {error: () => 'must be {"cert": PATH, "key": PATH} (HTTPS served here) or {"terminatedBy": "proxy"} (TLS ends at a proxy in front)'});

/**
 * Shared state among replicas (issue 12): per-principal quotas in Redis. Absent: this process
 * keeps its own quotas (one replica). The URL may carry a password; it is never logged.
 */
export const RedisConfig = z.strictObject({
  // Checked in parseServiceConfig, not here: a schema error would quote the value, password included.
  url: z.string().min(1).describe('redis://[user:password@]host:port[/db] or rediss:// for TLS.'),
  failMode: z.enum(['closed', 'open']).default('closed')
    .describe('Redis unreachable: "closed" refuses calls with BACKEND_UNAVAILABLE; "open" admits them under each replica\'s own limits.'),
  leaseMs: z.number().int().min(1000).max(600_000).default(15_000)
    .describe('Lease of an in-flight slot, in ms: a dead replica\'s slots come back at most this long after its last renewal.'),
  keyPrefix: z.string().regex(/^[A-Za-z0-9:._-]{1,64}$/, 'must be 1-64 characters from A-Z a-z 0-9 : . _ -').default('toolcell:')
    .describe('Prefix of every key this service writes (several services may share one Redis with different prefixes).'),
});

export const ServiceConfig = z.strictObject({
  $schema: z.string().optional(),
  resourceUrl: SecureUrl.optional()
    .describe('Public URL of this MCP endpoint (e.g. https://tools.example.com/mcp); required with oauth. Default: http://HOST:PORT/mcp.'),
  apiKeys: z.array(ApiKeyEntry).max(10_000).default([]),
  oauth: OAuthConfig.optional(),
  tls: TlsConfig.optional().describe('HTTPS served by this process, or the statement that TLS ends at a proxy; required to bind anything but loopback.'),
  grants: z.array(Grant).default([]),
  quotas: Quotas.default({ratePerSec: DEFAULT_QUOTAS.ratePerSec, burst: DEFAULT_QUOTAS.burst, maxInFlight: DEFAULT_QUOTAS.maxInFlight, principals: {}}),
  allowedOrigins: z.array(z.string().min(1)).optional()
    .describe('Origin hostnames (no scheme or port) browsers may call from; default: localhost, 127.0.0.1, [::1]. A request without Origin passes.'),
  allowedHosts: z.array(z.string().min(1)).optional()
    .describe('Host header hostnames accepted (DNS-rebinding defence); default: localhost names, the bind address and the resourceUrl host.'),
  maxBodyBytes: z.number().int().min(1024).max(64 * 2 ** 20).default(DEFAULT_MAX_BODY_BYTES)
    .describe('Largest POST body, in bytes; larger bodies get 413 with a JSON-RPC error.'),
  sessions: z.strictObject({
    idleSeconds: z.number().int().min(1).max(86_400).default(1800).describe('A 2025-era session unused this long ends; its id then gets 404.'),
    maxPerPrincipal: z.number().int().min(1).max(10_000).default(32).describe('Open sessions per principal; the least recently used is closed beyond it.'),
    max: z.number().int().min(1).max(1_000_000).default(1000).describe('Open sessions in total; beyond it new sessions get 503.'),
  }).default({idleSeconds: 1800, maxPerPrincipal: 32, max: 1000}),
  connections: z.strictObject({
    max: z.number().int().min(1).max(1_000_000).default(1024)
      .describe('Open connections in total (server.maxConnections); past it new connections are closed unanswered. Keep it below the fd limit (ulimit -n) minus headroom.'),
    maxPerAddress: z.number().int().min(1).max(1_000_000).default(128)
      .describe('Open connections from one source IP address; past it new ones from that address are closed unanswered. Behind a proxy, raise it to max.'),
    firstRequestMs: z.number().int().min(100).max(120_000).default(10_000)
      .describe('From accepting a connection (TLS handshake included) until its first request\'s headers are complete, in ms; slower connections are closed unanswered.'),
    keepAliveMs: z.number().int().min(100).max(600_000).default(5000)
      .describe('How long a connection may sit idle between requests, in ms.'),
  }).default({max: 1024, maxPerAddress: 128, firstRequestMs: 10_000, keepAliveMs: 5000})
    .describe('Bounds on connections before and between requests (idle sockets exhaust file descriptors).'),
  shutdown: z.strictObject({
    drainMs: z.number().int().min(0).max(600_000).default(20_000)
      .describe('On SIGTERM, how long in-flight calls may run before they are cancelled, in ms.'),
  }).default({drainMs: 20_000}),
  metrics: MetricsAccess.default({public: false, principals: []})
    .describe('Who may read /metrics: by default only the principals listed here, authenticated like /mcp.'),
  fairShare: FairShare.default({weights: {}})
    .describe('Weights of principals in the dispatcher\'s fair share of each backend queue (default 1 each).'),
  audit: z.strictObject({
    signingKey: z.string().min(1).optional()
      .describe('Ed25519 private key (PEM, mode 0600, owned by the service user) that signs every audit line; relative to the config file.'),
  }).optional(),
  redis: RedisConfig.optional()
    .describe('Shares quotas among replicas through Redis; absent: quotas are per process.'),
}).superRefine((config, ctx) => {
  const names = new Set<string>();
  const hashes = new Set<string>();
  for (const [index, key] of config.apiKeys.entries()) {
    if (names.has(key.name)) ctx.addIssue({code: 'custom', path: ['apiKeys', index, 'name'], message: `duplicate key name "${key.name}"`});
    if (hashes.has(key.sha256)) ctx.addIssue({code: 'custom', path: ['apiKeys', index, 'sha256'], message: 'duplicate key hash: two names for one key'});
    names.add(key.name);
    hashes.add(key.sha256);
  }
  if (config.oauth !== undefined && config.resourceUrl === undefined) {
    ctx.addIssue({code: 'custom', path: ['resourceUrl'], message: 'is required when "oauth" is set: it is the audience tokens must name (RFC 8707) and the resource in the protected resource metadata'});
  }
  const checkPrincipal = (principal: string, path: (string | number)[]) => {
    if (principal.startsWith('key:') && !names.has(principal.slice(4))) {
      ctx.addIssue({code: 'custom', path, message: `names API key "${principal.slice(4)}", which is not in apiKeys`});
    }
    if ((principal.startsWith('sub:') || principal.startsWith('scope:')) && config.oauth === undefined) {
      ctx.addIssue({code: 'custom', path, message: 'grants to token subjects or scopes need "oauth"'});
    }
  };
  for (const [index, grant] of config.grants.entries()) checkPrincipal(grant.principal, ['grants', index, 'principal']);
  for (const principal of Object.keys(config.fairShare.weights)) checkPrincipal(principal, ['fairShare', 'weights', principal]);
  for (const [index, principal] of config.metrics.principals.entries()) {
    checkPrincipal(principal, ['metrics', 'principals', index]);
    // /metrics names every tool called, by anyone: a reader granted only some packages would
    // learn the names of tools its grants hide from it. A reader is either a dedicated scraper
    // (no grant) or granted every package.
    const grants = config.grants.filter((g) => g.principal === principal);
    if (grants.length > 0 && !grants.some((g) => g.packages === '*')) {
      ctx.addIssue({code: 'custom', path: ['metrics', 'principals', index],
        message: `"${principal}" may call only some packages, but /metrics names every tool any principal called, so it would see the tools its grants hide; use a dedicated key with no grants for the scraper, or grant this principal "*"`});
    }
  }
});

/** A parsed, defaulted, frozen service configuration. */
export type ServiceConfig = z.infer<typeof ServiceConfig>;
export type OAuthConfig = z.infer<typeof OAuthConfig>;
export type TlsConfig = z.infer<typeof TlsConfig>;
export type QuotaLimits = z.infer<typeof QuotaLimits>;
export type Quotas = z.infer<typeof Quotas>;

/** The configuration used when `--config` is not given: no authentication (loopback only), defaults everywhere. */
export function defaultServiceConfig(): ServiceConfig {
  return parseServiceConfig('(defaults)', '{}');
}

/**
 * Parses and validates the text of a service configuration file.
 * @param source the file name (or another label) for error messages
 * @throws ConfigError naming the source and each invalid field
 */
export function parseServiceConfig(source: string, text: string): ServiceConfig {
  const config = parseJsonConfig(source, text, ServiceConfig, 'service configuration');
  if (config.redis !== undefined && !/^rediss?:\/\/[^\s/?#]+(\/\d{0,2})?$/.test(config.redis.url)) {
    // The value is not quoted: it may carry the Redis password.
    throw new ConfigError(source, 'invalid service configuration: /redis/url must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379 or rediss://:PASSWORD@host:6380/0 (its value is not shown: it may hold a password)');
  }
  return config;
}

/**
 * Reads and validates a service configuration file. A relative `oauth.jwksFile` or
 * `audit.signingKey` is resolved against the config file's directory.
 * @throws ConfigError when the file cannot be read or is invalid
 */
export async function loadServiceConfig(file: string): Promise<ServiceConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, `cannot read the service configuration (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {cause: err});
  }
  const config = parseServiceConfig(file, text);
  const near = (path: string) => (isAbsolute(path) ? path : resolve(file, '..', path));
  const signingKey = config.audit?.signingKey;
  const jwksFile = config.oauth?.jwksFile;
  const tls = config.tls !== undefined && 'cert' in config.tls ? {cert: near(config.tls.cert), key: near(config.tls.key)} : config.tls;
  return deepFreeze({...config, ...(jwksFile === undefined ? {} : {oauth: {...config.oauth!, jwksFile: near(jwksFile)}}), ...(tls === undefined ? {} : {tls}),
    ...(signingKey === undefined ? {} : {audit: {...config.audit, signingKey: near(signingKey)}})});
}

/**
 * The value to put in `apiKeys[].sha256` for an API key: SHA-256 of its UTF-8 bytes, lower-case
 * hex. From a shell: `node -p "require('crypto').createHash('sha256').update(process.argv[1]).digest('hex')" "$KEY"`.
 * A plain hash is adequate only for high-entropy keys: generate them randomly (at least 32
 * random bytes, e.g. `openssl rand -base64 32`); never use a human-chosen password.
 */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** Whether authentication is configured (required for binding anything but loopback). */
export function authConfigured(config: ServiceConfig): boolean {
  return config.apiKeys.length > 0 || config.oauth !== undefined;
}

/**
 * Refuses to serve on an address other than loopback without authentication (there, anyone who
 * reaches the address could call every tool) or without TLS (bearer tokens would cross the
 * network in clear): `tls` must name a certificate and key, or state that TLS ends at a proxy.
 * Does NOT check that such a proxy exists, nor that the network between it and the service is
 * private.
 * @throws ConfigError (option `--http`) naming the address and what is required
 */
export function assertMayListen(host: string, config: ServiceConfig): void {
  if (isLoopbackHostname(host)) return;
  if (!authConfigured(config)) {
    throw new ConfigError('--http', `refusing to listen on ${host}: binding an address other than loopback requires authentication (apiKeys or oauth in --config)`);
  }
  if (config.tls === undefined) {
    throw new ConfigError('--http', `refusing to listen on ${host}: binding an address other than loopback requires TLS, so that bearer tokens never cross a network in clear: set "tls": {"cert": PATH, "key": PATH} in --config to serve HTTPS here, or "tls": {"terminatedBy": "proxy"} when a proxy in front of the service ends TLS`);
  }
}

/**
 * The packages granted to a principal that is known by several names (`key:NAME`, or
 * `sub:SUBJECT` plus one `scope:SCOPE` per token scope): the union of every matching grant.
 * Deny by default: no matching grant → no packages.
 */
export function grantedPackages(config: ServiceConfig, names: readonly string[]): Principal['packages'] {
  const packages = new Set<string>();
  for (const grant of config.grants) {
    if (!names.includes(grant.principal)) continue;
    if (grant.packages === '*') return '*';
    for (const name of grant.packages) packages.add(name);
  }
  return [...packages].sort();
}

/**
 * Whether `principal` may read `/metrics` (after it authenticated like `/mcp`): when the config
 * makes metrics public; when no authentication is configured (the loopback mode, where every
 * caller is the `local` principal, granted every tool anyway); or when `metrics.principals`
 * names the principal's id or one of its token scopes (`scope:SCOPE`). Deny by default.
 */
export function mayReadMetrics(config: ServiceConfig, principal: Principal): boolean {
  if (config.metrics.public || principal.kind === 'local') return true;
  const names = [principal.id, ...principal.scopes.map((s) => `scope:${s}`)];
  return config.metrics.principals.some((p) => names.includes(p));
}

/** Whether a hostname is a loopback name or address (`localhost`, 127.0.0.0/8, `::1`). */
export function isLoopbackHostname(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
