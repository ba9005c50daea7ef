/** Authentication of HTTP requests: API keys and OAuth 2.1 JWT access tokens become a principal with its grants, or an RFC 6750 refusal. */
import {createHash, timingSafeEqual} from 'node:crypto';
import {readFile} from 'node:fs/promises';
import {getOAuthProtectedResourceMetadataUrl} from '@modelcontextprotocol/server';
import {createLocalJWKSet, createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey} from 'jose';
import {ConfigError} from '../../errors.ts';
import {log} from '../../log.ts';
import {localPrincipal, type Principal} from '../../policy/principal.ts';
import {grantedPackages, type ServiceConfig} from '../../policy/service-config.ts';
import type {AuthFailureReason} from '../metrics.ts';

/** Longest bearer token accepted, in characters; longer is a malformed request. */
export const MAX_TOKEN_CHARS = 8192;

/** An accepted request: who is calling. */
export interface AuthAccepted {
  ok: true;
  principal: Principal;
  /** Seconds since the epoch when the credential expires (OAuth tokens only). */
  expiresAt?: number;
}

/** A refused request: the complete HTTP answer (RFC 6750 §3) and why, for metrics. */
export interface AuthRefused {
  ok: false;
  /** 400 malformed request, 401 no or bad credentials, 403 insufficient scope, 503 keys unavailable. */
  status: 400 | 401 | 403 | 503;
  reason: AuthFailureReason;
  /** `WWW-Authenticate` (absent for 503). */
  headers: Record<string, string>;
  /** OAuth error body, e.g. `{"error":"invalid_token","error_description":"…"}`. */
  body: {error: string; error_description: string};
}

export type AuthOutcome = AuthAccepted | AuthRefused;

/** Verifies the credentials of each request (never the session: every request is checked). */
export interface Authenticator {
  /** Whether credentials are required (false only for the unauthenticated loopback mode). */
  readonly required: boolean;
  /** RFC 9728 metadata URL advertised in challenges, when OAuth is configured. */
  readonly resourceMetadataUrl: string | undefined;
  /**
   * Authenticates one request from its `Authorization` header value.
   * Never throws; never logs or returns the token.
   */
  authenticate(authorization: string | undefined): Promise<AuthOutcome>;
  /** The refusal for a request that carried a token in its query string (RFC 6750 §2.3 is not supported). */
  queryTokenRefusal(): AuthRefused;
}

/** Options for tests and embedding: a key source other than the config's JWKS. */
export interface AuthenticatorOptions {
  /** The resource URL of this endpoint (the config's `resourceUrl` or the default). */
  resourceUrl: string;
  /** Overrides the JWKS of `config.oauth` (tests). */
  keys?: JWTVerifyGetKey;
}

const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Builds the request authenticator of the HTTP service (MCP 2025-11-25 basic/authorization;
 * RFC 6750 bearer tokens; RFC 9068 JWT access tokens; RFC 8707 audience binding):
 *
 * - `Authorization: Bearer <token>` only. A token is first compared with the configured API
 *   key hashes (SHA-256, `crypto.timingSafeEqual` against every key, no early exit), then,
 *   when OAuth is configured, verified as a JWT with jose: signature against the JWKS,
 *   algorithm in the allowlist (`none` and HMAC can never be listed), `iss`, `exp` (required),
 *   `nbf`, `sub` (required), and an `aud` naming this server's resource URL (canonical
 *   comparison: scheme and host case-insensitive, no fragment, no trailing slash).
 * - No credentials → 401 with `WWW-Authenticate: Bearer realm, resource_metadata, scope` and no
 *   error code (RFC 6750 §3.1); bad or expired token → 401 `invalid_token`; a malformed
 *   header → 400 `invalid_request`; missing required scopes → 403 `insufficient_scope`.
 * - The principal: `key:NAME` or `sub:SUBJECT`, with the packages its grants name
 *   (`key:`/`sub:`/`scope:` grants, unioned). API keys carry no scopes; `requiredScopes` apply
 *   to OAuth tokens only.
 *
 * Not guaranteed: revocation of an OAuth token before its `exp` (no introspection); an API key
 * is revoked by removing it from the config and restarting.
 *
 * @throws ConfigError when the JWKS file cannot be read
 */
