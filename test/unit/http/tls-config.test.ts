// The service config's `tls` section and the checks on its files: strict shape, relative paths,
// the refusal to bind anything but loopback without TLS (or the statement that a proxy ends it),
// and a private key that others can read, a key of another certificate or a non-file refused.
// A chain file written halfway (leaf + a cut intermediate) is refused, not half used.
// invariant: http:tls:files-strict-pem
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {chmodSync, chownSync, readFileSync, symlinkSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {ConfigError} from '../../../src/errors.ts';
import {readTlsFiles} from '../../../src/frontend/http/tls-files.ts';
import {assertMayListen, hashApiKey, loadServiceConfig, parseServiceConfig} from '../../../src/policy/service-config.ts';
import {tempDir} from '../../support/temp.ts';
import {testCa, type TestCa} from '../../support/test-ca.ts';

const parse = (config: unknown) => parseServiceConfig('config.json', JSON.stringify(config));
const withKey = (extra: Record<string, unknown> = {}) => parse({apiKeys: [{name: 'a', sha256: hashApiKey('k'.repeat(40))}], ...extra});
const configError = (pattern: RegExp) => (err: unknown) => err instanceof ConfigError && pattern.test(err.message);

let ca: TestCa;
let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  ca = testCa();
  dir = await tempDir('toolcell-tls-');
});
after(async () => {
  ca?.dispose();
  await dir?.dispose();
});

test('tls is either {cert, key} or {terminatedBy: "proxy"}; anything else is refused naming both forms', () => {
  assert.deepEqual(parse({tls: {cert: 'c.pem', key: 'k.pem'}}).tls, {cert: 'c.pem', key: 'k.pem'});
  assert.deepEqual(parse({tls: {terminatedBy: 'proxy'}}).tls, {terminatedBy: 'proxy'});
  const cases: Array<[unknown, RegExp]> = [
    [{cert: 'c.pem'}, /\/tls\/key is missing/],
    [{key: 'k.pem'}, /\/tls\/cert is missing/],
    [{terminatedBy: 'nginx'}, /\/tls\/terminatedBy is "nginx": expected "proxy"/],
    [{cert: 'c.pem', key: 'k.pem', ca: 'x'}, /\/tls\/ca is "x": unknown key/],
    [{cert: 'c.pem', key: 'k.pem', terminatedBy: 'proxy'}, /\/tls is .*"cert": PATH, "key": PATH.*"terminatedBy": "proxy"/],
    ['on', /\/tls is "on": .*"cert": PATH, "key": PATH.*"terminatedBy": "proxy"/],
    [true, /\/tls is true: .*"cert": PATH, "key": PATH.*"terminatedBy": "proxy"/],
  ];
  for (const [bad, pattern] of cases) assert.throws(() => parse({tls: bad}), configError(pattern), JSON.stringify(bad));
});

test('binding a non-loopback address needs authentication and then TLS; the refusal names both TLS options', () => {
  assert.throws(() => assertMayListen('0.0.0.0', parse({})), configError(/requires authentication/));
  assert.throws(() => assertMayListen('0.0.0.0', withKey()), configError(/refusing to listen on 0\.0\.0\.0: .*requires TLS.*"tls": \{"cert": PATH, "key": PATH\}.*"tls": \{"terminatedBy": "proxy"\}/));
  assert.throws(() => assertMayListen('10.1.2.3', withKey()), configError(/requires TLS/));
  assert.throws(() => assertMayListen('::', withKey()), configError(/requires TLS/));
  assertMayListen('0.0.0.0', withKey({tls: {terminatedBy: 'proxy'}}));
  assertMayListen('0.0.0.0', withKey({tls: {cert: '/c.pem', key: '/k.pem'}}));
  // Loopback needs neither: traffic does not leave the host.
  assertMayListen('127.0.0.1', parse({}));
  assertMayListen('::1', withKey());
});

test('relative tls paths are resolved against the config file, like oauth.jwksFile', async () => {
  const file = await dir.write('conf/service.json', {tls: {cert: 'certs/leaf.pem', key: '/abs/leaf.key'}});
  const config = await loadServiceConfig(file);
  assert.deepEqual(config.tls, {cert: join(dir.path, 'conf/certs/leaf.pem'), key: '/abs/leaf.key'});
  const proxy = await loadServiceConfig(await dir.write('conf/proxy.json', {tls: {terminatedBy: 'proxy'}}));
  assert.deepEqual(proxy.tls, {terminatedBy: 'proxy'});
});

function writePair(name: string, keyMode = 0o600): {cert: string; key: string; fingerprint256: string} {
  const leaf = ca.issue();
  const cert = join(dir.path, `${name}.pem`);
  const key = join(dir.path, `${name}.key`);
  writeFileSync(cert, leaf.cert);
  writeFileSync(key, leaf.key, {mode: keyMode});
  chmodSync(key, keyMode);
  return {cert, key, fingerprint256: leaf.fingerprint256};
}

test('a private key file others or its group can read (when it is ours), or anyone can change, is refused with a chmod hint', async () => {
  for (const mode of [0o644, 0o604, 0o640, 0o620, 0o610, 0o606, 0o660]) {
    const pair = writePair(`mode-${mode.toString(8)}`, mode);
    await assert.rejects(readTlsFiles(pair), configError(new RegExp(`tls\\.key: .*has mode 0${mode.toString(8)}.*chmod 600`)), mode.toString(8));
  }
  for (const mode of [0o600, 0o400]) {
    const pair = writePair(`ok-${mode.toString(8)}`, mode);
    assert.equal((await readTlsFiles(pair)).fingerprint256, pair.fingerprint256);
  }
});

