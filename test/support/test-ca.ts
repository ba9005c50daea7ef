/**
 * A throwaway certificate authority for TLS tests: a root and leaf certificates for the loopback
 * names (ECDSA P-256, PEM), made with the `openssl` command in a private temp folder.
 * (@peculiar/x509 is installed, but it needs a `reflect-metadata` polyfill that is not; Debian's
 * openssl is on every machine of this image.)
 */
import {execFileSync} from 'node:child_process';
import {X509Certificate} from 'node:crypto';
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';

/** A certificate and its private key, both PEM (key: PKCS#8). */
export interface PemPair {
  cert: string;
  key: string;
  /** SHA-256 fingerprint as node's `X509Certificate.fingerprint256` prints it. */
  fingerprint256: string;
}

/** A test CA: its root certificate (PEM) and a function that issues leaf certificates for `127.0.0.1`, `::1` and `localhost`. */
export interface TestCa {
  /** Root certificate, PEM: what a client must trust. */
  root: string;
  /** Issues a leaf for the loopback names, valid 1 day, with a fresh key. */
  issue(commonName?: string): PemPair;
  /** Removes the CA's temp folder (its key). */
  dispose(): void;
}

const openssl = (dir: string, args: string[]) => execFileSync('openssl', args, {cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000});

/** Creates a fresh root CA (valid 1 day) in a private temp folder. */
export function testCa(name = 'toolcell test CA'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'toolcell-ca-'));
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '1', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  let serial = 1;
  return {
    root: readFileSync(join(dir, 'ca.pem'), 'utf8'),
    issue(commonName = 'localhost') {
      serial++;
      const base = `leaf${serial}`;
      writeFileSync(join(dir, `${base}.ext`), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n');
      openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${commonName}`]);
      openssl(dir, ['x509', '-req', '-in', `${base}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(serial), '-days', '1',
        '-extfile', `${base}.ext`, '-out', `${base}.pem`]);
      const cert = readFileSync(join(dir, `${base}.pem`), 'utf8');
      return {cert, key: readFileSync(join(dir, `${base}.key`), 'utf8'), fingerprint256: new X509Certificate(cert).fingerprint256};
    },
    dispose: () => rmSync(dir, {recursive: true, force: true}),
  };
}
