/** Checks an audit file's chains line by line and names the first deleted, altered, reordered, inserted or forged event. */
import {verify, type KeyObject} from 'node:crypto';
import {lineHash} from './audit-chain.ts';
import {AUDIT_GENESIS} from './audit-event.ts';

/** One stream as verify found it: its id, first and last seq, the line of its last event and that event's hash (its head). */
export interface StreamSummary {
  stream: string;
  firstSeq: number;
  lastSeq: number;
  lastLine: number;
  head: string;
}

/** What verify found: every v2 line intact, or the first problem with its 1-based line number. */
export type ChainVerdict =
  | {intact: true; events: number; legacyLines: number; signed: number; streams: StreamSummary[]}
  | {intact: false; line: number; problem: string; eventsBefore: number};

/** `,"sig":"<base64>"}` at the end of a signed line. */
const SIG_TAIL = /,"sig":"([A-Za-z0-9+/]+={0,2})"\}$/;
const HEX64 = /^[0-9a-f]{64}$/;
/** Strict UTF-8 (WHATWG Encoding): an invalid byte sequence throws instead of becoming U+FFFD; a BOM is kept (and then fails JSON.parse). */
const STRICT_UTF8 = new TextDecoder('utf-8', {fatal: true, ignoreBOM: true});

/**
 * How a value read from the file appears in a message: its type, and for a string its first 40
 * characters JSON-escaped (never the value itself: it may be huge or nested past any stack).
 */
function described(value: unknown): string {
  if (typeof value === 'string') return value.length <= 40 ? JSON.stringify(value) : `${JSON.stringify(value.slice(0, 40))}... (${value.length} characters)`;
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : typeof value;
}

/**
 * Verifies the audit lines in `bytes` (a whole JSONL file): every v2 line must follow the
 * previous line of its stream (`seq` one more, `prev` the SHA-256 of that line's exact bytes);
 * a stream starts at seq 1 with `prev` = `AUDIT_GENESIS`. With `publicKey`, every v2 line must
 * carry a `sig` that verifies (Ed25519, RFC 8032) over the line without its `,"sig":"…"` tail.
 * Streams may interleave (a log shipper merging replicas); each is checked on its own. v1 lines
 * (an older toolcell) are accepted only before the first v2 line, and counted as not covered.
 *
 * Detects, at the first line where it shows: a deleted line (a gap in seq, or a stream that does
 * not start at seq 1), an altered line (the next line's `prev` no longer matches; the line itself
 * when it does not parse or, with a key, when its signature fails), reordered or duplicated lines
 * (seq not increasing), inserted lines (a seq taken twice, or, with a key, an unsigned or badly
 * signed line).
 *
 * Cannot detect, and does not claim to: lines cut from the **end** of a stream (a truncated tail
 * looks like a stream that stopped: compare the reported heads with a copy kept elsewhere, e.g. a
 * log shipper's), a whole stream removed, an altered last line without a key (no successor
 * names its hash), or anything rewritten by someone who recomputes the chain (without a key the
 * chain proves order and completeness only against careless edits; with a key, only the key
 * holder can write lines that verify).
 *
 * Every line must be valid UTF-8 (decoded strictly: an invalid byte is an alteration, never read
 * as U+FFFD); the hash and the signature cover the line's exact bytes. Messages never quote a
 * value from the file beyond its type or 40 escaped characters.
 *
 * @param bytes the file's contents
 * @param publicKey an Ed25519 public key (or private key: its public half is used)
 */
