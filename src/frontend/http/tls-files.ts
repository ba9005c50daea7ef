/** Reads and checks the service's TLS certificate chain and private key (config `tls.cert` / `tls.key`), at start and on every SIGHUP reload. */
import {createPrivateKey, X509Certificate} from 'node:crypto';
import {constants} from 'node:fs';
import {open} from 'node:fs/promises';
import {createSecureContext} from 'node:tls';
import {ConfigError} from '../../errors.ts';

/** A certificate chain and its key as read from disk, checked to belong together. */
export interface TlsFiles {
  /** PEM chain, leaf first. */
  readonly cert: Buffer;
  /** PEM private key of the leaf. */
  readonly key: Buffer;
  /** The leaf's SHA-256 fingerprint (colon-separated hex), for the log. */
  readonly fingerprint256: string;
  /** The leaf's `notAfter`, for the log. */
  readonly validTo: Date;
}

/** Largest certificate or key file read, in bytes (64 KiB): a chain of a few certificates fits many times. */
export const MAX_TLS_FILE_BYTES = 64 * 1024;

/**
 * Reads `tls.cert` and `tls.key` (absolute paths, or relative to the working directory) and
 * checks them before they are used:
 * - each is a regular file of at most {@link MAX_TLS_FILE_BYTES} (symbolic links are followed,
 *   as Kubernetes Secret volumes use them; the checks apply to the file opened);
 * - the key is private: no permission for others, no write or execute for its group, owned by
 *   this process's user (mode 0600 or 0400), or owned by root and readable by its group only
 *   (0440/0400: a Kubernetes Secret volume with `fsGroup`);
 * - both are strict PEM (RFC 7468 strict form, `parsePemStrictly`): complete blocks only, nothing
 *   but whitespace between them; the certificate file holds only CERTIFICATE blocks, each a
 *   valid X.509 certificate; the key file one private key (and optionally EC PARAMETERS). A file
 *   cut in the middle (written halfway when the reload came) is refused, not half used;
 * - the first certificate is valid now and matches the key, and node's TLS accepts the pair.
 *
 * Does NOT check the chain up to a trusted root, the names in the certificate (clients do), or
 * revocation. The key's bytes stay in memory for the process's life (node's secure context).
 *
 * @throws ConfigError (source `tls.cert` / `tls.key`) naming the file and the cause; never the key
 */
export async function readTlsFiles(tls: {readonly cert: string; readonly key: string}): Promise<TlsFiles> {
  const key = await readChecked(tls.key, 'tls.key', true);
  const cert = await readChecked(tls.cert, 'tls.cert', false);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new ConfigError('tls.cert', `${tls.cert} does not start with a PEM certificate (${(err as Error).message})`, {cause: err});
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new ConfigError('tls.key', `${tls.key} is not a PEM private key (or it is encrypted, which is not supported)`, {cause: err});
  }
  // OpenSSL skips what it cannot read (a block cut in the middle, text around blocks): a file
  // written halfway would pass and serve an incomplete chain. Every byte must be accounted for.
  const certBlocks = parsePemStrictly(cert, tls.cert, 'tls.cert', CERT_LABELS);
  for (const [index, block] of certBlocks.entries()) {
    try {
      new X509Certificate(block.der);
    } catch (err) {
      throw new ConfigError('tls.cert', `${tls.cert}: certificate ${index + 1} of ${certBlocks.length} is not a valid X.509 certificate (${(err as Error).message})`, {cause: err});
    }
  }
  if (parsePemStrictly(key, tls.key, 'tls.key', KEY_LABELS).filter((b) => b.label !== 'EC PARAMETERS').length !== 1) {
    throw new ConfigError('tls.key', `${tls.key} must hold exactly one private key block`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new ConfigError('tls.key', `${tls.key} is not the private key of the certificate in ${tls.cert} (subject ${leaf.subject.replace(/\n/g, ', ')})`);
  }
  const now = Date.now();
  const validFrom = new Date(leaf.validFrom);
  const validTo = new Date(leaf.validTo);
  if (now < validFrom.getTime() || now > validTo.getTime()) {
    throw new ConfigError('tls.cert', `the certificate in ${tls.cert} is not valid now (valid from ${validFrom.toISOString()} to ${validTo.toISOString()})`);
  }
  try {
    createSecureContext({cert, key});
  } catch (err) {
    throw new ConfigError('tls.cert', `node's TLS refuses the pair ${tls.cert} + ${tls.key} (${(err as Error).message})`, {cause: err});
  }
  return {cert, key, fingerprint256: leaf.fingerprint256, validTo};
}

