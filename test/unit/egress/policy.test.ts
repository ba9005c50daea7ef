import assert from 'node:assert/strict';
import {test} from 'node:test';
import {
  classifyAddress, decideEgress, EgressGrantSchema, networkInWords, parseAllowEntry, parseEgressGrant, resolveEgress,
  type AddressClass, type EgressLookup,
} from '../../../src/egress/policy.ts';
import {parseProfile} from '../../../src/policy/load-profiles.ts';

// The address policy on literals only: no test here sends a packet or asks a real resolver.
// invariant: egress:address:refused-ranges
// invariant: egress:dns:resolved-once

const CLASS_TABLE: ReadonlyArray<[string, AddressClass, string?]> = [
  // IPv4
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'this-network'],
  ['10.0.0.1', 'private'],
  ['10.255.255.255', 'private'],
  ['100.64.0.1', 'shared'],
  ['100.127.255.254', 'shared'],
  ['100.100.100.200', 'metadata'],
  ['127.0.0.1', 'loopback'],
  ['127.0.0.2', 'loopback'],
  ['127.255.255.255', 'loopback'],
  ['169.254.0.1', 'link-local'],
  ['169.254.169.254', 'metadata'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['192.0.0.8', 'reserved'],
  ['192.0.0.192', 'metadata'],
  ['192.0.2.1', 'documentation'],
  ['192.88.99.1', 'reserved'],
  ['192.168.1.1', 'private'],
  ['198.18.0.1', 'benchmarking'],
  ['198.19.255.255', 'benchmarking'],
  ['198.51.100.7', 'documentation'],
  ['203.0.113.9', 'documentation'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['240.0.0.1', 'reserved'],
  ['255.255.255.255', 'broadcast'],
  // IPv4 neighbours of the ranges stay public
  ['9.255.255.255', 'public'],
  ['11.0.0.0', 'public'],
  ['100.63.255.255', 'public'],
  ['100.128.0.0', 'public'],
  ['172.15.255.255', 'public'],
  ['172.32.0.0', 'public'],
  ['192.167.255.255', 'public'],
  ['192.169.0.0', 'public'],
  ['8.8.8.8', 'public'],
  ['223.255.255.255', 'public'],
  // IPv6
  ['::', 'unspecified'],
  ['[::]', 'unspecified'],
  ['::1', 'loopback'],
  ['[::1]', 'loopback'],
  ['0:0:0:0:0:0:0:1', 'loopback'],
  ['fc00::1', 'unique-local'],
  ['fd12:3456::1', 'unique-local'],
  ['fd00:ec2::254', 'metadata'],
  ['fe80::1', 'link-local'],
  ['febf:ffff::1', 'link-local'],
  ['fec0::1', 'site-local'],
  ['ff02::1', 'multicast'],
  ['ff05::2', 'multicast'],
  ['2001:db8::1', 'documentation'],
  ['3fff::1', 'documentation'],
  ['2001::1', 'teredo'],
  ['2001:2::1', 'benchmarking'],
  ['2001:10::1', 'reserved'],
  ['100::1', 'discard'],
  ['64:ff9b:1::1', 'nat64-local'],
  ['4000::1', 'reserved'],
  ['::1:0:0:1', 'reserved'],
  ['::2:1', 'this-network', 'ipv4-compatible'],
  ['2606:4700:4700::1111', 'public'],
  ['2a00:1450::1', 'public'],
  // IPv6 forms carrying IPv4: the IPv4 address's class
  ['::ffff:127.0.0.1', 'loopback', 'ipv4-mapped'],
  ['::ffff:7f00:1', 'loopback', 'ipv4-mapped'],
  ['::ffff:10.1.2.3', 'private', 'ipv4-mapped'],
  ['::ffff:169.254.169.254', 'metadata', 'ipv4-mapped'],
  ['::ffff:100.64.0.1', 'shared', 'ipv4-mapped'],
  ['::ffff:0.0.0.0', 'unspecified', 'ipv4-mapped'],
  ['::ffff:8.8.8.8', 'public', 'ipv4-mapped'],
  ['::127.0.0.1', 'loopback', 'ipv4-compatible'],
  ['::10.0.0.1', 'private', 'ipv4-compatible'],
  ['::ffff:0:192.168.0.1', 'private', 'ipv4-translated'],
  ['64:ff9b::127.0.0.1', 'loopback', 'nat64'],
  ['64:ff9b::a9fe:a9fe', 'metadata', 'nat64'],
  ['64:ff9b::c0a8:1', 'private', 'nat64'],
  ['64:ff9b::808:808', 'public', 'nat64'],
  ['2002:7f00:1::', 'loopback', '6to4'],
  ['2002:a9fe:a9fe::1', 'metadata', '6to4'],
  ['2002:c0a8:101::1', 'private', '6to4'],
  ['2002:808:808::1', 'public', '6to4'],
];

for (const [address, cls, via] of CLASS_TABLE) {
  test(`address policy: ${address} is ${cls}${via ? ` (via ${via})` : ''}${cls === 'public' ? '' : ', refused'}`, () => {
    const c = classifyAddress(address);
    assert.equal(c.class, cls);
    assert.equal(c.refused, cls !== 'public');
    if (via) assert.equal(c.via, via);
  });
}

test('address policy: only IP literals are classified; names and non-canonical IPv4 forms throw', () => {
  for (const text of ['localhost', 'example.com', '127.1', '2130706433', '0x7f.0.0.1', '0177.0.0.1', '127.000.0.1', 'fe80::1%eth0', '', '1.2.3.4.5']) {
    assert.throws(() => classifyAddress(text), TypeError, text);
  }
});

const ENTRY_OK: ReadonlyArray<[string, Record<string, unknown>]> = [
  ['api.example.com', {kind: 'name', host: 'api.example.com', ports: [80, 443]}],
  ['API.Example.COM', {kind: 'name', host: 'api.example.com'}],
  ['db.internal:5432', {kind: 'name', host: 'db.internal', ports: [5432]}],
  ['localhost', {kind: 'name', host: 'localhost'}],
  ['xn--bcher-kva.example', {kind: 'name', host: 'xn--bcher-kva.example'}],
  ['*.example.org', {kind: 'wildcard', domain: 'example.org', ports: [80, 443]}],
  ['*.example.org:8443', {kind: 'wildcard', domain: 'example.org', ports: [8443]}],
  ['127.0.0.1:8080', {kind: 'ip', address: '127.0.0.1', family: 4, ports: [8080]}],
  ['8.8.8.8', {kind: 'ip', address: '8.8.8.8', ports: [80, 443]}],
  ['[::1]', {kind: 'ip', address: '::1', family: 6, ports: [80, 443]}],
  ['[0:0::1]:5432', {kind: 'ip', address: '::1', family: 6, ports: [5432]}],
  ['[::ffff:127.0.0.1]:80', {kind: 'ip', address: '::ffff:7f00:1', family: 6}],
];
for (const [entry, expected] of ENTRY_OK) {
  test(`allow entry "${entry}" parses`, () => assert.partialDeepStrictEqual(parseAllowEntry(entry), {entry, ...expected}));
}

const ENTRY_BAD: ReadonlyArray<[string, RegExp]> = [
  ['*', /not a valid host name|"\*" is allowed only/],
  ['*.com', /two or more labels/],
  ['*.*.example.org', /not a valid domain/],
  ['a.*.example.org', /only as the whole first label/],
  ['foo*.example.org', /only as the whole first label/],
  ['::1', /must be written in brackets/],
  ['::1:80', /must be written in brackets/],
  ['[::1', /not a valid host name|brackets/],
  ['[fe80::1%eth0]', /not an IPv6 literal/],
  ['[127.0.0.1]', /not an IPv6 literal/],
  ['127.1', /dotted-decimal/],
  ['2130706433', /dotted-decimal/],
  ['0x7f000001', /dotted-decimal/],
  ['127.000.0.1', /dotted-decimal/],
  ['1.2.3.256', /dotted-decimal/],
  ['example.com:0', /port/],
  ['example.com:65536', /port/],
  ['example.com:08', /port/],
  ['example.com:', /port/],
  ['example.com:http', /port/],
  ['exa_mple.com', /not a valid host name/],
  ['-bad.example', /not a valid host name/],
  ['a..b', /not a valid host name/],
  ['example.com.', /not a valid host name/],
  ['http://example.com', /brackets|port|host name/],
  ['example.com/path', /not a valid host name/],
  ['bücher.example', /not a valid host name/],
  [`${'a'.repeat(64)}.example`, /not a valid host name/],
  ['host.123', /dotted-decimal|not a valid host name/],
];
for (const [entry, message] of ENTRY_BAD) {
  test(`allow entry "${entry}" is refused with a reason`, () => {
    const rule = parseAllowEntry(entry);
    assert.ok('error' in rule, JSON.stringify(rule));
    assert.match(rule.error, message);
  });
}

test('the grant schema is strict, bounded, and fills the documented default limits', () => {
  const g = parseEgressGrant({allow: ['api.example.com']});
  assert.deepEqual(g, {allow: ['api.example.com'], maxRequests: 50, maxBytesOut: 2 ** 20, maxBytesIn: 10 * 2 ** 20, requestTimeoutMs: 10_000});
  for (const bad of [
    {allow: []},
    {allow: ['*.com']},
    {allow: ['a.example'], maxRequest: 5},
    {allow: ['a.example'], maxRequests: 0},
    {allow: ['a.example'], maxRequests: 10_001},
    {allow: ['a.example'], maxBytesIn: 2 ** 30 + 1},
    {allow: ['a.example'], requestTimeoutMs: 300_001},
    {allow: new Array(257).fill('a.example')},
  ]) assert.equal(EgressGrantSchema.safeParse(bad).success, false, JSON.stringify(bad).slice(0, 80));
});

test('a profile may grant egress (container and isolate); "none" stays the default; a bad entry is a load error naming it', () => {
  const limits = {timeoutMs: 1000, memoryMb: 64, cpus: 0.5, pids: 16, outputBytes: 1024};
  const p = parseProfile('/p/net.json', JSON.stringify({name: 'net', backend: 'container', limits, commands: ['python3'],
    network: {egress: {allow: ['127.0.0.1:8080'], maxRequests: 3}}}));
  assert.ok(p.backend === 'container' && p.network !== 'none' && p.network.egress.maxRequests === 3);
  const i = parseProfile('/p/iso.json', JSON.stringify({name: 'iso', backend: 'isolate', limits: {timeoutMs: 1000, memoryMb: 16, outputBytes: 1024}}));
  assert.equal(i.network, 'none');
  assert.throws(() => parseProfile('/p/net.json', JSON.stringify({name: 'net', backend: 'container', limits, commands: ['python3'],
    network: {egress: {allow: ['*.com']}}})), /\*\.com/);
  assert.throws(() => parseProfile('/p/net.json', JSON.stringify({name: 'net', backend: 'container', limits, commands: ['python3'],
    network: 'host'})), /network/);
});

test('the permission summary names the allowlist and the limits with units', () => {
  const words = networkInWords({egress: parseEgressGrant({allow: ['api.example.com', '127.0.0.1:8080'], maxRequests: 7})});
  assert.match(words, /api\.example\.com, 127\.0\.0\.1:8080/);
  assert.match(words, /7 requests/);
  assert.match(words, /bytes out/);
  assert.equal(networkInWords('none'), 'none (no interface but loopback)');
});

const grant = parseEgressGrant({allow: ['api.example.com', '*.example.org', 'db.internal:5432', '127.0.0.1:8080', '[::1]:9000', '8.8.8.8:53']});

const DECIDE: ReadonlyArray<[string, number, string | null]> = [
  ['api.example.com', 443, 'api.example.com'],
  ['API.EXAMPLE.COM', 80, 'api.example.com'],
  ['api.example.com.', 443, 'api.example.com'],
  ['api.example.com', 8443, null],
  ['evil.example.com', 443, null],
  ['a.example.org', 443, '*.example.org'],
  ['a.b.example.org', 80, '*.example.org'],
  ['example.org', 443, null],
  ['badexample.org', 443, null],
  ['db.internal', 5432, 'db.internal:5432'],
  ['db.internal', 443, null],
  ['127.0.0.1', 8080, '127.0.0.1:8080'],
  ['127.0.0.1', 8081, null],
  ['127.0.0.2', 8080, null],
  ['::ffff:127.0.0.1', 8080, null],
  ['[::1]', 9000, '[::1]:9000'],
  ['::1', 9000, '[::1]:9000'],
  ['0:0:0:0:0:0:0:1', 9000, '[::1]:9000'],
  ['8.8.8.8', 53, '8.8.8.8:53'],
  ['8.8.4.4', 53, null],
  ['2130706433', 8080, null],
  ['127.1', 8080, null],
  ['0x7f.0.0.1', 8080, null],
  ['localhost', 8080, null],
  ['', 443, null],
  ['api.example.com', 0, null],
  ['api.example.com', 70_000, null],
];
for (const [host, port, rule] of DECIDE) {
  test(`decideEgress: ${JSON.stringify(host)}:${port} is ${rule ? `allowed by "${rule}"` : 'refused, naming the grant'}`, () => {
    const d = decideEgress(grant, host, port);
    if (rule) {
      assert.ok(d.allowed, JSON.stringify(d));
      assert.equal(d.rule, rule);
    } else {
      assert.ok(!d.allowed, JSON.stringify(d));
      assert.match(d.reason, /egress grant allows only: api\.example\.com, \*\.example\.org/);
    }
  });
}

/** A test resolver: a fixed table, never the real DNS. */
function resolver(table: Record<string, string[]>): EgressLookup & {calls: string[]} {
  const calls: string[] = [];
  const fn = async (name: string) => {
    calls.push(name);
    const list = table[name];
    if (!list) throw Object.assign(new Error(`ENOTFOUND ${name}`), {code: 'ENOTFOUND'});
    return list.map((address) => ({address, family: address.includes(':') ? 6 : 4}));
  };
  return Object.assign(fn, {calls});
}

test('resolveEgress: a name resolves once and the public address it gave is the one to connect to', async () => {
  const lookup = resolver({'api.example.com': ['93.184.215.14', '2606:2800:21f:cb07:6820:80da:af6b:8b2c']});
  const r = await resolveEgress(grant, 'api.example.com', 443, {lookup});
  assert.ok(r.allowed);
  assert.equal(r.address, '93.184.215.14');
  assert.equal(r.rule, 'api.example.com');
  assert.deepEqual(lookup.calls, ['api.example.com']);
});

for (const [address, cls] of [['127.0.0.2', 'loopback'], ['10.0.0.5', 'private'], ['169.254.169.254', 'metadata'], ['::ffff:169.254.169.254', 'metadata'],
  ['fd00::1', 'unique-local'], ['fe80::1', 'link-local'], ['100.64.0.1', 'shared'], ['0.0.0.0', 'unspecified'], ['64:ff9b::7f00:1', 'loopback']] as const) {
  test(`resolveEgress: an allowed name that resolves to ${address} (${cls}) is refused (DNS rebinding to an internal address)`, async () => {
    const r = await resolveEgress(grant, 'api.example.com', 443, {lookup: resolver({'api.example.com': [address]})});
    assert.ok(!r.allowed);
    assert.match(r.reason, new RegExp(`a ${cls} address that the grant does not name`));
    assert.match(r.reason, /egress grant allows only/);
  });
}

test('resolveEgress: one refused address among public ones refuses the destination', async () => {
  const r = await resolveEgress(grant, 'api.example.com', 443, {lookup: resolver({'api.example.com': ['93.184.215.14', '127.0.0.1']})});
  assert.ok(!r.allowed);
});

test('resolveEgress: a name that resolves to an address an IP entry names for that port is allowed; for another port it is not', async () => {
  const g = parseEgressGrant({allow: ['svc.test:8080', '127.0.0.1:8080']});
  const lookup = resolver({'svc.test': ['127.0.0.1']});
  const ok = await resolveEgress(g, 'svc.test', 8080, {lookup});
  assert.ok(ok.allowed && ok.address === '127.0.0.1' && ok.addressClass === 'loopback');
  const g2 = parseEgressGrant({allow: ['svc.test:8080', '127.0.0.1:9999']});
  assert.equal((await resolveEgress(g2, 'svc.test', 8080, {lookup})).allowed, false);
});

test('resolveEgress: an IP literal named by the grant needs no DNS, whatever its class', async () => {
  const lookup = resolver({});
  const r = await resolveEgress(grant, '127.0.0.1', 8080, {lookup});
  assert.ok(r.allowed && r.address === '127.0.0.1');
  const v6 = await resolveEgress(grant, '[::1]', 9000, {lookup});
  assert.ok(v6.allowed && v6.address === '::1' && v6.family === 6);
  assert.deepEqual(lookup.calls, []);
});

test('resolveEgress: an unlisted host is refused before any DNS query (no lookup leaks the name)', async () => {
  const lookup = resolver({'evil.test': ['93.184.215.14']});
  const r = await resolveEgress(grant, 'evil.test', 443, {lookup});
  assert.ok(!r.allowed);
  assert.deepEqual(lookup.calls, []);
});

test('resolveEgress: resolver failure, empty answer, garbage answer and a hanging resolver are refusals, not throws', async () => {
  assert.match((await resolveEgress(grant, 'api.example.com', 443, {lookup: resolver({})}) as {reason: string}).reason, /could not be resolved/);
  assert.match((await resolveEgress(grant, 'api.example.com', 443, {lookup: resolver({'api.example.com': []})}) as {reason: string}).reason, /no address/);
  assert.match((await resolveEgress(grant, 'api.example.com', 443, {lookup: resolver({'api.example.com': ['localhost']})}) as {reason: string}).reason, /not an address/);
  const hang: EgressLookup = () => new Promise(() => {});
  assert.match((await resolveEgress(grant, 'api.example.com', 443, {lookup: hang, timeoutMs: 50}) as {reason: string}).reason, /could not be resolved/);
});
