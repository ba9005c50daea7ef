import assert from 'node:assert/strict';
import {chmod, symlink} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {ConfigError} from '../../../src/errors.ts';
import {hostMatches, isSecretRefusal, parseHostEntry, SecretStore} from '../../../src/egress/secrets.ts';
import {tempDir} from '../../support/temp.ts';

const VALUE = 'ghp_realvalue_0123456789abcdef';
const ENV = {TOOLCELL_SECRET_GH: VALUE, TOOLCELL_SECRET_OTHER: 'other-secret-value-xyz'};
const DECLARATIONS = {
  GH: {env: 'TOOLCELL_SECRET_GH', hosts: ['api.github.com', '127.0.0.1:8443'], header: 'Authorization', format: 'Bearer {}'},
  OTHER: {env: 'TOOLCELL_SECRET_OTHER', hosts: ['*.example.org'], header: 'X-Api-Key'},
};

let dir: Awaited<ReturnType<typeof tempDir>>;
const writeSecrets = async (content: unknown, name = 'secrets.json') => {
  const file = await dir.write(name, content as object);
  await chmod(file, 0o600);
  return file;
};
before(async () => {
  dir = await tempDir();
});
after(() => dir.dispose());

const store = async () => SecretStore.load(await writeSecrets(DECLARATIONS), ENV);

test.describe('host entries use the allow-entry syntax', () => {
  for (const [entry, host, port, expected] of [
    ['api.github.com', 'api.github.com', 443, true],
    ['api.github.com', 'API.GitHub.com.', 443, true],
    ['api.github.com', 'api.github.com', 8443, false],
    ['api.github.com', 'evil-api.github.com', 443, false],
    ['*.example.org', 'a.example.org', 443, true],
    ['*.example.org', 'a.b.example.org', 443, true],
    ['*.example.org', 'example.org', 443, false],
    ['*.example.org', 'evilexample.org', 443, false],
    ['127.0.0.1:8443', '127.0.0.1', 8443, true],
    ['127.0.0.1:8443', '127.0.0.2', 8443, false],
    ['[::1]:8443', '::1', 8443, true],
  ] as const) {
    test(`${entry} ${expected ? 'matches' : 'does not match'} ${host}:${port}`, () => {
      assert.equal(hostMatches(parseHostEntry(entry), host, port), expected);
    });
  }
  for (const bad of ['http://api.github.com', 'api.github.com/x', '*.*.org', 'a.*.org', 'localhostx', '*.1.2.3.4', 'x.org:70000', '']) {
    test(`"${bad}" is refused`, () => assert.throws(() => parseHostEntry(bad)));
  }
});

