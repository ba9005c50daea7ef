// What a container with granted secrets gets: its placeholders as environment variables, and the egress CA (certificate only) mounted read-only with the variables TLS clients read.
import type {Mount} from '../backends/backend.ts';
import type {EgressCa} from './ca.ts';
import type {CallSecrets} from './secrets.ts';

/** Where the CA files appear inside the container (read-only). */
export const CONTAINER_CA_DIR = '/etc/toolcell/egress';

/** Environment variables that point TLS clients at a CA file: OpenSSL (curl, Python ssl, Ruby), Python requests, curl, Node. */
export const CA_ENV = ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'NODE_EXTRA_CA_CERTS'] as const;

/**
 * The environment and mounts of a container (or hosted server) call whose profile grants
 * secrets: each secret's placeholder under its name (`GITHUB_TOKEN=toolcell-secret-…`), and,
 * so that the proxy can intercept the secret's hosts, the egress CA's certificate and a bundle of
 * Node's Mozilla roots plus that certificate mounted read-only under `CONTAINER_CA_DIR`, with
 * `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` and `CURL_CA_BUNDLE` naming the bundle (they replace the
 * client's store, so the roots must be in it: tunnelled hosts still verify) and
 * `NODE_EXTRA_CA_CERTS` the certificate alone (Node adds it to its own roots).
 * The CA key is never mounted (it is not in either file).
 * Does NOT guarantee: that every TLS client in the image reads these variables (Java, Go's
 * `crypto/x509` on some systems, and programs with a pinned store do not; they then fail to
 * verify the intercepted host rather than bypass anything).
 */
export function containerSecretSetup(ca: EgressCa, secrets: CallSecrets): {env: Record<string, string>; mounts: Mount[]} {
  const cert = `${CONTAINER_CA_DIR}/ca.crt`;
  const bundle = `${CONTAINER_CA_DIR}/ca-bundle.crt`;
  return {
    env: {...secrets.placeholders, SSL_CERT_FILE: bundle, REQUESTS_CA_BUNDLE: bundle, CURL_CA_BUNDLE: bundle, NODE_EXTRA_CA_CERTS: cert},
    mounts: [
      {source: ca.certFile, target: cert, readOnly: true},
      {source: ca.bundleFile, target: bundle, readOnly: true},
    ],
  };
}
