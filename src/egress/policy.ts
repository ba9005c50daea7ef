// The egress address policy: the grant's schema, which addresses are refused, and where one connection may go.
import {lookup as dnsLookup} from 'node:dns/promises';
import {isIPv4, isIPv6} from 'node:net';
import * as z from 'zod';

/**
 * Everything here is pure except `resolveEgress`, which asks an injectable resolver once.
 *
 * Grant (ARCHITECTURE.md, "Egress and secrets"):
 * `{"allow": [...], "maxRequests", "maxBytesOut", "maxBytesIn", "requestTimeoutMs"}`.
 * An allow entry is one of
 * - a host name (`api.example.com`, ASCII/punycode, case-insensitive, a trailing dot ignored;
 *   its last label must not be all digits, so `127.1` or `2130706433` are never names),
 * - `*.` plus a domain of at least two labels (`*.example.org`): matches any name with ONE OR
 *   MORE labels in front of the domain (`a.example.org`, `a.b.example.org`), never the domain
 *   itself (name it separately),
 * - an IPv4 literal in dotted-decimal (`127.0.0.1`) or an IPv6 literal in brackets (`[::1]`),
 * each with an optional `:port` (1-65535). Without a port the entry allows ports 80 and 443.
 *
 * Addresses in refused ranges (loopback, private, CGNAT, link-local and cloud metadata,
 * unique-local, multicast, documentation, ... and their IPv4-mapped/compatible/NAT64/6to4
 * forms; see `classifyAddress`) are refused unless an IP-literal entry names that exact
 * address for that port. A name entry never opens a refused address.
 */

/** Ports an entry without `:port` allows: HTTP and HTTPS. */
export const DEFAULT_EGRESS_PORTS: readonly number[] = [80, 443];

const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const NAME_RE = new RegExp(`^(?:${LABEL}\\.)*${LABEL}$`);
const PORT_RE = /^[1-9][0-9]{0,4}$/;
const IPV4_RE = /^(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}$/;

/** One parsed allow entry. `entry` is the text as written in the profile (what messages and audit events name). */
export type EgressRule =
  | {entry: string; kind: 'name'; host: string; ports: readonly number[]}
  | {entry: string; kind: 'wildcard'; domain: string; ports: readonly number[]}
  | {entry: string; kind: 'ip'; address: string; family: 4 | 6; ports: readonly number[]};

function parsePort(text: string): number | undefined {
  if (!PORT_RE.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65_535 ? port : undefined;
}

/** A DNS host name as toolcell accepts it: lower-case ASCII labels, no trailing dot, last label not numeric; else undefined. */
export function normalizeHostName(host: string): string | undefined {
  let name = host.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0 || name.length > 253 || !NAME_RE.test(name)) return undefined;
  const last = name.slice(name.lastIndexOf('.') + 1);
  if (/^[0-9]+$/.test(last) || /^0x[0-9a-f]*$/.test(last)) return undefined; // would be read as an IPv4 number
  return name;
}

/**
 * The canonical text of an IP literal (`127.0.0.1`, `::1`; IPv6 without brackets, lower-case,
 * compressed as WHATWG URL serializes it), or undefined when `text` is not a strict literal.
 * IPv4 must be four decimal parts without leading zeros (no `0x7f.1`, no `2130706433`);
 * IPv6 may come in brackets; zone ids (`%eth0`) are refused.
 */
export function canonicalIp(text: string): {address: string; family: 4 | 6} | undefined {
  if (IPV4_RE.test(text)) return {address: text, family: 4};
  const inner = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (inner.includes('%') || !isIPv6(inner)) return undefined;
  // WHATWG URL's host serializer gives the RFC 5952 canonical form.
  return {address: new URL(`http://[${inner}]/`).hostname.slice(1, -1), family: 6};
}

/**
 * Parses one allow entry (see the module comment for the grammar).
 * @returns the rule, or a message naming what is wrong and what is allowed.
 */