test.describe('the secrets file is strict', () => {
  for (const [title, content, pattern] of [
    ['an unknown key', {GH: {...DECLARATIONS.GH, value: 'inline'}}, /value.*unknown key/],
    ['a lower-case secret name', {gh: DECLARATIONS.GH}, /upper case/],
    ['a format without {}', {GH: {...DECLARATIONS.GH, format: 'Bearer'}}, /exactly once/],
    ['a format with {} twice', {GH: {...DECLARATIONS.GH, format: '{} {}'}}, /exactly once/],
    ['a framing header', {GH: {...DECLARATIONS.GH, header: 'Host'}}, /framing or routing/],
    ['a header that is no token', {GH: {...DECLARATIONS.GH, header: 'Auth orization'}}, /header name/],
    ['a URL as host', {GH: {...DECLARATIONS.GH, hosts: ['https://api.github.com']}}, /not a host entry/],
    ['no hosts', {GH: {...DECLARATIONS.GH, hosts: []}}, /hosts/],
    ['an env name with a space', {GH: {...DECLARATIONS.GH, env: 'A B'}}, /environment variable name/],
  ] as const) {
    test(`${title} is a load error naming it`, async () => {
      const file = await writeSecrets(content, `bad-${title.replace(/\W/g, '')}.json`);
      await assert.rejects(SecretStore.load(file, ENV), (err: Error) => err instanceof ConfigError && pattern.test(err.message) && err.message.includes(file));
    });
  }
  test('a missing environment variable is a start-up error naming it', async () => {
    await assert.rejects(SecretStore.load(await writeSecrets(DECLARATIONS), {TOOLCELL_SECRET_GH: VALUE}), /TOOLCELL_SECRET_OTHER is not set/);
  });
  test('a value with a newline (header injection) or shorter than 8 characters is refused, without showing it', async () => {
    const file = await writeSecrets(DECLARATIONS);
    await assert.rejects(SecretStore.load(file, {...ENV, TOOLCELL_SECRET_GH: 'abc\r\nX-Evil: 1'}), (err: Error) => /CR, LF or NUL/.test(err.message) && !err.message.includes('X-Evil'));
    await assert.rejects(SecretStore.load(file, {...ENV, TOOLCELL_SECRET_GH: 'short'}), (err: Error) => /shorter than 8/.test(err.message) && !err.message.includes('short\''));
  });
  test('a secrets file writable by others, or a symlink, is refused', async () => {
    const file = await writeSecrets(DECLARATIONS, 'open.json');
    await chmod(file, 0o666);
    await assert.rejects(SecretStore.load(file, ENV), /writable by group or others/);
    const link = join(dir.path, 'link.json');
    await symlink(await writeSecrets(DECLARATIONS, 'target.json'), link);
    await assert.rejects(SecretStore.load(link, ENV), /not a symlink/);
  });
  test('a profile that grants an undeclared secret is a load error naming it and the declared ones', async () => {
    const s = await store();
    assert.throws(() => s.checkGranted('gh-tools', ['GH', 'NOPE']), /profile "gh-tools".*"NOPE".*declared: GH, OTHER/);
    s.checkGranted('gh-tools', ['GH']);
  });
});