export async function createAuthenticator(config: ServiceConfig, options: AuthenticatorOptions): Promise<Authenticator> {
  const keys = config.apiKeys.map((k) => ({name: k.name, hash: Buffer.from(k.sha256, 'hex')}));
  const oauth = config.oauth;
  const required = keys.length > 0 || oauth !== undefined;
  const resourceMetadataUrl = oauth === undefined ? undefined : getOAuthProtectedResourceMetadataUrl(new URL(options.resourceUrl));
  const challengeScope = oauth === undefined ? [] : oauth.requiredScopes.length > 0 ? oauth.requiredScopes : (oauth.scopesSupported ?? []);
  const audience = oauth === undefined ? undefined : canonicalResource(oauth.audience ?? options.resourceUrl);
  let getKey: JWTVerifyGetKey | undefined = options.keys;
  if (oauth !== undefined && getKey === undefined) {
    if (oauth.jwksUri !== undefined) {
      getKey = createRemoteJWKSet(new URL(oauth.jwksUri), {timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 600_000});
    } else {
      let jwks: unknown;
      try {
        jwks = JSON.parse(await readFile(oauth.jwksFile!, 'utf8'));
      } catch (err) {
        throw new ConfigError(oauth.jwksFile!, `cannot read the JWKS file: ${(err as Error).message}`, {cause: err});
      }
      try {
        getKey = createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
      } catch (err) {
        throw new ConfigError(oauth.jwksFile!, `is not a valid JWKS: ${(err as Error).message}`, {cause: err});
      }
    }
  }
  const authLog = log.child({component: 'http-auth'});
  const keySource = getKey;
  // Only a failure to obtain the key set is a 503; everything wrong with the token itself is a 401.
  const guardedKey: JWTVerifyGetKey | undefined = keySource === undefined ? undefined : async (...args: Parameters<JWTVerifyGetKey>) => {
    try {
      return await keySource(...args);
    } catch (err) {
      if (err instanceof joseErrors.JWKSTimeout || !(err instanceof joseErrors.JOSEError)) throw new KeySetUnavailable({cause: err});
      throw err;
    }
  };

  const challenge = (params: {error?: string; description?: string; scope?: readonly string[]}): string => {
    const parts = ['realm="toolcell"'];
    if (params.error !== undefined) parts.push(`error="${params.error}"`);
    if (params.description !== undefined) parts.push(`error_description="${quoted(params.description)}"`);
    const scope = params.scope ?? challengeScope;
    if (scope.length > 0) parts.push(`scope="${quoted(scope.join(' '))}"`);
    if (resourceMetadataUrl !== undefined) parts.push(`resource_metadata="${quoted(resourceMetadataUrl)}"`);
    return `Bearer ${parts.join(', ')}`;
  };
  const refuse = (status: AuthRefused['status'], reason: AuthFailureReason, error: string | undefined, description: string, scope?: readonly string[]): AuthRefused => ({
    ok: false,
    status,
    reason,
    headers: status === 503 ? {'Retry-After': '5'} : {'WWW-Authenticate': challenge({error, description, scope})},
    body: {error: error ?? 'invalid_token', error_description: description},
  });

  const principalFor = (id: string, kind: Principal['kind'], scopes: readonly string[], names: readonly string[]): Principal =>
    Object.freeze({id, kind, scopes: Object.freeze([...scopes]), packages: freezeGrant(grantedPackages(config, names))});

  async function verifyJwt(token: string): Promise<AuthOutcome> {
    if (oauth === undefined || guardedKey === undefined) return refuse(401, 'invalid', 'invalid_token', 'The access token is not valid.');
    let payload: JWTPayload;
    try {
      ({payload} = await jwtVerify(token, guardedKey, {
        issuer: oauth.issuer,
        algorithms: [...oauth.algorithms],
        clockTolerance: oauth.clockToleranceSeconds,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (err) {
      return jwtRefusal(err);
    }
    const aud = payload.aud === undefined ? [] : Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if (!aud.some((value) => typeof value === 'string' && canonicalResource(value) === audience)) {
      authLog.info({reason: 'audience'}, 'access token refused: issued for another resource');
      return refuse(401, 'invalid', 'invalid_token', 'The access token was not issued for this resource.');
    }
    const sub = payload.sub!;
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) return refuse(401, 'invalid', 'invalid_token', 'The access token has no usable subject.');
    const scopes = scopesOf(payload);
    const missing = oauth.requiredScopes.filter((s) => !scopes.includes(s));
    if (missing.length > 0) {
      authLog.info({reason: 'scope', missing}, 'access token refused: insufficient scope');
      return refuse(403, 'insufficient_scope', 'insufficient_scope', `The access token lacks the required scope: ${missing.join(' ')}.`, oauth.requiredScopes);
    }
    const id = `sub:${sub}`;
    return {
      ok: true,
      principal: principalFor(id, 'oauth', scopes, [id, ...scopes.map((s) => `scope:${s}`)]),
      expiresAt: typeof payload.exp === 'number' ? payload.exp : undefined,
    };
  }

  function jwtRefusal(err: unknown): AuthRefused {
    if (err instanceof joseErrors.JWTExpired) {
      authLog.info({reason: 'expired'}, 'access token refused: expired');
      return refuse(401, 'expired', 'invalid_token', 'The access token has expired.');
    }
    if (err instanceof KeySetUnavailable) {
      const cause = err.cause as Error | undefined;
      authLog.warn({err: {name: cause?.name, message: cause?.message}}, 'access token not verified: the key set is unavailable');
      return refuse(503, 'unavailable', undefined, 'The authorization keys are temporarily unavailable; retry shortly.');
    }
    const why = err instanceof joseErrors.JWTClaimValidationFailed ? `claim ${err.claim} (${err.reason})` : (err as {code?: string}).code ?? 'invalid';
    authLog.info({reason: why}, 'access token refused');
    const description = err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf'
      ? 'The access token is not valid yet.'
      : 'The access token is not valid.';
    return refuse(401, 'invalid', 'invalid_token', description);
  }

  return {
    required,
    resourceMetadataUrl,
    async authenticate(authorization) {
      if (!required) return {ok: true, principal: localPrincipal};
      if (authorization === undefined || authorization.trim() === '') {
        return refuse(401, 'missing', undefined, 'Authentication required: send "Authorization: Bearer <token>".');
      }
      const space = authorization.indexOf(' ');
      const scheme = space === -1 ? authorization : authorization.slice(0, space);
      if (scheme.toLowerCase() !== 'bearer') {
        return refuse(401, 'malformed', undefined, 'Only the Bearer authentication scheme is supported.');
      }
      const token = space === -1 ? '' : authorization.slice(space + 1).trim();
      if (token === '' || token.length > MAX_TOKEN_CHARS || !B64TOKEN.test(token)) {
        return refuse(400, 'malformed', 'invalid_request', 'The Authorization header is malformed: expected "Bearer <token>".');
      }
      const digest = createHash('sha256').update(token, 'utf8').digest();
      let matched: string | undefined;
      for (const key of keys) {
        // Every key is compared, matched or not, so the time taken does not tell which key was close.
        if (timingSafeEqual(digest, key.hash) && matched === undefined) matched = key.name;
      }
      if (matched !== undefined) {
        const id = `key:${matched}`;
        return {ok: true, principal: principalFor(id, 'api-key', [], [id])};
      }
      if (oauth !== undefined && token.split('.').length === 3) return verifyJwt(token);
      authLog.info({reason: 'unknown-credential'}, 'credential refused: not a configured API key or a valid access token');
      return refuse(401, 'invalid', 'invalid_token', 'The credential is not valid.');
    },
    queryTokenRefusal() {
      return refuse(400, 'query_token', 'invalid_request', 'Credentials are accepted only in the Authorization header, never in the URL.');
    },
  };
}

/** The JWKS could not be fetched (network, timeout): the token could not be checked at all. */
class KeySetUnavailable extends Error {
  constructor(options: ErrorOptions) {
    super('key set unavailable', options);
    this.name = 'KeySetUnavailable';
  }
}

/** Scopes of an access token: the space-separated `scope` claim (RFC 9068) or an `scp` array/string. */
export function scopesOf(payload: JWTPayload): string[] {
  const raw = payload.scope ?? payload.scp;
  if (typeof raw === 'string') return raw.split(' ').filter((s) => s !== '');
  if (Array.isArray(raw)) return raw.filter((s): s is string => typeof s === 'string' && s !== '');
  return [];
}

/**
 * Canonical form of a resource identifier for comparison (MCP authorization §Canonical Server
 * URI): scheme and host lower case, no fragment, no trailing slash. A value that is not a URL
 * is compared as it is.
 */
export function canonicalResource(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return value;
  }
  url.hash = '';
  const text = url.href;
  return text.endsWith('/') ? text.slice(0, -1) : text;
}

function quoted(value: string): string {
  return value.replaceAll(/[\\"]/g, '\\$&').replaceAll(/[^\x20-\x7E]/g, ' ');
}

function freezeGrant(packages: Principal['packages']): Principal['packages'] {
  return packages === '*' ? '*' : Object.freeze([...packages]);
}
