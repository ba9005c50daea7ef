// Tool sources by SHA-256, so that each source crosses to a worker once.
import {createHash} from 'node:crypto';
import {LRUCache} from 'lru-cache';

/** Lower-case hex sha256 of `source` as UTF-8. */
export function sha256Hex(source: string): string {
  return createHash('sha256').update(source, 'utf8').digest('hex');
}

/**
 * The worker's copy of module source texts, keyed by the sha256 the worker computed
 * itself from the text it received (a text whose digest does not match the key it was
 * sent under is refused by `put`). So the supervisor sends each distinct source once per
 * worker instead of with every call (a bundled tool can be hundreds of KB).
 *
 * Only source text (code as data, exactly as the tool package supplied it) is kept:
 * nothing a call produced, no compiled state, no isolate. Bounded in UTF-8 bytes; least
 * recently used entries are evicted. A miss is never an error: the worker asks the
 * supervisor for the source again.
 */
export class SourceCache {
  /** Undefined when the budget is 0 (lru-cache needs a positive `maxSize`): nothing is kept. */
  readonly #entries: LRUCache<string, string> | undefined;

  /** @param maxBytes total size of the kept sources, in UTF-8 bytes; 0 keeps none. */
  constructor(maxBytes: number) {
    this.#entries = maxBytes > 0
      ? new LRUCache({maxSize: maxBytes, sizeCalculation: (source) => Math.max(1, Buffer.byteLength(source, 'utf8'))})
      : undefined;
  }

  /** The source with sha256 `hash`, marking it recently used; undefined when absent. */
  get(hash: string): string | undefined {
    return this.#entries?.get(hash);
  }

  /**
   * Checks that `source` hashes to `hash` and keeps it (unless larger than the budget).
   * @returns false, keeping nothing, when the digest does not match.
   */
  put(hash: string, source: string): boolean {
    if (sha256Hex(source) !== hash) return false;
    this.#entries?.set(hash, source);
    return true;
  }

  /** Number of entries and their total size in UTF-8 bytes. */
  get size(): {entries: number; bytes: number} {
    return {entries: this.#entries?.size ?? 0, bytes: this.#entries?.calculatedSize ?? 0};
  }
}

/** Digest of a source text, as computed by `SourceDigests`. */
export interface SourceDigest {
  /** Lower-case hex sha256 of the UTF-8 text. */
  hash: string;
  /** UTF-8 length in bytes. */
  bytes: number;
}

/**
 * The supervisor's memo of source digests, keyed by the source text itself (so two
 * different texts never share a digest; a lookup of the same string object is O(1) once
 * V8 has hashed it). Bounded by entry count and total UTF-16 length; least recently used
 * entries are evicted and simply hashed again when next seen.
 */
export class SourceDigests {
  readonly #entries: LRUCache<string, SourceDigest>;

  /**
   * @param maxEntries distinct texts remembered at most.
   * @param maxChars total length of the remembered texts, in UTF-16 code units; a longer text is hashed on every call.
   */
  constructor(maxEntries: number, maxChars: number) {
    this.#entries = new LRUCache({max: maxEntries, maxSize: maxChars, sizeCalculation: (_digest, source) => Math.max(1, source.length)});
  }

  /** The digest of `source`, computed on first sight and remembered. */
  of(source: string): SourceDigest {
    const known = this.#entries.get(source);
    if (known !== undefined) return known;
    const digest: SourceDigest = {hash: sha256Hex(source), bytes: Buffer.byteLength(source, 'utf8')};
    this.#entries.set(source, digest);
    return digest;
  }
}

/**
 * The supervisor's record of which source hashes one worker was sent, least recently
 * used first, bounded by count. It may be wrong in one direction only: the worker may
 * have evicted a hash recorded here (it then asks for the source again, costing one
 * round trip); it never makes a worker run a source other than the one hashed.
 */
export class SentSources {
  readonly #hashes: LRUCache<string, true>;

  /** @param max hashes remembered at most. */
  constructor(max: number) {
    this.#hashes = new LRUCache({max});
  }

  /** True when `hash` was sent (and marks it recently used). */
  has(hash: string): boolean {
    return this.#hashes.get(hash) === true;
  }

  /** Records that `hash` was sent with its source. */
  add(hash: string): void {
    this.#hashes.set(hash, true);
  }

  /** Forgets `hash` (the worker said it does not have it). */
  delete(hash: string): void {
    this.#hashes.delete(hash);
  }
}
