import assert from 'node:assert/strict';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {BUNDLED_PROFILES} from '../../src/paths.ts';
import {CLI, runCli} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

/** The CLI as a user meets it: `node dist/cli.js …`, exit codes and one-line explanations. */
const run = (args: string[], env: Record<string, string> = {}) => runCli(args, {env});

let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir();
  await dir.write('tools/ok/toolcell.json', {name: 'ok', version: '1.0.0', tools: [{name: 'add', description: 'a + b', profile: 'isolate-strict',
    inputSchema: {type: 'object', properties: {a: {type: 'number'}, b: {type: 'number'}}, required: ['a', 'b'], additionalProperties: false},
    isolate: {entry: 'add.js'}}]});
  await dir.write('tools/ok/add.js', 'export default ({a, b}) => ({sum: a + b})');
  await dir.write('tools/escape/toolcell.json', {name: 'escape', version: '1.0.0', tools: [{name: 'x', description: 'x', profile: 'isolate-strict',
    inputSchema: {type: 'object'}, isolate: {entry: '../ok/add.js'}}]});
  await dir.write('tools/ghost/toolcell.json', {name: 'ghost', version: '1.0.0', tools: [{name: 'x', description: 'x', profile: 'root-everything',
    inputSchema: {type: 'object'}, isolate: {entry: 'x.js'}}]});
  await dir.write('bad-profiles/loose.json', {name: 'loose', backend: 'isolate', limits: {timeoutMs: 1000, memoryMb: 16, outputBytes: 10, network: 'host'}});
});
after(() => dir.dispose());

const tools = () => ['--tools', join(dir.path, 'tools'), '--no-containers'];

test('list shows loaded tools with profile and grants, and each rejected package in one line with its reason; a rejection exits 1', async () => {
  const {code, stdout} = await run(['list', ...tools()]);
  assert.equal(code, 1);
  assert.match(stdout, /ok__add\s+\[isolate, profile isolate-strict\] memory 32 MB, timeout 2000 ms/);
  assert.match(stdout, /^ {2}escape: tool "x": entry "\.\.\/ok\/add\.js" escapes the package directory$/m);
  assert.match(stdout, /^ {2}ghost: tool "x": names unknown profile "root-everything"; known profiles: .*isolate-strict/m);
});

test('call prints the result JSON and exits 0; a tool error exits 1; an unknown tool or bad --args exits 2', async () => {
  const ok = await run(['call', 'ok__add', '--args', '{"a": 2, "b": 40}', ...tools()]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout).structuredContent, {sum: 42});
  const invalid = await run(['call', 'ok__add', '--args', '{"a": "2"}', ...tools()]);
  assert.equal(invalid.code, 1);
  assert.equal(JSON.parse(invalid.stdout)._meta['toolcell/error'].code, 'INVALID_ARGUMENTS');
  const unknown = await run(['call', 'nope__x', ...tools()]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown tool "nope__x"; available: .*ok__add/);
  const badJson = await run(['call', 'ok__add', '--args', '{a:', ...tools()]);
  assert.equal(badJson.code, 2);
  assert.match(badJson.stderr, /--args is not valid JSON/);
});

test('an invalid profile stops serve with exit 2 and a message naming the file and the field', async () => {
  const {code, stderr} = await run(['serve', '--profiles', BUNDLED_PROFILES, '--profiles', join(dir.path, 'bad-profiles'), ...tools()]);
  assert.equal(code, 2);
  assert.match(stderr, /bad-profiles\/loose\.json: invalid profile: \/limits\/network is "host": unknown key/);
  assert.equal(stderr.trim().split('\n').filter((l) => l.includes('loose.json')).length, 1, 'one line');
});

test('usage errors name the problem and exit 2', async () => {
  const unknownCommand = await run(['frobnicate']);
  assert.equal(unknownCommand.code, 2);
  assert.match(unknownCommand.stderr, /unknown command 'frobnicate'/);
  const conflict = await run(['serve', '--stdio', '--http', '127.0.0.1:0']);
  assert.equal(conflict.code, 2);
  assert.match(conflict.stderr, /cannot be used with/);
  const badPool = await run(['serve', '--isolate-pool', '-3']);
  assert.equal(badPool.code, 2);
});

test('without a Docker engine, serve-time loading leaves container tools out with one line saying why; isolate tools still serve', async () => {
  const {code, stdout, stderr} = await run(['list'], {DOCKER_HOST: `unix://${join(dir.path, 'no-docker.sock')}`});
  assert.equal(code, 0);
  assert.match(stdout, /text__word_count/);
  assert.match(stdout, /python__run .*\(unavailable: the Docker engine at unix:\/\/.*no-docker\.sock is not reachable/);
  // list says it once, in its report; serve says it in one log line (test/e2e/log-output.test.ts).
  assert.doesNotMatch(stderr, /left out/);
});

test('doctor without a Docker engine says so and fails closed (container profiles cannot be honoured)', async () => {
  const {code, stdout} = await run(['doctor'], {DOCKER_HOST: `unix://${join(dir.path, 'no-docker.sock')}`});
  assert.equal(code, 1);
  assert.match(stdout, /^ok\s+node\s+v24\./m);
  assert.match(stdout, /^ok\s+isolated-vm\s+a fresh isolate ran in a worker process/m);
  assert.match(stdout, /^FAIL\s+docker\s+engine not reachable/m);
  assert.match(stdout, /^FAIL\s+profile python-offline\s+CANNOT be honoured: needs a Docker engine/m);
  assert.match(stdout, /^ok\s+profile isolate-strict\s+can be honoured/m);
});
