// The real `@modelcontextprotocol/server-memory` from npm (a knowledge graph kept in a file), added with `toolcell add`:
// with lifetime "call" an entity created in one call is gone in the next; with lifetime "principal" (set by the operator) it is kept for one principal over HTTP and invisible to another.
// invariant: server:call:fresh-process
// invariant: server:lifetime:principal-isolated
import assert from 'node:assert/strict';
import {writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {hashApiKey} from '../../src/policy/service-config.ts';
import {connectHttp, KEYS, spawnCli, type SpawnedServer} from './http/support.ts';
import {connectStdio, errorCode, textOf} from '../support/mcp-stdio.ts';
import {addNpmServer, ADD_TIMEOUT_MS, editServer, realServerSkip, type RealServer} from '../support/real-server.ts';

const SPEC = '@modelcontextprotocol/server-memory@2026.8.31';
const skip = await realServerSkip(SPEC);
const CALL_MS = 90_000;

/** `promise`, or 'timeout' after `ms` (the timer is cleared either way: it must not keep the test process alive). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it holds or `ms` passed (then fails naming `what`). */
async function until(check: () => Promise<boolean> | boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > end) assert.fail(`${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

type Graph = {entities: Array<{name: string; observations: string[]}>; relations: unknown[]};
const graphOf = (r: unknown): Graph => (r as {structuredContent?: Graph}).structuredContent ?? JSON.parse(textOf(r)) as Graph;
const entity = (name: string) => ({entities: [{name, entityType: 'person', observations: [`${name} was here`]}]});

describe('real server-memory: lifetime "call" and "principal"', {skip}, () => {
  const name = `m${process.pid}-memory`;
  const tool = (t: string) => `${name}__${t}`;
  let server: RealServer | undefined;

  before(async () => {
    server = await addNpmServer({spec: SPEC, name});
    // server-memory keeps its graph in a file beside its code (MEMORY_FILE_PATH unset), which the sandbox's
    // read-only root refuses (EROFS). A hosted server has no env setting (ServerSection), so the operator
    // points the file at the sandbox's /tmp tmpfs in the server's command, a plain edit of toolcell.json:
    // the pins (tool definitions, image ID, profile) are untouched and still checked at every start.
    const [node, main] = server.manifest.server.command;
    assert.equal(node, 'node');
    editServer(server, {command: ['node', '-e', `process.env.MEMORY_FILE_PATH = '/tmp/memory.jsonl'; import(${JSON.stringify(main)});`]});
  }, {timeout: ADD_TIMEOUT_MS + 60_000});
  after(async () => {
    await server?.dispose();
  });

  test('lifetime "call" (as added): an entity created in one call is gone in the next', {timeout: 6 * CALL_MS}, async () => {
    assert.equal(server!.manifest.server.lifetime, 'call');
    assert.deepEqual(await server!.containers(), []);
    const session = await connectStdio(['--tools', server!.toolsDir, '--profiles', server!.profilesDir, '--no-bundled-tools', '--audit-log', 'off']);
    try {
      const created = await session.client.callTool({name: tool('create_entities'), arguments: entity('Ada')}, {timeout: CALL_MS});
      assert.equal(created.isError ?? false, false, `the server could write its graph: ${JSON.stringify(created).slice(0, 1000)}`);
      assert.equal(errorCode(created), undefined);
      const read = await session.client.callTool({name: tool('read_graph'), arguments: {}}, {timeout: CALL_MS});
      assert.equal(read.isError ?? false, false, JSON.stringify(read));
      assert.deepEqual(graphOf(read).entities, [], 'a fresh server in a fresh sandbox: nothing of the last call');
      const found = await session.client.callTool({name: tool('search_nodes'), arguments: {query: 'Ada'}}, {timeout: CALL_MS});
      assert.deepEqual(graphOf(found).entities, []);
      await until(async () => (await server!.containers()).length === 0, 30_000, 'a container of this test is left');
    } finally {
      await session.close();
    }
  });

  describe('lifetime "principal" over HTTP, two API keys', () => {
    let service: SpawnedServer | undefined;
    before(async () => {
      editServer(server!, {lifetime: 'principal'});
      const config = join(server!.toolsDir, '..', 'service.json');
      writeFileSync(config, JSON.stringify({
        apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
        grants: [{principal: 'key:alice', packages: [name]}, {principal: 'key:bob', packages: [name]}],
      }));
      service = await spawnCli(['--http', '127.0.0.1:0', '--config', config, '--tools', server!.toolsDir, '--profiles', server!.profilesDir,
        '--no-bundled-tools', '--audit-log', 'off']);
    });
    after(async () => {
      if (service && service.child.exitCode === null && service.child.signalCode === null) {
        service.child.kill('SIGTERM');
        const done = await within(service.exited, 60_000);
        if (done === 'timeout') service.child.kill('SIGKILL');
      }
    });

    test('kept across calls for one principal, invisible to the other; removed at shutdown', {timeout: 12 * CALL_MS}, async () => {
      const alice = await connectHttp(service!.url, {token: KEYS.alice});
      const bob = await connectHttp(service!.url, {token: KEYS.bob});
      try {
        const call = async (who: typeof alice, t: string, args: Record<string, unknown>) => {
          const r = await who.client.callTool({name: tool(t), arguments: args}, {timeout: CALL_MS});
          assert.equal(errorCode(r), undefined, `${t}: the pins still hold after the operator's edits: ${JSON.stringify(r).slice(0, 1000)}\n${service!.stderr().slice(-2000)}`);
          assert.equal(r.isError ?? false, false, JSON.stringify(r).slice(0, 1000));
          return r;
        };
        await call(alice, 'create_entities', entity('Ada'));
        assert.deepEqual(graphOf(await call(alice, 'read_graph', {})).entities.map((e) => e.name), ['Ada'], 'kept across alice\'s calls');
        assert.deepEqual(graphOf(await call(bob, 'read_graph', {})).entities, [], 'bob never sees alice\'s graph');
        assert.deepEqual(graphOf(await call(bob, 'search_nodes', {query: 'Ada'})).entities, []);
        await call(bob, 'create_entities', entity('Bea'));
        assert.deepEqual(graphOf(await call(alice, 'read_graph', {})).entities.map((e) => e.name), ['Ada'], 'alice never sees bob\'s');
        assert.deepEqual(graphOf(await call(bob, 'read_graph', {})).entities.map((e) => e.name), ['Bea']);
        assert.equal((await server!.containers()).length, 2, 'one sandbox per principal');
      } finally {
        await alice.close();
        await bob.close();
      }
      service!.child.kill('SIGTERM');
      const exited = await within(service!.exited, 60_000);
      assert.notEqual(exited, 'timeout', 'serve stops on SIGTERM');
      await until(async () => (await server!.containers()).length === 0, 30_000, 'a kept sandbox outlived the service');
    });
  });
});
