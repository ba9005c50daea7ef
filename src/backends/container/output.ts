/**
 * Bounded capture of a container's stdout and stderr from Docker's multiplexed attach stream.
 *
 * Without a TTY the attach stream carries frames: an 8-byte header (byte 0: 1 = stdout,
 * 2 = stderr; bytes 4-7: payload length, big-endian) followed by the payload.
 * Source: Docker Engine API v1.41, "Attach to a container" → "Stream format".
 *
 * Memory stays bounded: at most `capBytes` per stream are kept; once a stream passes its cap
 * the rest of its frames are parsed and dropped (the backend kills the container at once,
 * so little more arrives).
 *
 * A warm-pool launcher appends an exit report to each stream once the tool has exited
 * (pool.ts `exitMarkers`); {@link OutputCollector.expectExitReport} makes the collector watch
 * for it, keep room for it beyond the cap, and strip it from the text.
 */

const STDOUT = 1;
const STDERR = 2;

/** Bytes of each stream's end kept apart from the capture, to find an exit report in. */
const TAIL_BYTES = 128;

/** One captured stream: a single buffer that grows by doubling up to the cap (no per-frame objects). */
class Capture {
  #cap: number;
  #buf: Buffer = Buffer.alloc(0);
  #kept = 0;
  /** The last bytes seen (up to TAIL_BYTES), kept or not; tracked only once a report is expected. */
  #tail: Buffer | undefined;
  /** Bytes seen in total, kept or not. */
  seen = 0;
  overflowed = false;
  constructor(cap: number) {
    this.#cap = cap;
  }
  /**
   * Expects an exit report at the end of the stream: raises the cap by `roomBytes` and starts
   * keeping the stream's last bytes apart. Only before anything was added.
   */
  expectReport(roomBytes: number): void {
    if (this.seen !== 0) return;
    this.#cap += roomBytes;
    this.#tail = Buffer.alloc(0);
  }
  /** The last bytes seen (at most 128); empty unless a report is expected. */
  get tail(): Buffer {
    return this.#tail ?? Buffer.alloc(0);
  }
  /**
   * Drops the last `suffixBytes` kept bytes (an exit report), then cuts what is kept to
   * `cap` bytes, marking the stream overflowed when that cut anything.
   */
  finish(suffixBytes: number, cap: number): void {
    if (!this.overflowed) this.#kept = Math.max(0, this.#kept - suffixBytes);
    if (this.#kept > cap) {
      this.#kept = cap;
      this.overflowed = true;
    }
  }
  /** Copies what fits under the cap; returns true when this chunk made the stream overflow. */
  add(chunk: Buffer): boolean {
    this.seen += chunk.length;
    if (this.#tail !== undefined) {
      this.#tail = chunk.length >= TAIL_BYTES
        ? Buffer.from(chunk.subarray(chunk.length - TAIL_BYTES))
        : Buffer.concat([this.#tail, chunk]).subarray(-TAIL_BYTES);
    }
    if (this.overflowed) return false;
    const room = this.#cap - this.#kept;
    const take = Math.min(room, chunk.length);
    if (this.#kept + take > this.#buf.length) {
      let size = Math.max(4096, this.#buf.length * 2);
      while (size < this.#kept + take) size *= 2;
      const grown = Buffer.allocUnsafe(Math.min(size, this.#cap));
      this.#buf.copy(grown, 0, 0, this.#kept);
      this.#buf = grown;
    }
    chunk.copy(this.#buf, this.#kept, 0, take);
    this.#kept += take;
    if (chunk.length > room) {
      this.overflowed = true;
      return true;
    }
    return false;
  }
  /** The kept bytes as UTF-8, cut back to a character boundary when the stream overflowed. */
  text(): string {
    const buf = this.#buf.subarray(0, this.#kept);
    return (this.overflowed ? buf.subarray(0, utf8Boundary(buf)) : buf).toString('utf8');
  }
}

/** Length of the longest prefix of `buf` that does not end inside a UTF-8 sequence. */
export function utf8Boundary(buf: Buffer): number {
  let i = buf.length;
  // Walk back over at most 3 continuation bytes to the lead byte of the last sequence.
  let back = 0;
  while (back < 4 && i - back - 1 >= 0 && (buf[i - back - 1]! & 0xc0) === 0x80) back++;
  const leadIndex = i - back - 1;
  if (leadIndex < 0) return i;
  const lead = buf[leadIndex]!;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return need > back + 1 ? leadIndex : i;
}

/** Stream id of stderr in a frame header. */
export const STDERR_STREAM = STDERR;
/** Stream id of stdout in a frame header. */
export const STDOUT_STREAM = STDOUT;

/**
 * Incremental parser of the multiplexed attach stream (the frame format above): hands each
 * piece of payload to `onPayload` with its stream id and the length of the frame it belongs
 * to; a frame's payload may come in several pieces. `onPayload` returns true to stop: `push`
 * then returns the offset in its chunk just after that piece (the rest is not parsed).
 */
export class FrameParser {
  readonly #onPayload: (stream: number, part: Buffer, frameBytes: number) => boolean | void;
  #header = Buffer.alloc(8);
  #headerFill = 0;
  #remaining = 0;
  #type = 0;
  #frameBytes = 0;

  constructor(onPayload: (stream: number, part: Buffer, frameBytes: number) => boolean | void) {
    this.#onPayload = onPayload;
  }

  /** Feeds one chunk; returns how many of its bytes were parsed (all, unless `onPayload` stopped). */
  push(chunk: Buffer): number {
    let off = 0;
    while (off < chunk.length) {
      if (this.#remaining === 0) {
        const take = Math.min(8 - this.#headerFill, chunk.length - off);
        chunk.copy(this.#header, this.#headerFill, off, off + take);
        this.#headerFill += take;
        off += take;
        if (this.#headerFill < 8) return off;
        this.#headerFill = 0;
        this.#type = this.#header[0]!;
        this.#remaining = this.#frameBytes = this.#header.readUInt32BE(4);
        continue;
      }
      const take = Math.min(this.#remaining, chunk.length - off);
      const part = chunk.subarray(off, off + take);
      off += take;
      this.#remaining -= take;
      if (this.#onPayload(this.#type, part, this.#frameBytes) === true) return off;
    }
    return off;
  }
}

/**
 * Parses the multiplexed stream incrementally and keeps at most `capBytes` of stdout and of
 * stderr. `onOverflow` is called once, when the first stream passes its cap.
 */
export class OutputCollector {
  readonly stdout: Capture;
  readonly stderr: Capture;
  readonly #onOverflow: () => void;
  readonly #frames: FrameParser;
  #overflowSignalled = false;
  readonly #capBytes: number;
  #report: {stdout: Buffer; stderrPrefix: Buffer; onReport: (status: number) => void} | undefined;
  /** The exit status reported, once both reports arrived. */
  #status: number | undefined;
  /** Byte lengths of the two reports found, for stripping them. */
  #reportBytes = {stdout: 0, stderr: 0};

  constructor(capBytes: number, onOverflow: () => void) {
    this.#capBytes = capBytes;
    this.stdout = new Capture(capBytes);
    this.stderr = new Capture(capBytes);
    this.#onOverflow = onOverflow;
    this.#frames = new FrameParser((stream, part) => {
      const target = stream === STDERR ? this.stderr : stream === STDOUT ? this.stdout : undefined;
      if (target?.add(part) && !this.#overflowSignalled) {
        this.#overflowSignalled = true;
        this.#onOverflow();
      }
    });
  }

  /**
   * Watches for a launcher's exit report (pool.ts `exitMarkers`): `markers.stdout` ending
   * stdout and `markers.stderrPrefix` + decimal status + 0x1e ending stderr. Calls `onReport`
   * once, with the status, when both streams end with their report; the reports are then left
   * out of `stdout`/`stderr` by {@link finish}. Each stream's cap grows by `roomBytes` so that a
   * report after output of exactly the cap does not count as overflow. Call before any `push`.
   */
  expectExitReport(markers: {stdout: Buffer; stderrPrefix: Buffer}, roomBytes: number, onReport: (status: number) => void): void {
    this.#report = {...markers, onReport};
    this.stdout.expectReport(roomBytes);
    this.stderr.expectReport(roomBytes);
  }

  /** The exit status of a report that arrived on both streams, else undefined. */
  get reportedStatus(): number | undefined {
    return this.#status;
  }

  /**
   * Leaves the exit reports (when they arrived) out of the captured text and enforces the cap
   * the collector was made with. Call once, when the call ends.
   */
  finish(): void {
    if (this.#report === undefined) return;
    this.stdout.finish(this.#reportBytes.stdout, this.#capBytes);
    this.stderr.finish(this.#reportBytes.stderr, this.#capBytes);
  }

  #checkReport(): void {
    const report = this.#report;
    if (report === undefined || this.#status !== undefined) return;
    const out = this.stdout.tail;
    if (out.length < report.stdout.length || !out.subarray(out.length - report.stdout.length).equals(report.stdout)) return;
    const err = this.stderr.tail;
    if (err.length === 0 || err[err.length - 1] !== 0x1e) return;
    const at = err.lastIndexOf(report.stderrPrefix);
    if (at < 0) return;
    const digits = err.subarray(at + report.stderrPrefix.length, err.length - 1).toString('latin1');
    if (!/^\d{1,3}$/.test(digits)) return;
    this.#status = Number(digits);
    this.#reportBytes = {stdout: report.stdout.length, stderr: err.length - at};
    report.onReport(this.#status);
  }

  /** True once either stream passed its cap. */
  get truncated(): boolean {
    return this.stdout.overflowed || this.stderr.overflowed;
  }

  /** Feeds one chunk of the raw attach stream. */
  push(chunk: Buffer): void {
    this.#frames.push(chunk);
    this.#checkReport();
  }
}