export function parseAllowEntry(entry: string): EgressRule | {error: string} {
  const allowed = 'allowed: a host name, "*." plus a domain of two or more labels, an IPv4 literal or an IPv6 literal in brackets, each with an optional ":port" (1-65535)';
  let hostPart = entry;
  let ports: readonly number[] = DEFAULT_EGRESS_PORTS;
  const v6 = /^(\[[^\]]*\])(?::([^:]*))?$/.exec(entry);
  if (v6) {
    hostPart = v6[1]!;
    if (v6[2] !== undefined) {
      const port = parsePort(v6[2]);
      if (port === undefined) return {error: `"${entry}": the port must be a number from 1 to 65535`};
      ports = [port];
    }
    const ip = canonicalIp(hostPart);
    if (!ip || ip.family !== 6) return {error: `"${entry}" is not an IPv6 literal; ${allowed}`};
    return {entry, kind: 'ip', address: ip.address, family: 6, ports};
  }
  const colon = entry.lastIndexOf(':');
  if (colon !== -1) {
    if (entry.indexOf(':') !== colon) return {error: `"${entry}": an IPv6 literal must be written in brackets, e.g. "[::1]:8080"; ${allowed}`};
    const port = parsePort(entry.slice(colon + 1));
    if (port === undefined) return {error: `"${entry}": the port must be a number from 1 to 65535`};
    hostPart = entry.slice(0, colon);
    ports = [port];
  }
  if (IPV4_RE.test(hostPart)) return {entry, kind: 'ip', address: hostPart, family: 4, ports};
  if (/^[0-9.]+$/.test(hostPart) || /^0x/i.test(hostPart)) return {error: `"${entry}" is not a dotted-decimal IPv4 address; ${allowed}`};
  if (hostPart.startsWith('*.')) {
    const domain = normalizeHostName(hostPart.slice(2));
    if (domain === undefined || hostPart.endsWith('.')) return {error: `"${entry}": "${hostPart.slice(2)}" is not a valid domain; ${allowed}`};
    if (!domain.includes('.')) return {error: `"${entry}": a wildcard needs a domain of two or more labels (e.g. "*.example.org"), not a top-level domain`};
    return {entry, kind: 'wildcard', domain, ports};
  }
  if (hostPart.includes('*')) return {error: `"${entry}": "*" is allowed only as the whole first label ("*.example.org"); ${allowed}`};
  const host = normalizeHostName(hostPart);
  if (host === undefined || hostPart.endsWith('.')) return {error: `"${entry}" is not a valid host name (ASCII letters, digits and "-", labels of 1-63 characters, punycode for other scripts); ${allowed}`};
  return {entry, kind: 'name', host, ports};
}

const AllowEntry = z.string().min(1).max(270).superRefine((entry, ctx) => {
  const rule = parseAllowEntry(entry);
  if ('error' in rule) ctx.addIssue({code: 'custom', message: rule.error});
});

/** Maxima of the grant's limits: a profile cannot ask for more. */
export const EGRESS_LIMIT_MAXIMA = {maxRequests: 10_000, maxBytesOut: 2 ** 30, maxBytesIn: 2 ** 30, requestTimeoutMs: 300_000} as const;

/**
 * The egress grant of a profile (`"network": {"egress": EgressGrant}`), strict: an unknown key is
 * an error. Limits are per call (one tool invocation), counted by the proxy (and by the isolate
 * `fetch`): `maxRequests` HTTP requests plus CONNECT tunnels; `maxBytesOut`/`maxBytesIn` bytes
 * of bodies and tunnel payload sent upstream/received from upstream (headers not counted);
 * `requestTimeoutMs` for one request or tunnel from connect to the last byte, and also the
 * longest an upstream may stay silent. Not guaranteed: a tunnel's payload is opaque (TLS), so
 * bytes are counted, not understood.
 */
export const EgressGrantSchema = z.strictObject({
  allow: z.array(AllowEntry).min(1).max(256)
    .describe('Hosts the sandbox may reach: "api.example.com", "*.example.org" (one or more labels, not the apex), "127.0.0.1:8080", "[::1]:5432"; optional :port, default 80 and 443.'),
  maxRequests: z.number().int().min(1).max(EGRESS_LIMIT_MAXIMA.maxRequests).default(50)
    .describe('HTTP requests plus CONNECT tunnels per call (default 50, at most 10000).'),
  maxBytesOut: z.number().int().min(0).max(EGRESS_LIMIT_MAXIMA.maxBytesOut).default(2 ** 20)
    .describe('Bytes sent upstream per call: request bodies and tunnel payload (default 1 MiB, at most 1 GiB).'),
  maxBytesIn: z.number().int().min(0).max(EGRESS_LIMIT_MAXIMA.maxBytesIn).default(10 * 2 ** 20)
    .describe('Bytes received from upstream per call: response bodies and tunnel payload (default 10 MiB, at most 1 GiB).'),
  requestTimeoutMs: z.number().int().min(1).max(EGRESS_LIMIT_MAXIMA.requestTimeoutMs).default(10_000)
    .describe('Longest one request or tunnel may last, and longest an upstream may stay silent, in ms (default 10000).'),
});

