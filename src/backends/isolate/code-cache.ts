// V8 code-cache data per source, so that a tool's module compiles once per worker.
import type ivm from 'isolated-vm';
import {LRUCache} from 'lru-cache';

/**
 * V8 code cache data of compiled tool modules, keyed by the sha256 of the exact source
 * text. This is the only thing shared between calls: compiled code data, which V8
 * deserialises into each new isolate. No context, global, module instance or value
 * produced by a tool is ever shared.
 *
 * Why sha256 and not V8's own check: V8 accepts cached data for a *different* source of
 * the same length (seen here with isolated-vm 7: `cachedDataRejected` stays false), so
 * the key must identify the source exactly.
 *
 * The data never leaves the worker process and is produced by this process only
 * (isolated-vm: "you should not accept cachedData payloads from a user").
 * Bounded in bytes by lru-cache (`maxSize`, least recently used evicted); every entry
 * that leaves the cache, evicted, replaced or deleted, has its `ExternalCopy` released.
 */
export class CodeCache {
  readonly #entries: LRUCache<string, ivm.ExternalCopy<ArrayBuffer>>;
  /** Byte size of each entry, measured once when it is stored. */
  readonly #bytes = new WeakMap<ivm.ExternalCopy<ArrayBuffer>, number>();

  /** @param maxBytes total size of the cached data, in bytes (a positive integer). */
  constructor(maxBytes: number) {
    this.#entries = new LRUCache({
      maxSize: maxBytes,
      sizeCalculation: (data) => Math.max(1, this.#bytes.get(data) ?? 1),
      dispose: (data) => data.release(),
    });
  }

  /** Cached data for `key`, marking it recently used; undefined when absent. */
  get(key: string): ivm.ExternalCopy<ArrayBuffer> | undefined {
    return this.#entries.get(key);
  }

  /**
   * Stores data produced by `compileModule(..., {produceCachedData: true})`, replacing
   * (and releasing) an entry under the same key. Data larger than the whole budget is
   * released at once instead of stored.
   */
  set(key: string, data: ivm.ExternalCopy<ArrayBuffer>): void {
    this.#bytes.set(data, data.copy().byteLength);
    this.#entries.set(key, data);
    if (this.#entries.peek(key) !== data) data.release();
  }

  /** Drops `key` (e.g. after V8 rejected its data), releasing its data. */
  delete(key: string): void {
    this.#entries.delete(key);
  }

  /** Number of entries and their total size in bytes. */
  get size(): {entries: number; bytes: number} {
    return {entries: this.#entries.size, bytes: this.#entries.calculatedSize};
  }
}
