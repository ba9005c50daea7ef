/** Where audit events go: JSON lines to a file or stderr (never stdout), or memory for tests. */
import {createWriteStream, type WriteStream} from 'node:fs';
import type {AuditEventV1, AuditSink} from './audit-event.ts';

/**
 * Writes audit events as JSON lines to a file (appending, mode 0600) or to stderr
 * (`target === 'stderr'`), or drops them (`'off'`). Never to stdout: on stdio, stdout is the
 * protocol. Writes are asynchronous and ordered; a failing file is reported once on stderr
 * and then ignored, so that auditing cannot stop the server from answering.
 */
export class JsonlAuditSink implements AuditSink {
  readonly #stream: WriteStream | NodeJS.WriteStream | undefined;
  #failed = false;

  /** @param target a file path, `'stderr'`, or `'off'` */
  constructor(target: string) {
    if (target === 'off') return;
    if (target === 'stderr') {
      this.#stream = process.stderr;
      return;
    }
    const stream = createWriteStream(target, {flags: 'a', mode: 0o600});
    stream.on('error', (err) => {
      if (!this.#failed) process.stderr.write(`toolcell: audit log ${target} failed: ${err.message}\n`);
      this.#failed = true;
    });
    this.#stream = stream;
  }

  write(event: AuditEventV1): void {
    if (this.#stream === undefined || this.#failed) return;
    this.#stream.write(`${JSON.stringify(event)}\n`);
  }

  async close(): Promise<void> {
    const stream = this.#stream;
    if (stream === undefined || stream === process.stderr) return;
    await new Promise<void>((resolve) => (stream as WriteStream).end(resolve));
  }
}

/**
 * Keeps every event in memory, unbounded, in write order; for tests that assert what was
 * audited. Not for a server: nothing is ever evicted.
 */
export class MemoryAuditSink implements AuditSink {
  readonly events: AuditEventV1[] = [];
  write(event: AuditEventV1): void {
    this.events.push(event);
  }
  async close(): Promise<void> {}
}