async function readChecked(path: string, source: string, secret: boolean): Promise<Buffer> {
  let handle;
  try {
    // O_NONBLOCK: a FIFO at the path must not hang start-up or a reload (it is then refused as not a regular file).
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw new ConfigError(source, `cannot open ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {cause: err});
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new ConfigError(source, `${path} is not a regular file`);
    if (st.size > MAX_TLS_FILE_BYTES) throw new ConfigError(source, `${path} is ${st.size} bytes; at most ${MAX_TLS_FILE_BYTES} are read`);
    if (secret) {
      const mode = st.mode & 0o777;
      const euid = process.geteuid?.();
      const owner = st.uid === euid ? 'self' : st.uid === 0 ? 'root' : 'other';
      const octal = mode.toString(8).padStart(4, '0');
      if (owner === 'other') {
        throw new ConfigError(source, `${path} is owned by uid ${st.uid}; a private key must belong to this user (uid ${euid}) or to root`);
      }
      if ((mode & 0o007) !== 0 || (mode & 0o030) !== 0 || (owner === 'self' && (mode & 0o040) !== 0)) {
        throw new ConfigError(source, `${path} has mode ${octal}, which lets others read or change the private key; allowed: 0600 or 0400 owned by this user, or 0440 owned by root (a Kubernetes Secret volume with fsGroup). Run: chmod 600 ${path}`);
      }
    }
    const bytes = await handle.readFile();
    if (bytes.length > MAX_TLS_FILE_BYTES) throw new ConfigError(source, `${path} grew past ${MAX_TLS_FILE_BYTES} bytes while it was read`);
    return bytes;
  } finally {
    await handle.close();
  }
}

const CERT_LABELS: ReadonlySet<string> = new Set(['CERTIFICATE']);
const KEY_LABELS: ReadonlySet<string> = new Set(['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY', 'EC PARAMETERS']);
const PEM_BLOCK = /-----BEGIN ([A-Z0-9][A-Z0-9 ]{0,40})-----\r?\n([A-Za-z0-9+/=\r\n\t ]*?)-----END ([A-Z0-9][A-Z0-9 ]{0,40})-----/y;
const WHITESPACE = /[ \t\r\n]*/y;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Parses PEM text strictly (RFC 7468 section 3, strict form, without explanatory text): the file
 * is ASCII, and is nothing but complete `-----BEGIN L-----` ... `-----END L-----` blocks, with
 * matching labels from `labels`, well-formed base64 bodies (padding only at the end), and only
 * whitespace before, between and after them; at least one block.
 * @returns the blocks in order: label and decoded DER bytes
 * @throws ConfigError (`source`) naming the file, the line and what is wrong (never the content)
 */
export function parsePemStrictly(bytes: Buffer, path: string, source: string, labels: ReadonlySet<string>): Array<{label: string; der: Buffer}> {
  const nonAscii = bytes.findIndex((b) => b > 0x7e || (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d));
  if (nonAscii !== -1) throw new ConfigError(source, `${path} is not PEM text: byte ${nonAscii} is not printable ASCII`);
  const text = bytes.toString('latin1');
  const lineAt = (at: number) => text.slice(0, at).split('\n').length;
  const blocks: Array<{label: string; der: Buffer}> = [];
  let at = 0;
  for (;;) {
    WHITESPACE.lastIndex = at;
    WHITESPACE.exec(text);
    at = WHITESPACE.lastIndex;
    if (at === text.length) break;
    PEM_BLOCK.lastIndex = at;
    const m = PEM_BLOCK.exec(text);
    if (m === null) {
      throw new ConfigError(source, `${path}: line ${lineAt(at)} does not start a complete PEM block (-----BEGIN ...----- to -----END ...-----); the file may be written halfway, or hold text outside its blocks, which is not accepted`);
    }
    const [, label, body, endLabel] = m as unknown as [string, string, string, string];
    if (label !== endLabel) throw new ConfigError(source, `${path}: line ${lineAt(at)}: block BEGIN ${label} ends with END ${endLabel}`);
    if (!labels.has(label)) throw new ConfigError(source, `${path}: line ${lineAt(at)}: a ${label} block; allowed here: ${[...labels].join(', ')}`);
    const b64 = body.replace(/[ \t\r\n]/g, '');
    if (b64.length === 0 || !BASE64.test(b64)) throw new ConfigError(source, `${path}: line ${lineAt(at)}: the ${label} block's base64 is incomplete or malformed`);
    blocks.push({label, der: Buffer.from(b64, 'base64')});
    at = PEM_BLOCK.lastIndex;
  }
  if (blocks.length === 0) throw new ConfigError(source, `${path} holds no PEM block`);
  return blocks;
}
