/** `toolcell audit verify FILE [--public-key K]`: checks an audit file's chains and prints the first broken event, or that it is intact. */
import {readFile} from 'node:fs/promises';
import {loadAuditPublicKey} from './audit/signing-key.ts';
import {verifyAuditChain} from './audit/verify-chain.ts';
import {ConfigError} from './errors.ts';
import {escapeForTerminal} from './terminal-text.ts';

/**
 * Reads `file` (`-` for stdin, e.g. rotated files concatenated oldest first) and verifies it
 * (`verifyAuditChain`). Prints on stdout:
 * - `intact: N events` then one line per stream: `stream ID: seq A-B, last line L, head HASH`
 *   (the head to compare with a copy kept elsewhere: a cut tail is not detectable here), and
 *   whether signatures were checked;
 * - or `broken: line N: PROBLEM` (N counted from 1) and how many events before it were intact.
 *
 * @returns the exit code: 0 intact, 1 broken, 2 usage error (unreadable file or key; message on
 *   stderr) or a check that could not finish (an unexpected error: no verdict, no stack)
 */
export async function auditVerifyCommand(file: string, flags: {publicKey?: string}): Promise<number> {
  let bytes: Buffer;
  let key;
  try {
    key = flags.publicKey === undefined ? undefined : loadAuditPublicKey(flags.publicKey, '--public-key');
    bytes = file === '-' ? await readStdin() : await readFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`toolcell: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`toolcell: cannot read ${escapeForTerminal(file)} (${(err as NodeJS.ErrnoException).code ?? 'error'})\n`);
    return 2;
  }
  let verdict;
  try {
    verdict = verifyAuditChain(bytes, key);
  } catch (err) {
    // A bug or a resource limit (a crafted file), never a verdict: say so, without the file's content or a stack.
    process.stderr.write(`toolcell: audit verify could not finish (${err instanceof RangeError ? 'RangeError' : (err as Error)?.name ?? 'error'}): no verdict; the file may be crafted to break the checker\n`);
    return 2;
  }
  if (!verdict.intact) {
    process.stdout.write(`broken: line ${verdict.line}: ${escapeForTerminal(verdict.problem)}\n`);
    process.stdout.write(`(${verdict.eventsBefore} events before it are intact)\n`);
    return 1;
  }
  process.stdout.write(`intact: ${verdict.events} events\n`);
  for (const s of verdict.streams) {
    process.stdout.write(`stream ${escapeForTerminal(s.stream)}: seq ${s.firstSeq}-${s.lastSeq}, last line ${s.lastLine}, head ${s.head}\n`);
  }
  if (verdict.legacyLines > 0) process.stdout.write(`${verdict.legacyLines} v1 lines before the chain are not covered by it\n`);
  process.stdout.write(key !== undefined
    ? `signatures: all ${verdict.signed} verified\n`
    : verdict.signed > 0 ? `signatures: ${verdict.signed} lines signed, not checked (give --public-key)\n` : 'signatures: none\n');
  process.stdout.write('not detectable here: events cut from the end of a stream (compare each head with a copy kept elsewhere)\n');
  return 0;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
