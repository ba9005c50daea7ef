/** Shared records of 2025-protocol sessions, so that any replica can rebuild a session opened on another: the interface and its Redis implementation. */
import {createHash} from 'node:crypto';
import type {Redis} from 'ioredis';
import {log} from '../log.ts';

/**
 * What a replica needs to rebuild a 2025-protocol session it does not hold: who opened it and
 * with which grant (a session must never serve another principal), and the client's
 * `initialize` params (protocol version, capabilities, client info), replayed into a fresh
 * MCP server on the replica that rebuilds it.
 */
export interface SessionRecord {
  principalId: string;
  /** The grant the session was opened with (`grantKeyOf` in legacy-sessions.ts). */
  grantKey: string;
  /** The `params` of the client's initialize request, as sent (bounded by `MAX_RECORD_BYTES`). */
  initialize: Record<string, unknown>;
}

/** Largest record shared, in bytes of JSON; a session whose initialize params are larger stays on its replica. */
export const MAX_RECORD_BYTES = 64 * 1024;

/**
 * Where session records live. Every method resolves; `touch` says `unavailable` when the store
 * cannot be reached (the caller then serves only sessions it holds itself).
 */
export interface SessionRecordStore {
  /** Stores a record that expires after `ttlMs` without a `touch`. Resolves false when it could not be stored. */
  put(id: string, record: SessionRecord, ttlMs: number): Promise<boolean>;
  /** The record of `id`, its expiry pushed to `ttlMs` from now; `null` when there is none (never opened, ended, expired). */
  touch(id: string, ttlMs: number): Promise<SessionRecord | null | 'unavailable'>;
  /** Removes the record (the session ended); a failure is logged and the record expires by its TTL. */
  delete(id: string): Promise<void>;
}

/**
 * Session records in Redis, one string key per session: `PREFIX session:SHA256(id)` (the id
 * itself is not stored, so reading Redis does not hand out session ids) holding the record as
 * JSON, with a TTL of the session idle time, refreshed on each request (`GETEX … PX`, Redis
 * ≥ 6.2). Trust: whoever can write this Redis can forge records (bind a session id to any
 * principal); Redis must be reachable only by the replicas.
 */
export class RedisSessionRecords implements SessionRecordStore {
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(redis: Redis, keyPrefix = 'toolcell:') {
    this.#redis = redis;
    this.#prefix = keyPrefix;
  }

  #key(id: string): string {
    return `${this.#prefix}session:${createHash('sha256').update(id).digest('hex')}`;
  }

  async put(id: string, record: SessionRecord, ttlMs: number): Promise<boolean> {
    const text = JSON.stringify(record);
    if (Buffer.byteLength(text) > MAX_RECORD_BYTES) return false;
    try {
      await this.#redis.set(this.#key(id), text, 'PX', ttlMs);
      return true;
    } catch (err) {
      log.debug({code: (err as NodeJS.ErrnoException).code ?? (err as Error).name}, 'session record not stored; the session works on this replica only');
      return false;
    }
  }

  async touch(id: string, ttlMs: number): Promise<SessionRecord | null | 'unavailable'> {
    let text: string | null;
    try {
      text = await this.#redis.getex(this.#key(id), 'PX', ttlMs);
    } catch (err) {
      log.debug({code: (err as NodeJS.ErrnoException).code ?? (err as Error).name}, 'session record lookup failed');
      return 'unavailable';
    }
    if (text === null) return null;
    try {
      const value = JSON.parse(text) as SessionRecord;
      if (typeof value.principalId !== 'string' || typeof value.grantKey !== 'string' || typeof value.initialize !== 'object' || value.initialize === null) return null;
      return value;
    } catch {
      return null;
    }
  }

  async delete(id: string): Promise<void> {
    await this.#redis.del(this.#key(id)).catch((err: unknown) => log.debug({code: (err as NodeJS.ErrnoException).code}, 'session record not deleted; it expires by its TTL'));
  }
}
