/** Turns audit events into chained lines: each line carries its stream, its seq and the SHA-256 of the line before it, and optionally an Ed25519 signature. */
import {closeSync, fstatSync, openSync, readSync} from 'node:fs';
import {createHash, randomUUID, sign, type KeyObject} from 'node:crypto';
import {escapeJsonForTerminal} from '../terminal-text.ts';
import {AUDIT_GENESIS} from './audit-event.ts';

/** Where a chain stands: the stream id, the seq of its last line (0 before the first) and that line's SHA-256 hex. */
export interface ChainHead {
  stream: string;
  seq: number;
  hash: string;
}

/** How much of a file's end is read to find its last line, in bytes (an event line is far shorter). */
const TAIL_BYTES = 256 * 1024;

/** SHA-256 (lower-case hex) of a line's exact bytes without its newline: the next line's `prev`. */
export const lineHash = (line: string | Uint8Array): string => createHash('sha256').update(line).digest('hex');

/** The head of a new chain: a fresh stream id, nothing written yet, `prev` of the first line = `AUDIT_GENESIS`. */
export const newChain = (): ChainHead => ({stream: randomUUID(), seq: 0, hash: AUDIT_GENESIS});

/**
 * The head to continue when appending to `path`: its last line's stream, seq and hash when that
 * line is a v2 audit event; otherwise (no file, an empty file, not a regular file, a last line
 * that is not a v2 event, e.g. v1 lines of an older toolcell or a torn write) a new chain.
 *
 * Also says whether the file ends without a newline (a torn last write): the writer then starts
 * with a newline, so that its first line stands alone; `toolcell audit verify` reports the torn line.
 * Reads at most the last 256 KiB. Never throws: an unreadable file gives a new chain (the
 * sink's own open then reports the error).
 */
export function chainOfFile(path: string): {head: ChainHead; torn: boolean} {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const stat = fstatSync(fd);
    if (!stat.isFile() || stat.size === 0) return {head: newChain(), torn: false};
    const length = Math.min(stat.size, TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, stat.size - length);
    const torn = buffer[length - 1] !== 0x0a;
    const body = torn ? buffer : buffer.subarray(0, length - 1);
    const start = body.lastIndexOf(0x0a) + 1;
    if (torn || (start === 0 && length < stat.size)) return {head: newChain(), torn};
    const last = body.subarray(start);
    const event = JSON.parse(last.toString('utf8')) as {v?: unknown; stream?: unknown; seq?: unknown};
    if (event.v !== 2 || typeof event.stream !== 'string' || !Number.isSafeInteger(event.seq) || (event.seq as number) < 1) return {head: newChain(), torn: false};
    return {head: {stream: event.stream, seq: event.seq as number, hash: lineHash(last)}, torn: false};
  } catch {
    return {head: newChain(), torn: false};
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Writes the lines of one chain, in order. Each `line(event)` gives the event's JSON line (no
 * newline) as `{"v":2,"stream":…,"seq":…,"prev":…,<the event's other fields>[,"sig":…]}`: strings
 * made well-formed and control characters escaped (`escapeJsonForTerminal`), so the bytes hashed
 * and signed are the bytes written. Not thread-safe across processes: one writer per stream (one
 * per file); two processes appending to one file fork its chain, which verify reports.
 */
export class AuditChain {
  #head: ChainHead;
  readonly #key: KeyObject | undefined;

  /**
   * @param head where to continue (`newChain()` or `chainOfFile(path).head`)
   * @param signingKey an Ed25519 private key: every line then carries `sig`
   * @throws TypeError when the key is not an Ed25519 private key
   */
  constructor(head: ChainHead, signingKey?: KeyObject) {
    if (signingKey !== undefined && (signingKey.type !== 'private' || signingKey.asymmetricKeyType !== 'ed25519')) {
      throw new TypeError('the audit signing key must be an Ed25519 private key');
    }
    this.#head = {...head};
    this.#key = signingKey;
  }

  /** Where the chain stands after the last line given out. */
  get head(): ChainHead {
    return {...this.#head};
  }

  /**
   * The next line of the chain for `event` (its own `v`, `stream`, `seq`, `prev`, `sig` are replaced).
   * @param replacer JSON.stringify replacer applied to the event's values
   */
  line(event: object, replacer?: (key: string, value: unknown) => unknown): string {
    const {v: _v, stream: _s, seq: _q, prev: _p, sig: _g, ...fields} = event as Record<string, unknown>;
    const seq = this.#head.seq + 1;
    const record = {v: 2, stream: this.#head.stream, seq, prev: this.#head.hash, ...fields};
    let line = escapeJsonForTerminal(JSON.stringify(record, replacer));
    if (this.#key !== undefined) {
      const sig = sign(null, Buffer.from(line, 'utf8'), this.#key).toString('base64');
      line = `${line.slice(0, -1)},"sig":"${sig}"}`;
    }
    this.#head = {stream: this.#head.stream, seq, hash: lineHash(Buffer.from(line, 'utf8'))};
    return line;
  }
}
