// The per-installation egress CA: created once in the state directory (key 0600), and the short-lived leaf certificates it mints per host for TLS interception.
import {randomBytes, webcrypto, X509Certificate as NodeX509} from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import {closeSync, constants, fstatSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync} from 'node:fs';
import {isIP} from 'node:net';
import {join} from 'node:path';
import {rootCertificates} from 'node:tls';
// @peculiar/x509 (through tsyringe) needs the Reflect metadata API: the reflect-metadata polyfill, loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** ECDSA P-256 with SHA-256 (RFC 5758 §3.2): small keys, fast signatures, accepted by every TLS client we mount the CA for. */
const ALG = {name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256'} as const;
/** CA validity: 5 years. */
const CA_DAYS = 5 * 365;
/** Leaf validity: 24 h, renewed when less than 1 h is left; backdated 5 min for clock skew. */
const LEAF_MS = 24 * 3600_000;
const LEAF_RENEW_MS = 3600_000;
const SKEW_MS = 5 * 60_000;
/** Leaf certificates kept in memory (oldest dropped first). */
const LEAF_CACHE = 1024;

/** Files of the CA inside its directory. */
export const CA_FILES = {
  /** Key and certificate together (PEM), mode 0600: never mounted anywhere. */
  key: 'ca-key.pem',
  /** The CA certificate alone (PEM), 0644: mounted read-only into sandboxes with a secret (NODE_EXTRA_CA_CERTS). */
  cert: 'ca.crt',
  /** Node's bundled Mozilla roots plus the CA certificate (PEM), 0644: SSL_CERT_FILE / REQUESTS_CA_BUNDLE of such sandboxes. */
  bundle: 'ca-bundle.crt',
} as const;

/** A leaf certificate and its key, PEM, for `tls.createSecureContext`. */
export interface LeafCertificate {
  cert: string;
  key: string;
  notAfter: Date;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function derOf(text: string, label: string): Buffer {
  const m = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`).exec(text);
  if (!m) throw new Error(`no ${label} block`);
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}

/**
 * Checks that `dir` is a real directory (not a symlink) owned by this process's euid and closed
 * to group and others (0700), creating it so when absent.
 * @throws Error naming the directory and what is wrong.
 */
function ownPrivateDir(dir: string): void {
  mkdirSync(dir, {recursive: true, mode: 0o700});
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory (a symlink is refused)`);
  if (process.geteuid && st.uid !== process.geteuid()) throw new Error(`${dir} is owned by uid ${st.uid}, not by this process (uid ${process.geteuid()})`);
  if ((st.mode & 0o077) !== 0) throw new Error(`${dir} is open to group or others (mode ${(st.mode & 0o777).toString(8)}; 0700 required)`);
}

/**
 * Reads the key file without following a symlink, and only when it is a regular file owned by
 * this euid with mode 0600 or stricter (checked on the open descriptor, so a swap between the
 * check and the read changes nothing). Returns undefined when it does not exist.
 * @throws Error naming the file and what is wrong.
 */
function readPrivateFile(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new Error(`${file} is a symlink; the CA key must be a regular file`);
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${file} is not a regular file`);
    if (process.geteuid && st.uid !== process.geteuid()) throw new Error(`${file} is owned by uid ${st.uid}, not by this process`);
    if ((st.mode & 0o077) !== 0) throw new Error(`${file} has mode ${(st.mode & 0o777).toString(8)}; the CA key must be 0600 (chmod 600 it, or remove it to make a new CA)`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Writes a public file by write-then-rename (never through a symlink planted at `file`). */
function writePublic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, text, {mode: 0o644, flag: 'wx'});
  renameSync(tmp, file);
}

/**
 * The installation's egress CA: its certificate (public), its key (only in this process and
 * in `<dir>/ca-key.pem`, mode 0600), and leaf certificates for host names and IP literals.
 *
 * Trust: sandboxes that carry a granted secret trust this CA (its certificate is mounted
 * read-only); the key never enters a sandbox. Leaves last 24 h and share one P-256 key per
 * process (generated at start, never written to disk).
 * Does NOT guarantee: that someone who can read the key file (root, the same user) cannot mint
 * certificates the sandboxes trust; that a sandbox does not keep trusting the CA after it was
 * replaced (it is mounted per call, so only calls in flight keep the old one).
 */
export class EgressCa {
  readonly dir: string;
  /** The CA certificate, PEM. */
  readonly certPem: string;
  readonly #caKey: CryptoKey;
  readonly #caCert: x509.X509Certificate;
  readonly #leafKeys: CryptoKeyPair;
  readonly #leafKeyPem: string;
  readonly #leaves = new Map<string, Promise<LeafCertificate>>();

  private constructor(dir: string, caCert: x509.X509Certificate, caKey: CryptoKey, leafKeys: CryptoKeyPair, leafKeyPem: string) {
    this.dir = dir;
    this.#caCert = caCert;
    this.certPem = caCert.toString('pem') + '\n';
    this.#caKey = caKey;
    this.#leafKeys = leafKeys;
    this.#leafKeyPem = leafKeyPem;
  }

  /** Path of the CA certificate alone (for NODE_EXTRA_CA_CERTS). */
  get certFile(): string {
    return join(this.dir, CA_FILES.cert);
  }
  /** Path of the roots-plus-CA bundle (for SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE). */
  get bundleFile(): string {
    return join(this.dir, CA_FILES.bundle);
  }

  /**
   * Loads the CA from `dir` (e.g. `<state dir>/egress-ca`), creating it on first use: the
   * directory 0700, the key file 0600 (created exclusively and linked into place, so two
   * processes starting at once end with one CA). Rewrites `ca.crt` and `ca-bundle.crt`.
   * @throws Error when the directory or the key file is a symlink, not owned by this euid, or
   *   open to group or others (the message names the path); the CA is never used then.
   */
  static async open(dir: string): Promise<EgressCa> {
    ownPrivateDir(dir);
    const keyFile = join(dir, CA_FILES.key);
    let text = readPrivateFile(keyFile);
    if (text === undefined) {
      const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair;
      const now = Date.now();
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: randomSerial(),
        name: `CN=toolcell egress CA ${randomBytes(4).toString('hex')}, O=toolcell`,
        notBefore: new Date(now - SKEW_MS),
        notAfter: new Date(now + CA_DAYS * 86_400_000),
        keys,
        signingAlgorithm: ALG,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        ],
      });
      const created = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) + cert.toString('pem') + '\n';
      const tmp = `${keyFile}.${process.pid}.${randomBytes(4).toString('hex')}`;
      writeFileSync(tmp, created, {mode: 0o600, flag: 'wx'});
      try {
        linkSync(tmp, keyFile);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        unlinkSync(tmp);
      }
      text = readPrivateFile(keyFile)!;
    }
    const caKey = await webcrypto.subtle.importKey('pkcs8', derOf(text, 'PRIVATE KEY'), ALG, false, ['sign']);
    const caCert = new x509.X509Certificate(derOf(text, 'CERTIFICATE'));
    const leafKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair;
    const leafKeyPem = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey));
    const ca = new EgressCa(dir, caCert, caKey, leafKeys, leafKeyPem);
    writePublic(ca.certFile, ca.certPem);
    writePublic(ca.bundleFile, [...rootCertificates, ca.certPem].join('\n'));
    return ca;
  }

  /**
   * A leaf certificate for `host` (a DNS name or an IP literal), signed by the CA, valid 24 h,
   * cached per host and renewed when less than 1 h is left.
   * @throws Error when `host` is neither a DNS name nor an IP literal.
   */
  leaf(host: string): Promise<LeafCertificate> {
    const name = host.toLowerCase().replace(/^\[|\]$/g, '');
    if (isIP(name) === 0 && !/^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$/.test(name)) {
      return Promise.reject(new Error(`not a host name or IP literal: ${JSON.stringify(host).slice(0, 80)}`));
    }
    const cached = this.#leaves.get(name);
    if (cached !== undefined) {
      return cached.then((leaf) => (leaf.notAfter.getTime() - Date.now() > LEAF_RENEW_MS ? leaf : this.#mint(name)));
    }
    return this.#mint(name);
  }

  #mint(name: string): Promise<LeafCertificate> {
    const promise = (async () => {
      const now = Date.now();
      const notAfter = new Date(now + LEAF_MS);
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: `CN=${name}`,
        issuer: this.#caCert.subject,
        notBefore: new Date(now - SKEW_MS),
        notAfter,
        signingKey: this.#caKey,
        publicKey: this.#leafKeys.publicKey,
        signingAlgorithm: ALG,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
          new x509.SubjectAlternativeNameExtension([{type: isIP(name) === 0 ? 'dns' : 'ip', value: name}]),
          await x509.AuthorityKeyIdentifierExtension.create(this.#caCert.publicKey),
        ],
      });
      return {cert: cert.toString('pem') + '\n' + this.certPem, key: this.#leafKeyPem, notAfter};
    })();
    this.#leaves.delete(name);
    this.#leaves.set(name, promise);
    if (this.#leaves.size > LEAF_CACHE) this.#leaves.delete(this.#leaves.keys().next().value!);
    promise.catch(() => this.#leaves.delete(name));
    return promise;
  }

  /** The CA certificate as node:crypto sees it (for tests and `doctor`). */
  certificate(): NodeX509 {
    return new NodeX509(this.certPem);
  }
}

/** A positive 16-byte serial number, hex (RFC 5280 §4.1.2.2: at most 20 octets, positive). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f | 0x01;
  return bytes.toString('hex');
}