/** A validated egress grant (limits filled with their defaults). */
export type EgressGrant = z.infer<typeof EgressGrantSchema>;

/**
 * Validates an egress grant. @throws ZodError naming the field and what is allowed.
 */
export function parseEgressGrant(value: unknown): EgressGrant {
  return EgressGrantSchema.parse(value);
}

/** The parsed rules of a grant (entries are already validated by the schema). */
export function egressRules(grant: EgressGrant): EgressRule[] {
  return grant.allow.map((entry) => {
    const rule = parseAllowEntry(entry);
    if ('error' in rule) throw new Error(`invalid egress entry: ${rule.error}`);
    return rule;
  });
}

/** The grant's allowlist in one line, for refusal messages ("allowed: a, b"). */
export function describeGrant(grant: EgressGrant): string {
  return grant.allow.join(', ');
}

// ---------------------------------------------------------------------------------------------
// Address classes

/** What kind of address this is; every class but `public` is refused unless an entry names the address. */
export type AddressClass =
  | 'public' | 'unspecified' | 'this-network' | 'loopback' | 'private' | 'shared' | 'link-local'
  | 'metadata' | 'unique-local' | 'site-local' | 'multicast' | 'broadcast' | 'documentation'
  | 'benchmarking' | 'reserved' | 'nat64-local' | 'teredo' | 'discard';

/** The classification of one address literal. */
export interface AddressClassification {
  /** Canonical text of the address. */
  address: string;
  family: 4 | 6;
  class: AddressClass;
  /** The range that decided, e.g. `10.0.0.0/8`; undefined for `public`. */
  range?: string;
  /** For IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4): that address; the class is its class. */
  embeddedIpv4?: string;
  /** Which IPv6 form carried `embeddedIpv4`. */
  via?: 'ipv4-mapped' | 'ipv4-compatible' | 'ipv4-translated' | 'nat64' | '6to4';
  /** true for every class but `public`. */
  refused: boolean;
}

function v4Bytes(address: string): number[] {
  return address.split('.').map(Number);
}

function v6Bytes(address: string): number[] {
  // address is valid (isIPv6) and has no zone id.
  let text = address;
  const tail: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    tail.push(...v4Bytes(dotted[1]!));
    text = `${text.slice(0, -dotted[1]!.length)}0:0`;
  }
  const [head, rest] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined];
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const h = parse(head);
  const r = rest === undefined ? [] : parse(rest);
  const groups = rest === undefined ? h : [...h, ...new Array(8 - h.length - r.length).fill(0), ...r];
  const bytes = groups.flatMap((g) => [g >> 8, g & 0xff]);
  if (tail.length) bytes.splice(12, 4, ...tail);
  return bytes;
}

function inPrefix(bytes: readonly number[], prefix: readonly number[], bits: number): boolean {
  for (let i = 0; i < bits; i += 8) {
    const take = Math.min(8, bits - i);
    const mask = (0xff << (8 - take)) & 0xff;
    if (((bytes[i / 8] ?? 0) & mask) !== ((prefix[i / 8] ?? 0) & mask)) return false;
  }
  return true;
}

/** IPv4 special-purpose ranges (IANA IPv4 Special-Purpose Address Registry, RFC 6890 and successors), most specific first. */
const V4_RANGES: ReadonlyArray<[string, number, AddressClass]> = [
  ['0.0.0.0', 32, 'unspecified'],
  ['255.255.255.255', 32, 'broadcast'],
  ['169.254.169.254', 32, 'metadata'], // AWS, GCP, Azure, OpenStack instance metadata
  ['192.0.0.192', 32, 'metadata'], // Oracle Cloud metadata (inside 192.0.0.0/24)
  ['100.100.100.200', 32, 'metadata'], // Alibaba Cloud metadata (inside 100.64.0.0/10)
  ['0.0.0.0', 8, 'this-network'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'shared'], // CGNAT, RFC 6598
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'], // IETF protocol assignments
  ['192.0.2.0', 24, 'documentation'],
  ['192.31.196.0', 24, 'reserved'], // AS112-v4
  ['192.52.193.0', 24, 'reserved'], // AMT
  ['192.88.99.0', 24, 'reserved'], // deprecated 6to4 relay anycast
  ['192.168.0.0', 16, 'private'],
  ['192.175.48.0', 24, 'reserved'], // direct delegation AS112
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];

