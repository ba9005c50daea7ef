// Shared set-up for egress tests: loopback listeners closed in one call, a 0600 secret store, a no-op budget, a loopback proxy into the TLS interceptor, and a "public" CA with an HTTPS test API that checks the credential.
import {chmod} from 'node:fs/promises';
import type {IncomingMessage, Server as HttpServer} from 'node:http';
import {createServer as createHttpsServer, type Server as HttpsServer} from 'node:https';
import {createServer as createNetServer, type AddressInfo, type Server as NetServer} from 'node:net';
import {join} from 'node:path';
import {EgressCa, type LeafCertificate} from '../../src/egress/ca.ts';
import {SecretStore, type CallSecrets} from '../../src/egress/secrets.ts';
import type {EgressBudget, EgressDecision, InterceptContext, TlsInterceptor} from '../../src/egress/tls-intercept.ts';
import type {tempDir} from './temp.ts';

/** The temporary directory of `tempDir()`. */
type TempDir = Awaited<ReturnType<typeof tempDir>>;

/**
 * Starts `server` on 127.0.0.1, port 0 (the kernel picks a free port) and resolves with that port.
 * Loopback only: nothing here listens on another address. Errors: a failed listen is not turned into
 * a rejection (the server's 'error' event is left to the caller), as in the tests this replaces.
 */
export async function listenLoopback(server: NetServer): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/**
 * Drops every open connection of each server and stops it listening (for `after()`); `undefined`
 * entries (a `before()` that failed early) are skipped. Does not wait for 'close'.
 */
export function closeServers(servers: ReadonlyArray<Pick<HttpServer, 'closeAllConnections' | 'close'> | undefined>): void {
  for (const s of servers) {
    s?.closeAllConnections();
    s?.close();
  }
}

/**
 * A set of loopback servers started with `listen` (resolves with the port) and stopped together
 * with `close()`; see `listenLoopback` and `closeServers`.
 */
export function loopbackServers(): {servers: HttpServer[]; listen: (s: HttpServer) => Promise<number>; close: () => void} {
  const servers: HttpServer[] = [];
  return {
    servers,
    listen: async (s) => {
      servers.push(s);
      return listenLoopback(s);
    },
    close: () => closeServers(servers),
  };
}

/**
 * Writes `config` (the secrets.json shape: name -> {env, hosts, header, format}) to `secrets.json`
 * in `dir` with mode 0600 (the store refuses a file others can read) and loads it with `env` as the
 * environment the values come from. Errors: whatever `SecretStore.load` throws for a bad file.
 */
export async function writeSecretStore(dir: TempDir, config: Record<string, unknown>, env: Record<string, string>): Promise<SecretStore> {
  const file = await dir.write('secrets.json', config);
  await chmod(file, 0o600);
  return SecretStore.load(file, env);
}

/** An EgressBudget that never refuses: counts nothing, for tests of what the interceptor scrubs, not of limits. */
export function noBudget(): EgressBudget {
  return {request: () => undefined, out: () => undefined, in: () => undefined};
}

/**
 * The test's "public" CA (what --upstream-ca trusts), kept in `<dir>/public-ca`, and its leaf
 * certificate for 127.0.0.1 to serve the HTTPS test servers with. Errors: whatever `EgressCa.open`
 * or `leaf` throws. Not a real public CA: only this test's clients trust it.
 */
export async function publicCaFor127(dir: TempDir): Promise<{publicCa: EgressCa; leaf: LeafCertificate}> {
  const publicCa = await EgressCa.open(join(dir.path, 'public-ca'));
  return {publicCa, leaf: await publicCa.leaf('127.0.0.1')};
}

/**
 * An HTTPS test API (not yet listening) that pushes each request's Authorization header (as a
 * string, "undefined" when absent) onto `seen` and answers JSON: 200 when the header is exactly
 * `Bearer <value>`, else 401; the body is `body(req, ok)`, by default `{login: 'octocat' | null, echo: <the header>}`.
 */
export function credentialApi(leaf: LeafCertificate, value: string, seen: string[], body: (req: IncomingMessage, ok: boolean) => unknown = (req, ok) => ({login: ok ? 'octocat' : null, echo: req.headers.authorization})): HttpsServer {
  return createHttpsServer({cert: leaf.cert, key: leaf.key}, (req, res) => {
    seen.push(String(req.headers.authorization));
    const ok = req.headers.authorization === `Bearer ${value}`;
    res.writeHead(ok ? 200 : 401, {'content-type': 'application/json'});
    res.end(JSON.stringify(body(req, ok)));
  });
}

/**
 * Runs `run` against a loopback "proxy" (127.0.0.1, a free port) that hands each connection to
 * `interceptor` for `target`, as the CONNECT handler does after its 200: one call context with
 * `secrets`, `opts.requestTimeoutMs` (ms, default 5000), `opts.budget` (default `noBudget()`) and
 * every decision pushed onto the array `run` gets. The call is aborted and the listener closed when
 * `run` settles (open sockets are left to the interceptor's abort handling; `secrets` stay open).
 */
export async function withLoopbackInterceptor<T>(interceptor: TlsInterceptor, target: {host: string; port: number; address: string}, secrets: CallSecrets,
  run: (proxyPort: number, decisions: EgressDecision[]) => Promise<T>, opts: {budget?: EgressBudget; requestTimeoutMs?: number} = {}): Promise<T> {
  const call = new AbortController();
  const decisions: EgressDecision[] = [];
  const ctx: InterceptContext = {secrets, requestTimeoutMs: opts.requestTimeoutMs ?? 5000, signal: call.signal, onDecision: (d) => decisions.push(d), budget: opts.budget ?? noBudget()};
  const proxy = createNetServer((socket) => interceptor.intercept(target, socket, ctx));
  const proxyPort = await listenLoopback(proxy);
  try {
    return await run(proxyPort, decisions);
  } finally {
    call.abort();
    proxy.close();
  }
}
