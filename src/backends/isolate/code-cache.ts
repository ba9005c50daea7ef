import {createHash} from 'node:crypto';
import type ivm from 'isolated-vm';

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
 * Bounded: least recently used entries are evicted once `maxBytes` is exceeded.
 */
export class CodeCache {
  readonly #maxBytes: number;
  readonly #entries = new Map<string, {data: ivm.ExternalCopy<ArrayBuffer>; bytes: number}>();
  #bytes = 0;

  /** @param maxBytes total size of the cached data, in bytes. */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** The cache key of a module's source text: hex sha256. */
  static keyOf(source: string): string {
    return createHash('sha256').update(source).digest('hex');
  }

  /** Cached data for `key`, marking it recently used; undefined when absent. */
  get(key: string): ivm.ExternalCopy<ArrayBuffer> | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.data;
  }

  /** Stores data produced by `compileModule(..., {produceCachedData: true})`. */
  set(key: string, data: ivm.ExternalCopy<ArrayBuffer>): void {
    this.delete(key);
    const bytes = data.copy().byteLength;
    if (bytes > this.#maxBytes) return;
    this.#entries.set(key, {data, bytes});
    this.#bytes += bytes;
    for (const [oldKey, entry] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(oldKey);
      this.#bytes -= entry.bytes;
      entry.data.release();
    }
  }

  /** Drops `key` (e.g. after V8 rejected its data). */
  delete(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= entry.bytes;
    entry.data.release();
  }

  /** Number of entries and their total size in bytes. */
  get size(): {entries: number; bytes: number} {
    return {entries: this.#entries.size, bytes: this.#bytes};
  }
}