/** IPv6 special-purpose ranges (IANA IPv6 Special-Purpose Address Registry), most specific first; forms carrying IPv4 are handled apart. */
const V6_RANGES: ReadonlyArray<[string, number, AddressClass]> = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['fd00:ec2::254', 128, 'metadata'], // AWS instance metadata over IPv6 (inside fc00::/7)
  ['64:ff9b:1::', 48, 'nat64-local'], // RFC 8215 local-use NAT64
  ['100::', 64, 'discard'], // RFC 6666
  ['2001::', 32, 'teredo'],
  ['2001:2::', 48, 'benchmarking'],
  ['2001:db8::', 32, 'documentation'],
  ['2001::', 23, 'reserved'], // IETF protocol assignments
  ['3fff::', 20, 'documentation'], // RFC 9637
  ['fc00::', 7, 'unique-local'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'], // deprecated, RFC 3879
  ['ff00::', 8, 'multicast'],
];

function classifyV4(address: string): Omit<AddressClassification, 'refused'> {
  const bytes = v4Bytes(address);
  for (const [prefix, bits, cls] of V4_RANGES) {
    if (inPrefix(bytes, v4Bytes(prefix), bits)) return {address, family: 4, class: cls, range: `${prefix}/${bits}`};
  }
  return {address, family: 4, class: 'public'};
}

function v4FromBytes(bytes: readonly number[], at: number): string {
  return bytes.slice(at, at + 4).join('.');
}

function classifyV6(address: string): Omit<AddressClassification, 'refused'> {
  const bytes = v6Bytes(address);
  const zero = (from: number, to: number) => bytes.slice(from, to).every((b) => b === 0);
  const embedded = (v4: string, via: AddressClassification['via'], range: string): Omit<AddressClassification, 'refused'> => {
    const inner = classifyV4(v4);
    return {address, family: 6, class: inner.class, range: inner.range ?? range, embeddedIpv4: v4, via};
  };
  for (const [prefix, bits, cls] of V6_RANGES.slice(0, 2)) {
    if (inPrefix(bytes, v6Bytes(prefix), bits)) return {address, family: 6, class: cls, range: `${prefix}/${bits}`};
  }
  if (zero(0, 10) && bytes[10] === 0xff && bytes[11] === 0xff) return embedded(v4FromBytes(bytes, 12), 'ipv4-mapped', '::ffff:0:0/96');
  if (zero(0, 12)) return embedded(v4FromBytes(bytes, 12), 'ipv4-compatible', '::/96');
  if (zero(0, 8) && bytes[8] === 0xff && bytes[9] === 0xff && zero(10, 12)) return embedded(v4FromBytes(bytes, 12), 'ipv4-translated', '::ffff:0:0:0/96');
  if (inPrefix(bytes, v6Bytes('64:ff9b::'), 96)) return embedded(v4FromBytes(bytes, 12), 'nat64', '64:ff9b::/96');
  if (inPrefix(bytes, v6Bytes('2002::'), 16)) return embedded(v4FromBytes(bytes, 2), '6to4', '2002::/16');
  for (const [prefix, bits, cls] of V6_RANGES.slice(2)) {
    if (inPrefix(bytes, v6Bytes(prefix), bits)) return {address, family: 6, class: cls, range: `${prefix}/${bits}`};
  }
  // Global unicast is 2000::/3; everything else is unallocated.
  if (!inPrefix(bytes, [0x20], 3)) return {address, family: 6, class: 'reserved', range: 'outside 2000::/3'};
  return {address, family: 6, class: 'public'};
}

