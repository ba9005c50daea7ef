/** How much request-body reading the HTTP service does at once: concurrent reads in total and per principal, and bytes buffered in total. */

/** The bounds of `BodyBudget`. */
export interface BodyLimits {
  /** Request bodies being read at once, all principals together. */
  maxConcurrent: number;
  /** Request bodies one principal may have being read at once. */
  maxConcurrentPerPrincipal: number;
  /** Bytes of body buffers allocated at once, all reads together (a read holds what it allocated until it ends). */
  maxBufferedBytes: number;
}

/**
 * Default bounds: 64 bodies at once, 8 per principal, 64 MiB buffered in total (raised to twice
 * `maxBodyBytes` when the body cap is larger, so that one whole body always fits). With the
 * default 1 MiB body cap a single principal can hold at most 8 MiB of body buffers.
 */
export const DEFAULT_BODY_LIMITS: BodyLimits = {maxConcurrent: 64, maxConcurrentPerPrincipal: 8, maxBufferedBytes: 64 * 1024 * 1024};

/** Why a body read was refused before or while it ran. */
export type BodyRefusal = 'busy' | 'principal-busy';

/** One admitted body read: the bytes it may buffer are reserved through `reserve`; `release` once when it ends. */
export interface BodyReservation {
  /** Reserves `bytes` more buffer for this read; false (nothing reserved) when the total would pass `maxBufferedBytes`. */
  reserve(bytes: number): boolean;
  /** Returns this read's slot and every byte it reserved (idempotent). */
  release(): void;
}

/**
 * Admission for request-body reads, so that slow or never-ending bodies (slowloris: many
 * connections each sending a body just under the cap, slowly) cannot make the service buffer
 * without bound: a read is admitted only while fewer than `maxConcurrent` reads run in total and
 * fewer than `maxConcurrentPerPrincipal` for its principal, and its buffer grows only while the
 * total allocated stays within `maxBufferedBytes`.
 *
 * Not guaranteed: fairness between principals beyond the per-principal cap (a few principals
 * together can hold every slot until Node's 60 s `requestTimeout`); the memory of idle
 * connections that send no body (bounded by the OS and Node's `headersTimeout`); bodies read
 * by anything other than the `/mcp` route (none are).
 */
export class BodyBudget {
  readonly limits: BodyLimits;
  #active = 0;
  #buffered = 0;
  readonly #perPrincipal = new Map<string, number>();

  /** @throws RangeError when a limit is not a positive integer */
  constructor(limits: BodyLimits) {
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`body limit ${name} must be a positive integer, got ${value}`);
    }
    this.limits = {...limits};
  }

  /** Reads in progress. */
  get active(): number {
    return this.#active;
  }

  /** Bytes reserved by reads in progress. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Admits one body read of `principalId`, or says why not. */
  begin(principalId: string): BodyReservation | BodyRefusal {
    const mine = this.#perPrincipal.get(principalId) ?? 0;
    if (mine >= this.limits.maxConcurrentPerPrincipal) return 'principal-busy';
    if (this.#active >= this.limits.maxConcurrent) return 'busy';
    this.#active++;
    this.#perPrincipal.set(principalId, mine + 1);
    let held = 0;
    let released = false;
    return {
      reserve: (bytes) => {
        if (released) return false;
        if (this.#buffered + bytes > this.limits.maxBufferedBytes) return false;
        this.#buffered += bytes;
        held += bytes;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.#active--;
        this.#buffered -= held;
        const left = (this.#perPrincipal.get(principalId) ?? 1) - 1;
        if (left === 0) this.#perPrincipal.delete(principalId);
        else this.#perPrincipal.set(principalId, left);
      },
    };
  }
}
