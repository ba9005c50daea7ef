// A container tool with an egress grant, called through `toolcell serve` by a real MCP client: the
// granted loopback test server answers, a limit makes the call DENIED (rule egress), and each
// decision is an audit event. Only servers this test starts on 127.0.0.1 are contacted.
// invariant: egress:audit:every-decision
import assert from 'node:assert/strict';
import {once} from 'node:events';
import {readFile} from 'node:fs/promises';
import {createServer, type Server} from 'node:http';
import type {AddressInfo} from 'node:net';
import {after, before, describe, test} from 'node:test';
import {dockerAvailable} from '../support/docker.ts';
import {connectStdio, errorCode, textOf} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

const ready = await dockerAvailable({images: ['toolcell/python']}) && process.getuid?.() === 0;

describe('egress through toolcell serve', {skip: !ready && 'no Docker engine, no toolcell/python, or not root'}, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: Awaited<ReturnType<typeof connectStdio>>;
  let upstream: Server;
  let port = 0;
  let hits = 0;

  before(async () => {
    upstream = createServer((req, res) => { hits++; res.end(`upstream saw ${req.url}`); }).listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    port = (upstream.address() as AddressInfo).port;
    dir = await tempDir();
    const limits = {timeoutMs: 20_000, memoryMb: 96, cpus: 0.5, pids: 32, outputBytes: 65_536};
    await dir.write('profiles/net-test.json', {name: 'net-test', backend: 'container', limits, commands: ['python3'],
      filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '8m'}}, network: {egress: {allow: [`127.0.0.1:${port}`], maxRequests: 3}}});
    await dir.write('tools/net/toolcell.json', {name: 'net', version: '1.0.0', description: 'egress test', tools: [{
      name: 'get', description: 'GET n URLs of the test upstream.', profile: 'net-test',
      inputSchema: {type: 'object', properties: {n: {type: 'string'}, host: {type: 'string'}}, required: ['n', 'host'], additionalProperties: false},
      container: {image: 'toolcell/python', command: ['python3', '-c',
        'import sys, urllib.request\nfor i in range(int(sys.argv[1])):\n    print(urllib.request.urlopen("http://%s/%d" % (sys.argv[2], i), timeout=10).read().decode())',
        '{{n}}', '{{host}}']},
    }]});
    server = await connectStdio(['--no-bundled-tools', '--tools', `${dir.path}/tools`, '--profiles', `${dir.path}/profiles`, '--audit-log', `${dir.path}/audit.jsonl`]);
  });
  after(async () => {
    await server?.close();
    upstream?.close();
    await dir?.dispose();
  });

  test('the granted upstream answers; an ungranted address is refused naming the grant; the limit makes the call DENIED with rule egress', async () => {
    const okResult = await server.client.callTool({name: 'net__get', arguments: {n: '2', host: `127.0.0.1:${port}`}});
    assert.equal(okResult.isError, undefined, textOf(okResult));
    assert.equal(textOf(okResult).trim(), 'upstream saw /0\nupstream saw /1');
    const refused = await server.client.callTool({name: 'net__get', arguments: {n: '1', host: `127.0.0.2:${port}`}});
    assert.equal(refused.isError, true);
    assert.match(textOf(refused), /HTTP Error 403/);
    const before = hits;
    const limited = await server.client.callTool({name: 'net__get', arguments: {n: '5', host: `127.0.0.1:${port}`}});
    assert.equal(limited.isError, true);
    assert.equal(errorCode(limited), 'DENIED');
    assert.equal((limited._meta?.['toolcell/error'] as {rule?: string}).rule, 'egress');
    assert.match(textOf(limited), /maxRequests = 3 requests per call/);
    assert.equal(hits - before, 3, 'exactly maxRequests requests reached the upstream');
    const events = (await readFile(`${dir.path}/audit.jsonl`, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const egress = events.filter((e) => String(e.type).startsWith('egress.'));
    assert.ok(egress.filter((e) => e.type === 'egress.allowed').length >= 5);
    assert.ok(egress.some((e) => e.type === 'egress.denied' && e.host === '127.0.0.2' && e.rule === 'allowlist'));
    assert.ok(egress.some((e) => e.type === 'egress.denied' && e.rule === 'maxRequests'));
    assert.ok(egress.every((e) => e.tool === 'net__get' && e.principal === 'local' && typeof e.jobId === 'string'));
  });
});