/**
 * Classifies one IP literal. Pure, no DNS. IPv6 forms that carry an IPv4 address
 * (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, IPv4-translated
 * `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) take the class of
 * that IPv4 address. Sources: IANA IPv4/IPv6 Special-Purpose Address Registries (RFC 6890),
 * RFC 1918, RFC 6598, RFC 3927, RFC 4193, RFC 4291, RFC 6052, RFC 8215, RFC 5737, RFC 3849,
 * RFC 9637, RFC 3056; cloud metadata addresses from the providers' docs.
 * @param address an IPv4 dotted-decimal or IPv6 literal (brackets allowed)
 * @throws TypeError when `address` is not such a literal (names are never classified)
 * Not covered: whether a public address belongs to the operator's own network (e.g. a host's
 * public IP reached via hairpin NAT): name such addresses nowhere, or firewall them.
 */
export function classifyAddress(address: string): AddressClassification {
  const ip = canonicalIp(address);
  if (!ip) throw new TypeError(`"${address}" is not an IP literal (IPv4 dotted-decimal or IPv6)`);
  const result = ip.family === 4 ? classifyV4(ip.address) : classifyV6(ip.address);
  return {...result, refused: result.class !== 'public'};
}

// ---------------------------------------------------------------------------------------------
// Decisions

/** The verdict on one destination. `rule` is the allow entry (as written) that matched. */
export type EgressDecision =
  | {allowed: true; rule: string; host: string; port: number; ip?: {address: string; family: 4 | 6}}
  | {allowed: false; host: string; port: number; reason: string};

/** A destination host as it comes from a request: a name or an IP literal (IPv6 with or without brackets). */
function parseHost(host: string): {name: string} | {ip: {address: string; family: 4 | 6}} | undefined {
  const ip = canonicalIp(host);
  if (ip) return {ip};
  if (/^[0-9.]+$/.test(host) || /^0x/i.test(host) || host.includes(':')) return undefined;
  const name = normalizeHostName(host);
  return name === undefined ? undefined : {name};
}

/**
 * Decides whether the grant allows `host:port`, by the allowlist alone (no DNS). Pure.
 * An IP literal host is matched only by IP entries (canonical comparison); a name by name and
 * wildcard entries. A public IP literal that no entry names is refused like any unlisted host.
 * @returns allow with the matching entry, or deny with a reason naming the grant's allowlist
 * Not covered: where a name resolves; `resolveEgress` checks that.
 */
export function decideEgress(grant: EgressGrant, host: string, port: number): EgressDecision {
  const shown = host.length > 100 ? `${host.slice(0, 100)}…` : host;
  const deny = (why: string): EgressDecision => ({allowed: false, host: shown, port, reason: `${why}; the profile's egress grant allows only: ${describeGrant(grant)}`});
  if (!Number.isInteger(port) || port < 1 || port > 65_535) return deny(`port ${String(port)} is not a TCP port`);
  const parsed = parseHost(host);
  if (!parsed) return deny(`"${shown}" is neither a valid host name nor an IP literal`);
  for (const rule of egressRules(grant)) {
    if (!rule.ports.includes(port)) continue;
    if ('ip' in parsed) {
      if (rule.kind === 'ip' && rule.address === parsed.ip.address) return {allowed: true, rule: rule.entry, host: parsed.ip.address, port, ip: parsed.ip};
    } else if (rule.kind === 'name' ? rule.host === parsed.name
      : rule.kind === 'wildcard' && parsed.name.endsWith(`.${rule.domain}`)) {
      return {allowed: true, rule: rule.entry, host: parsed.name, port};
    }
  }
  const what = 'ip' in parsed ? `the address ${parsed.ip.family === 6 ? `[${parsed.ip.address}]` : parsed.ip.address}` : `the host "${parsed.name}"`;
  return deny(`${what} port ${port} is not in the allowlist`);
}

/** An injectable resolver shaped like `dns.promises.lookup(name, {all: true})`. */
export type EgressLookup = (hostname: string, options: {all: true; verbatim: true}) => Promise<ReadonlyArray<{address: string; family: number}>>;

/** Where one allowed connection goes: connect to `address` (never re-resolve `host`). */
export interface ResolvedEgress {
  host: string;
  port: number;
  /** The address to connect to (canonical; IPv6 without brackets). */
  address: string;
  family: 4 | 6;
  /** The allow entry that matched the host. */
  rule: string;
  /** The class of `address` (`public`, or a refused class that an IP entry names literally). */
  addressClass: AddressClass;
}

