/**
 * Over HTTP, one principal's hostile call must never fail another principal's call: on
 * the real runtime (one isolate worker, dispatch defaults), mallory's tool grows a Map
 * until V8 aborts its isolate and the worker dies, while bob has ten calls in flight in
 * that worker. Bob's calls all succeed; mallory's ends with a code of its own.
 */
// invariant: isolate:crash:neighbours-unharmed
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {connectHttp, errorCode, KEYS, realRuntime, startService} from '../../e2e/http/support.ts';
import {tempDir} from '../../support/temp.ts';

let tmp: Awaited<ReturnType<typeof tempDir>>;
let service: HttpService;
/** Bob's calls sleep until this long after they are sent: surely still in flight when mallory's call ends the worker. */
const INNOCENT_SLEEP_MS = 6000;

before(async () => {
  tmp = await tempDir('toolcell-neighbour-http-');
  // Generous deadlines: CI is slow, and bob's calls each run twice (the second time alone).
  await tmp.write('profiles/neighbour.json', {name: 'neighbour', backend: 'isolate', limits: {timeoutMs: 30_000, memoryMb: 32, outputBytes: 65536}});
  const object = (properties: Record<string, unknown>, required: string[]) => ({type: 'object', properties, required, additionalProperties: false});
  await tmp.write('tools/hostile/toolcell.json', {
    name: 'hostile', version: '1.0.0',
    tools: [{name: 'grow', description: 'Grows a Map without end.', inputSchema: object({}, []), profile: 'neighbour', isolate: {entry: 'grow.js'}}],
  });
  await tmp.write('tools/hostile/grow.js', 'export default () => { const keep = new Map(); for (let i = 0; ; i++) keep.set(i, {i, text: String(i)}); };\n');
  await tmp.write('tools/work/toolcell.json', {
    name: 'work', version: '1.0.0',
    tools: [{name: 'wait', description: 'Sleeps until a time, then returns n.', inputSchema: object({n: {type: 'number'}, until: {type: 'number'}}, ['n', 'until']),
      profile: 'neighbour', isolate: {entry: 'wait.js'}}],
  });
  await tmp.write('tools/work/wait.js', 'export default (a) => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, a.until - Date.now())); return {n: a.n}; };\n');
  const {runtime} = await realRuntime({toolDir: `${tmp.path}/tools`, profileDir: `${tmp.path}/profiles`, dir: tmp.path});
  service = await startService(runtime, {
    apiKeys: [{name: 'mallory', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
    grants: [{principal: 'key:mallory', packages: ['hostile']}, {principal: 'key:bob', packages: ['work']}],
  });
});

after(async () => {
  await service?.shutdown({drainMs: 0});
  await tmp?.dispose();
});

test('mallory\'s crashing call fails none of bob\'s ten calls in flight in the same worker', async () => {
  const mallory = await connectHttp(service.url, {token: KEYS.alice});
  const bob = await connectHttp(service.url, {token: KEYS.bob});
  try {
    const hostile = mallory.client.callTool({name: 'hostile__grow', arguments: {}});
    const until = Date.now() + INNOCENT_SLEEP_MS;
    const calls = await Promise.all(Array.from({length: 10}, (_, n) => bob.client.callTool({name: 'work__wait', arguments: {n, until}})));
    calls.forEach((result, n) => {
      assert.notEqual(result.isError, true, `bob's call ${n} failed: ${JSON.stringify(result)}`);
      assert.deepEqual(result.structuredContent, {n});
    });
    const stopped = await hostile;
    assert.equal(stopped.isError, true, JSON.stringify(stopped));
    assert.ok(['MEMORY_LIMIT', 'TIMEOUT', 'TOOL_FAILED'].includes(errorCode(stopped) ?? ''), `mallory's call got ${errorCode(stopped)}`);
    const again = await bob.client.callTool({name: 'work__wait', arguments: {n: 11, until: 0}});
    assert.deepEqual(again.structuredContent, {n: 11}, 'the service still answers');
  } finally {
    await mallory.close();
    await bob.close();
  }
});
