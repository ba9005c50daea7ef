import {createHash} from 'node:crypto';

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
  readonly #maxBytes: number;
  readonly #entries = new Map<string, {source: string; bytes: number}>();
  #bytes = 0;

  /** @param maxBytes total size of the kept sources, in UTF-8 bytes; 0 keeps none. */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** The source with sha256 `hash`, marking it recently used; undefined when absent. */
  get(hash: string): string | undefined {
    const entry = this.#entries.get(hash);
    if (entry === undefined) return undefined;
    this.#entries.delete(hash);
    this.#entries.set(hash, entry);
    return entry.source;
  }

  /**
   * Checks that `source` hashes to `hash` and keeps it (unless larger than the budget).
   * @returns false, keeping nothing, when the digest does not match.
   */
  put(hash: string, source: string): boolean {
    if (sha256Hex(source) !== hash) return false;
    const bytes = Buffer.byteLength(source, 'utf8');
    const old = this.#entries.get(hash);
    if (old !== undefined) {
      this.#entries.delete(hash);
      this.#bytes -= old.bytes;
    }
    if (bytes > this.#maxBytes) return true;
    this.#entries.set(hash, {source, bytes});
    this.#bytes += bytes;
    for (const [oldHash, entry] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(oldHash);
      this.#bytes -= entry.bytes;
    }
    return true;
  }

  /** Number of entries and their total size in UTF-8 bytes. */
  get size(): {entries: number; bytes: number} {
    return {entries: this.#entries.size, bytes: this.#bytes};
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
  readonly #maxEntries: number;
  readonly #maxChars: number;
  readonly #entries = new Map<string, SourceDigest>();
  #chars = 0;

  /**
   * @param maxEntries distinct texts remembered at most.
   * @param maxChars total length of the remembered texts, in UTF-16 code units; a longer text is hashed on every call.
   */
  constructor(maxEntries: number, maxChars: number) {
    this.#maxEntries = maxEntries;
    this.#maxChars = maxChars;
  }

  /** The digest of `source`, computed on first sight and remembered. */
  of(source: string): SourceDigest {
    const known = this.#entries.get(source);
    if (known !== undefined) {
      this.#entries.delete(source);
      this.#entries.set(source, known);
      return known;
    }
    const digest: SourceDigest = {hash: sha256Hex(source), bytes: Buffer.byteLength(source, 'utf8')};
    if (source.length > this.#maxChars) return digest;
    this.#entries.set(source, digest);
    this.#chars += source.length;
    for (const oldSource of this.#entries.keys()) {
      if (this.#entries.size <= this.#maxEntries && this.#chars <= this.#maxChars) break;
      this.#entries.delete(oldSource);
      this.#chars -= oldSource.length;
    }
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
  readonly #max: number;
  readonly #hashes = new Set<string>();

  /** @param max hashes remembered at most. */
  constructor(max: number) {
    this.#max = max;
  }

  /** True when `hash` was sent (and marks it recently used). */
  has(hash: string): boolean {
    if (!this.#hashes.has(hash)) return false;
    this.#hashes.delete(hash);
    this.#hashes.add(hash);
    return true;
  }

  /** Records that `hash` was sent with its source. */
  add(hash: string): void {
    this.#hashes.delete(hash);
    this.#hashes.add(hash);
    for (const old of this.#hashes) {
      if (this.#hashes.size <= this.#max) break;
      this.#hashes.delete(old);
    }
  }

  /** Forgets `hash` (the worker said it does not have it). */
  delete(hash: string): void {
    this.#hashes.delete(hash);
  }
}
