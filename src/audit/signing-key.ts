/** Loads the audit chain's Ed25519 keys: the private signing key from the service config (file mode checked) and a public key for verify. */
import {createPrivateKey, createPublicKey, type KeyObject} from 'node:crypto';
import {closeSync, constants, fstatSync, openSync, readFileSync} from 'node:fs';
import {ConfigError} from '../errors.ts';

/**
 * Reads the Ed25519 private key that signs audit lines (`audit.signingKey` in the service
 * config): a PEM file (PKCS#8, e.g. `openssl genpkey -algorithm ed25519 -out audit.pem`), a
 * regular file (not a symlink), owned by the user the service runs as and readable by nobody
 * else (mode 0600 or 0400: no group or other bits), like ssh's private keys. The mode and owner
 * are checked on the descriptor the key is read from, so a file swapped after the check is not read.
 *
 * Not guaranteed: that the key is secret (whoever can read it, root included, can sign lines
 * that verify), nor that the process keeps it out of a core dump.
 *
 * @param path the key file
 * @param source the name for error messages (the config file and field)
 * @throws ConfigError naming `source` when the file is missing, a symlink, readable or writable by
 *   group or others, owned by another user, or not an Ed25519 private key
 */
export function loadAuditSigningKey(path: string, source: string): KeyObject {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(source, code === 'ELOOP'
      ? 'the audit signing key must be a regular file, not a symlink'
      : `cannot read the audit signing key (${code ?? 'error'})`, {cause: err});
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ConfigError(source, 'the audit signing key must be a regular file');
    if ((stat.mode & 0o077) !== 0) {
      throw new ConfigError(source, `the audit signing key is open to group or others (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}); allowed: 0600 or 0400 (chmod 600 the file)`);
    }
    const uid = process.getuid?.();
    if (uid !== undefined && stat.uid !== uid) throw new ConfigError(source, `the audit signing key must be owned by the user the service runs as (uid ${uid})`);
    let key: KeyObject;
    try {
      key = createPrivateKey(readFileSync(fd));
    } catch (err) {
      throw new ConfigError(source, 'the audit signing key is not a PEM private key (expected PKCS#8 Ed25519, e.g. from "openssl genpkey -algorithm ed25519")', {cause: err});
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new ConfigError(source, `the audit signing key is ${key.asymmetricKeyType ?? 'not an asymmetric key'}; allowed: Ed25519`);
    return key;
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a public key to verify audit signatures with: a PEM SPKI public key
 * (`openssl pkey -in audit.pem -pubout -out audit.pub`), or the private key PEM itself.
 * @throws ConfigError naming `source` when the file cannot be read or is not an Ed25519 key
 */
export function loadAuditPublicKey(path: string, source: string): KeyObject {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    throw new ConfigError(source, `cannot read the public key (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {cause: err});
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new ConfigError(source, 'not a PEM public key (expected an Ed25519 SPKI key, e.g. from "openssl pkey -in audit.pem -pubout")', {cause: err});
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ConfigError(source, `the key is ${key.asymmetricKeyType ?? 'not an asymmetric key'}; allowed: Ed25519`);
  return key;
}
