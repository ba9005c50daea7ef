// The real CLI: `serve --http` with audit.signingKey signs every audit line, restarts continue the file's chain, `audit verify --public-key` finds it intact; a key open to others stops serve.
// invariant: audit:chain:tamper-evident
// invariant: audit:signing-key:private
import assert from 'node:assert/strict';
import {generateKeyPairSync} from 'node:crypto';
import {readFile, writeFile} from 'node:fs/promises';
import {test} from 'node:test';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {runCli} from '../../support/mcp-stdio.ts';
import {connectHttp, KEYS, spawnCli, useFixtures} from './support.ts';

const fixtures = useFixtures();

/** Stops a spawned server by its PID and waits (20 s at most) for it to exit. */
async function stop(server: Awaited<ReturnType<typeof spawnCli>>): Promise<void> {
  server.child.kill('SIGTERM');
  const exit = await Promise.race([server.exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 20_000))]);
  if (exit === 'late') {
    server.child.kill('SIGKILL');
    await server.exited;
  }
}

test('serve --http signs its audit chain; two runs append one chain; verify with the public key: intact, and a changed line is found', {timeout: 120_000}, async () => {
  const {privateKey, publicKey} = generateKeyPairSync('ed25519');
  const keyFile = `${fixtures.dir}/audit-ed25519.pem`;
  await writeFile(keyFile, privateKey.export({type: 'pkcs8', format: 'pem'}), {mode: 0o600});
  const pubFile = `${fixtures.dir}/audit.pub`;
  await writeFile(pubFile, publicKey.export({type: 'spki', format: 'pem'}));
  const config = `${fixtures.dir}/signed.json`;
  await writeFile(config, JSON.stringify({
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}],
    grants: [{principal: 'key:alice', packages: '*'}],
    audit: {signingKey: 'audit-ed25519.pem'},
  }));
  const auditFile = `${fixtures.dir}/signed-audit.jsonl`;
  for (let run = 0; run < 2; run++) {
    const server = await spawnCli(['--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--no-bundled-tools', '--profiles', fixtures.profileDir,
      '--no-containers', '--config', config, '--audit-log', auditFile]);
    try {
      const {client, close} = await connectHttp(server.url, {token: KEYS.alice, era: 'modern'});
      try {
        assert.deepEqual((await client.callTool({name: 'fixture__double', arguments: {x: run}})).content, [{type: 'text', text: String(2 * run)}]);
        await client.callTool({name: 'fixture__nothing', arguments: {}}).catch(() => {});
      } finally {
        await close();
      }
    } finally {
      await stop(server);
    }
  }
  const lines = (await readFile(auditFile, 'utf8')).split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 4, 'a completed and a denied event per run');
  assert.deepEqual(lines.map((l) => (JSON.parse(l) as {seq: number}).seq), [1, 2, 3, 4], 'the second run continued the chain');
  const intact = await runCli(['audit', 'verify', auditFile, '--public-key', pubFile]);
  assert.equal(intact.code, 0, intact.stdout + intact.stderr);
  assert.match(intact.stdout, /^intact: 4 events$/m);
  assert.match(intact.stdout, /signatures: all 4 verified/);
  // The last line changed (no successor names its hash): only the signature can tell.
  const altered = `${fixtures.dir}/altered.jsonl`;
  await writeFile(altered, [...lines.slice(0, 3), lines[3]!.replace('"principal":"key:alice"', '"principal":"key:bob"')].join('\n') + '\n');
  const broken = await runCli(['audit', 'verify', altered, '--public-key', pubFile]);
  assert.equal(broken.code, 1);
  assert.match(broken.stdout, /^broken: line 4: forged or altered/m);
});

test('serve --http refuses a signing key that group or others may read, naming the file mode (exit 2)', {timeout: 60_000}, async () => {
  const keyFile = `${fixtures.dir}/open.pem`;
  await writeFile(keyFile, generateKeyPairSync('ed25519').privateKey.export({type: 'pkcs8', format: 'pem'}), {mode: 0o644});
  const config = `${fixtures.dir}/open.json`;
  await writeFile(config, JSON.stringify({audit: {signingKey: keyFile}}));
  const server = await spawnCli(['--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--no-bundled-tools', '--profiles', fixtures.profileDir,
    '--no-containers', '--config', config, '--audit-log', 'off'], {expectUrl: false});
  try {
    const exit = await Promise.race([server.exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 20_000))]);
    assert.deepEqual(exit, {code: 2, signal: null}, server.stderr());
    assert.match(server.stderr(), /audit\.signingKey.*mode 0644/);
    assert.equal(server.url, '', 'it never served');
  } finally {
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
});