test('a key reached through a symbolic link (a Kubernetes Secret volume) is checked on the file it opens', async () => {
  const pair = writePair('linked', 0o644);
  const link = join(dir.path, 'linked-via.key');
  symlinkSync(pair.key, link);
  await assert.rejects(readTlsFiles({cert: pair.cert, key: link}), configError(/has mode 0644/));
  chmodSync(pair.key, 0o600);
  assert.equal((await readTlsFiles({cert: pair.cert, key: link})).fingerprint256, pair.fingerprint256);
});

test('a key of another certificate, a missing file, a folder, or a key as the certificate are refused by name', async () => {
  const a = writePair('pair-a');
  const b = writePair('pair-b');
  await assert.rejects(readTlsFiles({cert: a.cert, key: b.key}), configError(/tls\.key: .*pair-b\.key is not the private key of the certificate in .*pair-a\.pem/));
  await assert.rejects(readTlsFiles({cert: a.cert, key: join(dir.path, 'missing.key')}), configError(/tls\.key: cannot open .*missing\.key \(ENOENT\)/));
  await assert.rejects(readTlsFiles({cert: dir.path, key: a.key}), configError(/tls\.cert: .* is not a regular file/));
  const fifo = join(dir.path, 'fifo.key');
  execFileSync('mkfifo', ['-m', '600', fifo]);
  await assert.rejects(readTlsFiles({cert: a.cert, key: fifo}), configError(/tls\.key: .*fifo\.key is not a regular file/), 'a FIFO is refused, not waited on');
  await assert.rejects(readTlsFiles({cert: a.key, key: a.key}), configError(/tls\.cert: .*does not start with a PEM certificate/));
  const certAsKey = join(dir.path, 'cert-as-key.pem');
  writeFileSync(certAsKey, readFileSync(a.cert), {mode: 0o600});
  await assert.rejects(readTlsFiles({cert: a.cert, key: certAsKey}), configError(/tls\.key: .*is not a PEM private key/));
});

test('the key never appears in an error message', async () => {
  const a = writePair('secret-a', 0o644);
  const keyText = readFileSync(a.key, 'utf8');
  const body = keyText.split('\n')[1]!;
  await readTlsFiles(a).then(() => assert.fail('accepted'), (err: Error) => assert.ok(!err.message.includes(body) && !String(err.cause ?? '').includes(body)));
});

test('a private key owned by another user is refused, whatever its mode', {skip: process.geteuid?.() !== 0 && 'needs root to chown'}, async () => {
  const pair = writePair('foreign', 0o600);
  chownSync(pair.key, 4242, 4242);
  await assert.rejects(readTlsFiles(pair), configError(/tls\.key: .*foreign\.key is owned by uid 4242; a private key must belong to this user/));
});

test('a chain file written halfway (leaf + part of the next block, cut anywhere) or with text outside its blocks is refused; the complete chain is accepted', async () => {
  const a = writePair('chain-a');
  const leaf = readFileSync(a.cert, 'latin1');
  const chain = leaf + ca.root;
  const chainFile = join(dir.path, 'chain-full.pem');
  writeFileSync(chainFile, chain);
  assert.equal((await readTlsFiles({cert: chainFile, key: a.key})).fingerprint256, a.fingerprint256, 'the complete chain is accepted');
  // Cut the intermediate at every point of interest: in its BEGIN line, in its base64, just before and in its END line.
  const second = chain.indexOf('-----BEGIN', leaf.length - 1);
  const endOfSecond = chain.lastIndexOf('-----END');
  const cuts = [second + 3, second + 16, second + 40, second + 100, endOfSecond, endOfSecond + 1, endOfSecond + 20];
  for (const cut of cuts) {
    const half = join(dir.path, `chain-half-${cut}.pem`);
    writeFileSync(half, chain.slice(0, cut));
    await assert.rejects(readTlsFiles({cert: half, key: a.key}), configError(/tls\.cert: .*chain-half-\d+\.pem: line \d+ does not start a complete PEM block/), `cut at ${cut}`);
  }
  // A complete-looking block whose base64 was cut at a line end is not a certificate.
  const lines = ca.root.trimEnd().split('\n');
  const shortened = join(dir.path, 'chain-short.pem');
  writeFileSync(shortened, leaf + [...lines.slice(0, 3), lines.at(-1)].join('\n') + '\n');
  await assert.rejects(readTlsFiles({cert: shortened, key: a.key}), configError(/tls\.cert: .*certificate 2 of 2 is not a valid X\.509 certificate|base64 is incomplete/));
  // Text outside the blocks, a foreign block, non-ASCII bytes.
  for (const [name, text] of [['text', `subject=CN localhost\n${chain}`], ['foreign', leaf + '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'], ['bytes', `${chain}\u00ff`]] as const) {
    const f = join(dir.path, `chain-${name}.pem`);
    writeFileSync(f, text, 'latin1');
    await assert.rejects(readTlsFiles({cert: f, key: a.key}), configError(/tls\.cert: /), name);
  }
  // A key file written halfway after a complete key.
  const keyHalf = join(dir.path, 'key-half.key');
  writeFileSync(keyHalf, readFileSync(a.key, 'latin1') + '-----BEGIN PRIV', {mode: 0o600});
  await assert.rejects(readTlsFiles({cert: a.cert, key: keyHalf}), configError(/tls\.key: .*does not start a complete PEM block/));
});
