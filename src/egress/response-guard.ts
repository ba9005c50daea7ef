// What a response scrubber cannot read must not pass it: answers to a call with secrets that are encoded (Content-Encoding, Transfer-Encoding other than chunked) or partial (206, multipart/byteranges) are refused, and requests never ask for them.
import type {IncomingHttpHeaders, OutgoingHttpHeaders} from 'node:http';

/**
 * Request fields removed before a request of a call with secrets goes upstream: `Range` and
 * `If-Range` (RFC 9110 §14.2, §13.1.5) would let the tool fetch an echoed value in pieces, each
 * of which passes the scrubber as a fragment. (`Accept-Encoding` is set to `identity` instead,
 * see {@link prepareScrubbedRequest}.)
 */
export const PIECEWISE_REQUEST_FIELDS = ['range', 'if-range'] as const;

/**
 * Prepares the headers of a request whose response will be scrubbed (in place): removes `Range`
 * and `If-Range` (any case) and sets `accept-encoding: identity` (RFC 9110 §12.5.3), so a
 * well-behaved upstream answers with a whole, uncompressed body. A server may ignore both;
 * {@link unscrubbableResponse} refuses what it sends then.
 */
export function prepareScrubbedRequest(headers: OutgoingHttpHeaders | Record<string, string | string[]>): void {
  for (const name of Object.keys(headers)) {
    const lower = name.toLowerCase();
    if (lower === 'accept-encoding' || (PIECEWISE_REQUEST_FIELDS as readonly string[]).includes(lower)) delete headers[name];
  }
  headers['accept-encoding'] = 'identity';
}

/** The comma-separated tokens of a header (lower case, trimmed, empty ones left out). */
function tokens(value: string | string[] | undefined): string[] {
  const text = Array.isArray(value) ? value.join(',') : value ?? '';
  return text.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '');
}

/**
 * Why a response cannot be scrubbed and must be refused (a sentence for the 502 the tool gets,
 * naming the field and what is allowed), or undefined when its body is plain bytes a literal
 * scrubber reads:
 * - `Content-Encoding` with any coding but `identity` (gzip, br, deflate, zstd, ...): the body
 *   is compressed, so a value inside it is not literal, and the sandbox's HTTP client (Node's
 *   fetch) decompresses it after the scrub (RFC 9110 §8.4);
 * - `Transfer-Encoding` with any coding but `chunked` (RFC 9112 §6.1): Node's client removes
 *   only the chunking;
 * - status 206 (Partial Content) or a `multipart/byteranges` body (RFC 9110 §14.6, §15.3.7):
 *   each part may carry a fragment of a value, too short to be recognised.
 * `headers` are Node's parsed (lower-case) response headers. Pure.
 * Does NOT guarantee: that a body the upstream encoded in a format of its own (base64, a zip file
 * as `application/zip`) is recognised: only literal values are.
 */
export function unscrubbableResponse(status: number | undefined, headers: IncomingHttpHeaders): string | undefined {
  const coding = tokens(headers['content-encoding']).filter((t) => t !== 'identity');
  if (coding.length > 0) {
    return `the upstream answered with Content-Encoding: ${coding.join(', ').slice(0, 100)}; a call with secrets accepts only uncompressed bodies (Content-Encoding absent or identity), since a compressed body cannot be scrubbed of secret values`;
  }
  const transfer = tokens(headers['transfer-encoding']).filter((t) => t !== 'chunked');
  if (transfer.length > 0) {
    return `the upstream answered with Transfer-Encoding: ${transfer.join(', ').slice(0, 100)}; a call with secrets accepts only chunked or unencoded transfers, since an encoded body cannot be scrubbed of secret values`;
  }
  if (status === 206 || /^\s*multipart\/byteranges\b/i.test(String(headers['content-type'] ?? ''))) {
    return 'the upstream answered with a partial body (206 Partial Content or multipart/byteranges); a call with secrets accepts only whole bodies (Range requests are not forwarded), since a fragment of a secret value cannot be recognised';
  }
  return undefined;
}
