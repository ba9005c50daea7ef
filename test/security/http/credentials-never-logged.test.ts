/**
 * Credentials never reach the logs (MCP authorization §Token Theft: "don't log tokens"): the
 * real CLI serves with debug logging and the audit stream on stderr while clients authenticate
 * with valid and invalid API keys and JWTs, in the header and in the query string. Not one
 * credential, nor the signature of one, may appear anywhere in the server's stderr.
 */
// invariant: http:credentials:never-logged
import assert from 'node:assert/strict';
import {writeFile} from 'node:fs/promises';
import {after, before, test} from 'node:test';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {connectHttp, jwtKit, KEYS, modernCall, post, spawnCli, writeFixtures} from '../../e2e/http/support.ts';

const RESOURCE = 'https://tools.toolcell.test/mcp';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let kit: Awaited<ReturnType<typeof jwtKit>>;
before(async () => {
  fixtures = await writeFixtures();
  kit = await jwtKit();
});
after(async () => {
  await kit.close();
  await fixtures.dispose();
});

test('no API key or access token (or its signature) is ever written to the log or audit stream', {timeout: 60_000}, async () => {
  const config = `${fixtures.dir}/service-auth.json`;
  await writeFile(config, JSON.stringify({
    resourceUrl: RESOURCE,
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}],
    oauth: {issuer: kit.issuer, jwksUri: kit.jwksUri, algorithms: ['ES256'], requiredScopes: ['tools']},
    grants: [{principal: 'key:alice', packages: '*'}, {principal: 'sub:carol', packages: '*'}],
  }));
  const server = await spawnCli(['--http', '127.0.0.1:0', '--config', config, '--tools', fixtures.toolDir, '--profiles', fixtures.profileDir,
    '--no-containers', '--audit-log', 'stderr'], {env: {TOOLCELL_LOG_LEVEL: 'debug'}});
  const now = Math.floor(Date.now() / 1000);
  const claims = {iss: kit.issuer, sub: 'carol', aud: RESOURCE, scope: 'tools', exp: now + 600};
  const valid = await kit.sign(claims);
  const secrets = [
    KEYS.alice, KEYS.revoked, valid,
    await kit.sign({...claims, exp: now - 60}),
    await kit.sign({...claims, aud: 'https://elsewhere.example/mcp'}),
    await kit.sign({...claims, scope: 'nothing'}),
    await kit.sign(claims, {key: 'stranger'}),
  ];
  try {
    for (const era of ['legacy', 'modern'] as const) {
      for (const token of [KEYS.alice, valid]) {
        const {client, close} = await connectHttp(server.url, {token, era});
        assert.deepEqual((await client.callTool({name: 'fixture__double', arguments: {x: 1}})).content, [{type: 'text', text: '2'}]);
        await close();
      }
    }
    const call = modernCall('fixture__double', {x: 1});
    for (const token of [KEYS.revoked, ...secrets.slice(3)]) {
      const refused = await post(server.url, call.body, {...call.headers, Authorization: `Bearer ${token}`});
      assert.ok(refused.status === 401 || refused.status === 403, `${refused.status} for secret #${secrets.indexOf(token)}: ${await refused.clone().text()}`);
      await refused.text();
    }
    const inQuery = await post(`${server.url}?access_token=${valid}`, call.body, call.headers);
    assert.equal(inQuery.status, 400);
    await inQuery.text();
    const basic = await post(server.url, call.body, {...call.headers, Authorization: `Basic ${Buffer.from(`alice:${KEYS.alice}`).toString('base64')}`});
    assert.equal(basic.status, 401);
    await basic.text();
  } finally {
    server.child.kill('SIGTERM');
    assert.equal((await server.exited).code, 0);
  }
  const log = server.stderr();
  assert.match(log, /"level":20/, 'debug logging was on');
  assert.match(log, /access token refused/, 'refusals were logged (without the token)');
  assert.match(log, /"type":"tool.call.completed"/, 'the audit stream was on');
  for (const secret of secrets) {
    assert.ok(!log.includes(secret), 'a credential appears in the log');
    const signature = secret.split('.')[2];
    if (signature) assert.ok(!log.includes(signature), 'a token signature appears in the log');
  }
  assert.ok(!log.includes(Buffer.from(`alice:${KEYS.alice}`).toString('base64')), 'Basic credentials appear in the log');
});