/** The result of `resolveEgress`: the destination, or a refusal with a reason naming the grant. */
export type EgressResolution =
  | ({allowed: true} & ResolvedEgress)
  | {allowed: false; host: string; port: number; reason: string; rule?: string};

/**
 * Decides `host:port` by the allowlist, then resolves a name ONCE (through `lookup`) and checks
 * every address it returned: if any lies in a refused range that no IP entry of the grant names
 * for this port, the whole destination is refused (a name that answers with one public and one
 * private address is refused). Returns the first address; the caller connects to exactly that
 * address (DNS rebinding: the name is never resolved again for this connection).
 * An IP literal needs no DNS: an IP entry names it, so it is allowed whatever its class.
 * @param options.lookup defaults to `dns.promises.lookup` (the host's resolver; its answers are trusted)
 * @param options.timeoutMs bound on the lookup (default 5000 ms); a slow resolver becomes a refusal
 * Never throws: resolver failures are refusals ("could not be resolved").
 * Not covered: what the address relays further (an allowed proxy or host forwards anywhere it likes).
 */
export async function resolveEgress(grant: EgressGrant, host: string, port: number,
  options: {lookup?: EgressLookup; timeoutMs?: number} = {}): Promise<EgressResolution> {
  const decision = decideEgress(grant, host, port);
  if (!decision.allowed) return decision;
  const suffix = `; the profile's egress grant allows only: ${describeGrant(grant)}`;
  if (decision.ip) {
    const cls = classifyAddress(decision.ip.address).class;
    return {allowed: true, host: decision.host, port, address: decision.ip.address, family: decision.ip.family, rule: decision.rule, addressClass: cls};
  }
  const lookup = options.lookup ?? (dnsLookup as unknown as EgressLookup);
  let answers: ReadonlyArray<{address: string; family: number}>;
  let timer: NodeJS.Timeout | undefined;
  try {
    answers = await Promise.race([
      lookup(decision.host, {all: true, verbatim: true}),
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('timeout')), options.timeoutMs ?? 5000); }),
    ]);
  } catch {
    return {allowed: false, host: decision.host, port, rule: decision.rule, reason: `the host "${decision.host}" could not be resolved`};
  } finally {
    clearTimeout(timer);
  }
  if (answers.length === 0) return {allowed: false, host: decision.host, port, rule: decision.rule, reason: `the host "${decision.host}" has no address`};
  const literal = new Set(egressRules(grant).filter((r) => r.kind === 'ip' && r.ports.includes(port)).map((r) => (r as {address: string}).address));
  let chosen: {address: string; family: 4 | 6; cls: AddressClass} | undefined;
  for (const answer of answers) {
    const ip = canonicalIp(answer.address);
    if (!ip || (!isIPv4(ip.address) && !isIPv6(ip.address))) {
      return {allowed: false, host: decision.host, port, rule: decision.rule, reason: `the host "${decision.host}" resolved to something that is not an address`};
    }
    const c = classifyAddress(ip.address);
    if (c.refused && !literal.has(ip.address)) {
      return {allowed: false, host: decision.host, port, rule: decision.rule,
        reason: `the host "${decision.host}" resolves to ${ip.family === 6 ? `[${ip.address}]` : ip.address}, a ${c.class} address that the grant does not name${suffix}`};
    }
    chosen ??= {address: ip.address, family: ip.family, cls: c.class};
  }
  return {allowed: true, host: decision.host, port, address: chosen!.address, family: chosen!.family, rule: decision.rule, addressClass: chosen!.cls};
}

/**
 * A network grant in words, for permission summaries (`list`, `add`, `update`, `profiles`):
 * `none (…)` or the allowlist and the per-call limits with their units. Pure.
 * @param none the words for `"none"` (the caller's phrasing, e.g. "none (loopback only)")
 */
export function networkInWords(network: 'none' | {egress: EgressGrant}, none = 'none (no interface but loopback)'): string {
  if (network === 'none') return none;
  const g = network.egress;
  return `egress only to ${describeGrant(g)} (ports 80 and 443 where none is named), through toolcell's egress proxy; `
    + `per call at most ${g.maxRequests} requests/connections, ${g.maxBytesOut} bytes out, ${g.maxBytesIn} bytes in, ${g.requestTimeoutMs} ms per request`;
}