test.describe('placeholders', () => {
  test('are unguessable, per call, named for the secret, and never the value', async () => {
    const s = await store();
    const a = s.forCall(['GH']);
    const b = s.forCall(['GH']);
    assert.match(a.placeholders.GH!, /^toolcell-secret-GH-[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a.placeholders.GH, b.placeholders.GH);
    assert.equal(a.placeholders.OTHER, undefined, 'only granted secrets get a placeholder');
    assert.ok(!JSON.stringify(a.placeholders).includes(VALUE));
    assert.ok(!JSON.stringify(s.forCall(['GH', 'OTHER'])).includes(VALUE), 'serialising call secrets shows no value');
  });

  test('are replaced in the configured header of a request to the secret\'s host over TLS', async () => {
    const call = (await store()).forCall(['GH', 'OTHER']);
    const ph = call.placeholders.GH!;
    const exact = call.substitute({host: 'api.github.com', port: 443, tls: true, url: '/user', headers: {authorization: ph}});
    assert.equal(exact.authorization, `Bearer ${VALUE}`, 'the exact placeholder becomes the formatted header');
    const inside = call.substitute({host: 'api.github.com', port: 443, tls: true, url: '/user', headers: {authorization: `Bearer ${ph}`}});
    assert.equal(inside.authorization, `Bearer ${VALUE}`);
    const other = call.substitute({host: 'api.github.com', port: 443, tls: true, url: '/user', headers: {'x-echo': ph}});
    assert.equal(other['x-echo'], ph, 'a placeholder in another header of its own host is left as it is');
    const plain = call.substitute({host: 'api.github.com', port: 443, tls: true, url: '/user', headers: {authorization: 'Bearer own'}});
    assert.equal(plain.authorization, 'Bearer own', 'no placeholder, no secret');
  });

  // invariant: egress:secret:placeholder-only-to-its-hosts
  test('sent to any other host (header, URL, target name, body) or over plain HTTP, are refused with rule "secret" naming secret and host, never the value', async () => {
    const call = (await store()).forCall(['GH', 'OTHER']);
    const ph = call.placeholders.GH!;
    const attempts: Array<[string, () => unknown, string]> = [
      ['header to another host', () => call.substitute({host: 'evil.example.org', port: 443, tls: true, url: '/', headers: {authorization: `Bearer ${ph}`}}), 'header'],
      ['header to the right name on another port', () => call.substitute({host: 'api.github.com', port: 8443, tls: true, url: '/', headers: {authorization: ph}}), 'header'],
      ['header name', () => call.substitute({host: 'evil.example.org', port: 443, tls: true, url: '/', headers: {[`x-${ph}`]: '1'}}), 'header'],
      ['URL query', () => call.substitute({host: 'a.example.org', port: 443, tls: true, url: `/?k=${ph}`, headers: {}}), 'url'],
      ['CONNECT target', () => call.checkTarget(`${ph}.evil.example.org`, 443), 'target'],
      ['body split across chunks', () => {
        const carry = call.scanBody(`{"token":"${ph.slice(0, 30)}`, '', 'a.example.org', 443);
        call.scanBody(`${ph.slice(30)}"}`, carry, 'a.example.org', 443);
      }, 'body'],
      ['plain HTTP to its own host', () => call.substitute({host: 'api.github.com', port: 443, tls: false, url: '/', headers: {authorization: ph}}), 'plaintext'],
    ];
    for (const [title, attempt, where] of attempts) {
      assert.throws(attempt, (err: unknown) => {
        assert.ok(isSecretRefusal(err), title);
        assert.equal(err.data.secret, 'GH', title);
        assert.equal(err.data.where, where, title);
        assert.ok(!err.message.includes(VALUE) && !JSON.stringify(err.data).includes(VALUE), `${title}: no value in the refusal`);
        assert.ok(!JSON.stringify(err.data).includes(ph), `${title}: no placeholder in the refusal data`);
        return true;
      }, title);
    }
    // A placeholder of a secret that belongs to the host is fine in the body.
    call.scanBody(`{"k":"${call.placeholders.OTHER}"}`, '', 'a.example.org', 443);
  });

  test('end with the call: after close() nothing is substituted or recognised', async () => {
    const call = (await store()).forCall(['GH']);
    const ph = call.placeholders.GH!;
    call.close();
    assert.deepEqual(call.placeholders, {});
    const out = call.substitute({host: 'api.github.com', port: 443, tls: true, url: '/', headers: {authorization: ph}});
    assert.equal(out.authorization, ph);
  });
});

test('a secret named like a variable toolcell or the loader sets (proxy, CA, PATH, LD_*) is refused', async () => {
  for (const name of ['HTTPS_PROXY', 'SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS', 'LD_PRELOAD', 'PATH', 'TOOLCELL_X']) {
    const file = await writeSecrets({[name]: DECLARATIONS.GH}, `reserved-${name}.json`);
    await assert.rejects(SecretStore.load(file, ENV), new RegExp(`"${name}" is reserved`));
  }
});

test('a container call gets its placeholders as environment variables and the CA certificate (never the key) mounted read-only', async () => {
  const {EgressCa, CA_FILES} = await import('../../../src/egress/ca.ts');
  const {containerSecretSetup} = await import('../../../src/egress/container-trust.ts');
  const ca = await EgressCa.open(join(dir.path, 'ca'));
  const call = (await store()).forCall(['GH']);
  const setup = containerSecretSetup(ca, call);
  assert.equal(setup.env.GH, call.placeholders.GH);
  assert.equal(setup.env.SSL_CERT_FILE, '/etc/toolcell/egress/ca-bundle.crt');
  assert.equal(setup.env.NODE_EXTRA_CA_CERTS, '/etc/toolcell/egress/ca.crt');
  assert.ok(!JSON.stringify(setup).includes(VALUE));
  assert.ok(setup.mounts.every((m) => m.readOnly && !m.source.endsWith(CA_FILES.key)));
});