export function verifyAuditChain(bytes: Uint8Array, publicKey?: KeyObject): ChainVerdict {
  const text = Buffer.from(bytes);
  const streams = new Map<string, StreamSummary>();
  let events = 0;
  let legacyLines = 0;
  let signed = 0;
  let start = 0;
  let lineNo = 0;
  const broken = (problem: string): ChainVerdict => ({intact: false, line: lineNo, problem, eventsBefore: events});
  while (start < text.length) {
    let end = text.indexOf(0x0a, start);
    const last = end < 0;
    if (last) end = text.length;
    const raw = text.subarray(start, end);
    start = end + 1;
    lineNo++;
    if (raw.length === 0) return broken('empty line (a line was removed or blanked)');
    let line: string;
    try {
      // Strict: a replaced byte must not decode like the U+FFFD it replaced (the signature is also checked over the bytes).
      line = STRICT_UTF8.decode(raw);
    } catch {
      return broken('not valid UTF-8: altered (toolcell writes only valid UTF-8)');
    }
    let event: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new TypeError('not an object');
      event = parsed as Record<string, unknown>;
    } catch {
      return broken(last ? 'not a JSON object: altered, or a write torn short (the last line has no newline)' : 'not a JSON object: altered');
    }
    if (event.v === 1) {
      if (events > 0) return broken('a v1 (unchained) line after the chain began: inserted');
      legacyLines++;
      continue;
    }
    if (event.v !== 2) return broken(`unknown schema version ${described(event.v)}: altered or inserted`);
    const {stream, seq, prev, sig} = event;
    // A plain id (toolcell writes UUIDs) as it is; anything else described.
    const named = typeof stream === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(stream) ? stream : described(stream);
    if (typeof stream !== 'string' || stream === '' || !Number.isSafeInteger(seq) || (seq as number) < 1 || typeof prev !== 'string' || !HEX64.test(prev)) {
      return broken('a v2 line without a valid stream, seq (integer >= 1) and prev (64 hex digits): altered or forged');
    }
    if (sig !== undefined) {
      const tail = SIG_TAIL.exec(line);
      if (typeof sig !== 'string' || tail === null || tail[1] !== sig) return broken('"sig" is not the last member of the line as the writer puts it: altered or forged');
      signed++;
      if (publicKey !== undefined) {
        // The exact bytes of the line without its `,"sig":"…"` tail (ASCII: as many bytes as characters), plus the closing brace.
        const body = Buffer.concat([raw.subarray(0, raw.length - tail[0].length), Buffer.from('}')]);
        let good = false;
        try {
          good = verify(null, body, publicKey, Buffer.from(sig, 'base64'));
        } catch {
          good = false;
        }
        if (!good) return broken(`forged or altered: the signature does not verify with the given public key (stream ${named}, seq ${seq})`);
      }
    } else if (publicKey !== undefined) {
      return broken(`unsigned line (stream ${named}, seq ${seq}) while a public key was given: forged, or written without the signing key`);
    }
    const n = seq as number;
    const known = streams.get(stream);
    if (known === undefined) {
      if (n !== 1) return broken(`stream ${named} begins at seq ${n}: events 1-${n - 1} are missing (deleted; or the file was rotated: verify the rotated files together, oldest first)`);
      if (prev !== AUDIT_GENESIS) return broken(`stream ${named} begins with a prev that is not the genesis value (64 zeros): altered`);
      streams.set(stream, {stream, firstSeq: 1, lastSeq: 1, lastLine: lineNo, head: lineHash(raw)});
      events++;
      continue;
    }
    if (n <= known.lastSeq) return broken(`seq ${n} after seq ${known.lastSeq} (line ${known.lastLine}) of stream ${named}: reordered, duplicated or inserted`);
    if (n > known.lastSeq + 1) {
      const later = lineOf(text, start, stream, known.lastSeq + 1);
      if (later !== undefined) return broken(`seq ${n} of stream ${named} comes before seq ${known.lastSeq + 1} (line ${lineNo + later}): reordered`);
      const missing = n === known.lastSeq + 2 ? `event ${known.lastSeq + 1} is` : `events ${known.lastSeq + 1}-${n - 1} are`;
      return broken(`${missing} missing from stream ${named} between line ${known.lastLine} and this line: deleted`);
    }
    if (prev !== known.head) {
      return broken(`prev is not the hash of line ${known.lastLine} (seq ${known.lastSeq} of stream ${named}): that line was altered, or this one was forged or inserted`);
    }
    known.lastSeq = n;
    known.lastLine = lineNo;
    known.head = lineHash(raw);
    events++;
  }
  return {intact: true, events, legacyLines, signed, streams: [...streams.values()]};
}

/** How many lines after the one ending before `from` the line of `stream` with `seq` comes (1 = the next line), or undefined. */
function lineOf(text: Buffer, from: number, stream: string, seq: number): number | undefined {
  let count = 0;
  for (const line of text.subarray(from).toString('utf8').split('\n')) {
    count++;
    try {
      const event = JSON.parse(line) as {stream?: unknown; seq?: unknown};
      if (event.stream === stream && event.seq === seq) return count;
    } catch {
      // Not an event: the scan goes on.
    }
  }
  return undefined;
}
