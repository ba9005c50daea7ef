/** Graceful shutdown of the HTTP service: stop accepting, let exchanges finish within the drain deadline, cancel the rest, close everything. */
import type {Server} from 'node:http';
import {ToolcellError} from '../../errors.ts';
import {log} from '../../log.ts';

/** How long cancelled calls get to send their CANCELLED results before the streams are closed, in ms. */
export const CANCEL_GRACE_MS = 3000;
/** How long answers still being written get after the runtime closed, in ms. */
const FLUSH_MS = 1000;
/** Polling interval while waiting for exchanges, in ms. */
const POLL_MS = 20;

/**
 * Counts the exchanges shutdown waits for: POST requests, which may run a tool (a GET stream
 * waits for nothing), from their arrival until their answer is written.
 */
export class Exchanges {
  #active = 0;
  /** Set when shutdown begins; new MCP requests are then answered 503. */
  draining = false;

  /** Exchanges in flight. */
  get active(): number {
    return this.#active;
  }

  /** Counts one exchange; call the returned function (once) when its answer is written. */
  begin(): () => void {
    this.#active++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#active--;
    };
  }

  /** Waits until no exchange is in flight or `deadline` (a `performance.now()` time, ms) passes; resolves whether none is left. */
  async settled(deadline: number): Promise<boolean> {
    while (this.#active > 0 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    return this.#active === 0;
  }
}

/** What `drain` stops, in order. */
export interface DrainParts {
  server: Server;
  /** Resolves when the listening socket has closed (`server` 'close'). */
  closedListening: Promise<void>;
  exchanges: Exchanges;
  /** `/readyz` reports not ready from the first moment. */
  readiness: {draining: boolean};
  /** Aborting it stops every call still running (each ends with its own CANCELLED result). */
  stopCalls: AbortController;
  /** Closes the MCP transports: sessions, streams, the 2026 handler. */
  closeTransports: () => Promise<unknown>;
  /** Stops the backends and reaps sandboxes. */
  closeRuntime?: () => Promise<void>;
}

/**
 * Graceful shutdown: stop accepting connections and close idle ones; answer new MCP requests
 * 503 (`exchanges.draining`); let exchanges in flight finish for up to `drainMs`; then cancel
 * the calls still running (`stopCalls`, the CANCELLED results get `CANCEL_GRACE_MS` to be
 * written); close the transports and the runtime (sandboxes are reaped); give answers still
 * being written `FLUSH_MS`; then close every connection and wait for the listening socket.
 * Not guaranteed: that a call finishes by itself within `drainMs` (it is cancelled), nor that a
 * client still reading a stream gets its last bytes after `FLUSH_MS`.
 */
export async function drain(parts: DrainParts, drainMs: number): Promise<void> {
  const {server, exchanges} = parts;
  exchanges.draining = true;
  parts.readiness.draining = true;
  server.close();
  server.closeIdleConnections();
  if (!(await exchanges.settled(performance.now() + drainMs))) {
    log.child({component: 'http'}).warn({inFlight: exchanges.active, drainMs}, 'shutdown: cancelling calls still in flight after the drain deadline');
    parts.stopCalls.abort(new ToolcellError('CANCELLED', 'The server is shutting down; the call was stopped.'));
    await exchanges.settled(performance.now() + CANCEL_GRACE_MS);
  }
  await Promise.allSettled([parts.closeTransports()]);
  await parts.closeRuntime?.();
  await exchanges.settled(performance.now() + FLUSH_MS);
  server.closeAllConnections();
  await parts.closedListening;
}
