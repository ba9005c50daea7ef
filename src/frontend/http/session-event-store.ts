/** The resumption store of one 2025-era session: bounded, per-stream replay of SSE events. */
import type {EventStore, JSONRPCMessage} from '@modelcontextprotocol/server';

/** Events a session keeps for resumption, at most. */
export const REPLAY_EVENTS = 256;
/** Bytes of events a session keeps for resumption, at most (JSON text). */
export const REPLAY_BYTES = 256 * 1024;
/** How long an event stays available for resumption, in ms. */
export const REPLAY_TTL_MS = 60_000;

/**
 * The resumption store of ONE session (MCP transports §Resumability): event ids are
 * `<stream>.<n>`, unique across the session's streams; a `Last-Event-ID` replays only later
 * events of the same stream, never another stream's. Because each session has its own store
 * and a session answers only its principal, events can never be replayed to another user
 * (security best practices §Session Hijacking). Bounded: the oldest events are dropped beyond
 * `REPLAY_EVENTS` events, `REPLAY_BYTES` bytes or `REPLAY_TTL_MS`; resuming from a dropped id
 * fails, and the client then re-issues its request.
 */
export class SessionEventStore implements EventStore {
  readonly #events: Array<{id: string; streamId: string; message: JSONRPCMessage; bytes: number; at: number}> = [];
  readonly #now: () => number;
  #bytes = 0;
  #seq = 0;

  /** @param now clock in ms (tests) */
  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  async storeEvent(streamId: string, message: JSONRPCMessage): Promise<string> {
    const id = `${streamId}.${++this.#seq}`;
    const bytes = JSON.stringify(message).length;
    this.#events.push({id, streamId, message, bytes, at: this.#now()});
    this.#bytes += bytes;
    this.#evict();
    return id;
  }

  async getStreamIdForEventId(eventId: string): Promise<string | undefined> {
    this.#evict();
    return this.#events.find((e) => e.id === eventId)?.streamId;
  }

  /** Events kept now. */
  get size(): number {
    return this.#events.length;
  }

  #evict(): void {
    const oldest = this.#now() - REPLAY_TTL_MS;
    while (this.#events.length > 0
      && (this.#events.length > REPLAY_EVENTS || this.#bytes > REPLAY_BYTES || this.#events[0]!.at < oldest)) {
      this.#bytes -= this.#events.shift()!.bytes;
    }
  }

  async replayEventsAfter(lastEventId: string, {send}: {send: (eventId: string, message: JSONRPCMessage) => Promise<void>}): Promise<string> {
    this.#evict();
    const index = this.#events.findIndex((e) => e.id === lastEventId);
    if (index === -1) throw new Error('unknown or expired event id');
    const streamId = this.#events[index]!.streamId;
    for (const event of this.#events.slice(index + 1)) {
      if (event.streamId === streamId) await send(event.id, event.message);
    }
    return streamId;
  }
}
