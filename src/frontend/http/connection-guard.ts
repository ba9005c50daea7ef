/** Bounds on connections before and between requests: a deadline for the first request's headers, a keep-alive idle timeout, and caps in total and per source address. */
import type {Server as HttpServer} from 'node:http';
import type {Socket} from 'node:net';
import {log} from '../../log.ts';

/**
 * Connection limits of the HTTP service (config `connections` in service-config.ts, all optional with these defaults).
 * - `max`: open connections in total (`server.maxConnections`); past it Node closes each new
 *   connection at once, unanswered. Keep it below the process's file-descriptor limit
 *   (`ulimit -n`) minus what the runtime needs (sandboxes, logs, Redis): default 1024.
 * - `maxPerAddress`: open connections from one source IP address; past it a new connection from
 *   that address is closed at once, unanswered. Default 128. Behind a proxy or load balancer
 *   every client shares the proxy's address: raise it to `max` there.
 * - `firstRequestMs`: from accepting a connection (TCP; the TLS handshake is part of it) until
 *   the headers of its first request are complete, in ms; a connection that has not got that
 *   far is closed unanswered. Default 10 000.
 * - `keepAliveMs`: how long a connection may sit idle between requests, in ms (Node's
 *   `keepAliveTimeout`). Default 5000.
 *
 * Not guaranteed: a client that keeps sending requests keeps its connection (requests are
 * bounded by Node's `headersTimeout`/`requestTimeout` and the quotas); many source addresses
 * together still reach `max`, after which new connections from everyone are refused until
 * deadlines free some (at most `firstRequestMs` later for idle ones).
 */
export interface ConnectionLimits {
  readonly max: number;
  readonly maxPerAddress: number;
  readonly firstRequestMs: number;
  readonly keepAliveMs: number;
}

/**
 * Applies `limits` to a node:http or node:https server before it listens: sets `maxConnections`
 * and `keepAliveTimeout`, counts raw TCP connections per remote address ('connection' fires for
 * both, before any TLS), and closes (destroys, answering nothing) a connection over the
 * per-address cap or one whose first request's headers (the 'request' event) have not arrived
 * within `firstRequestMs`. A request is matched to its raw connection by remote address and
 * port (the TLS socket and its TCP socket share them).
 * @returns `firstRequest(socket)`, to call on every 'request' (idempotent; stops the deadline)
 */
export function guardConnections(server: HttpServer, limits: ConnectionLimits): {firstRequest(socket: Socket): void} {
  const guardLog = log.child({component: 'http'});
  server.maxConnections = limits.max;
  server.keepAliveTimeout = limits.keepAliveMs;
  const perAddress = new Map<string, number>();
  const pending = new Map<string, NodeJS.Timeout>();
  let refusedLogged = 0;
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '?';
    const key = `${address}|${socket.remotePort ?? '?'}`;
    const open = (perAddress.get(address) ?? 0) + 1;
    perAddress.set(address, open);
    const timer = setTimeout(() => {
      pending.delete(key);
      socket.destroy();
    }, limits.firstRequestMs);
    timer.unref();
    pending.set(key, timer);
    socket.once('close', () => {
      clearTimeout(timer);
      if (pending.get(key) === timer) pending.delete(key);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
    if (open > limits.maxPerAddress) {
      // Rate-limited log: a flood must not become a log flood.
      if (refusedLogged++ % 1000 === 0) guardLog.warn({address, maxPerAddress: limits.maxPerAddress}, 'connection refused: too many open connections from one address (connections.maxPerAddress)');
      socket.destroy();
    }
  });
  return {
    firstRequest(socket: Socket) {
      const key = `${socket.remoteAddress ?? '?'}|${socket.remotePort ?? '?'}`;
      const timer = pending.get(key);
      if (timer === undefined) return;
      clearTimeout(timer);
      pending.delete(key);
    },
  };
}
