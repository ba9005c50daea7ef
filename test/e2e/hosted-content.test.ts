/**
 * Resources, resource templates and prompts of a hosted MCP server through real MCP clients
 * (stdio and Streamable HTTP): listed from their pins, each read/get in a fresh server in a fresh
 * container (per-start nonce and hostname differ), a server whose prompt/resource drifted from its
 * pin refused with DENIED rule "pin" (other entries keep working), and an ungranted package's
 * prompts and resources unknown over HTTP. Skipped locally without Docker (one loud line); fails in CI.
 */
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {writeFile} from 'node:fs/promises';
import {hostname} from 'node:os';
import {after, before, describe, test} from 'node:test';
import {writeContentPackage} from '../fixtures/content-server/write-package.ts';
import {useContentServerImage} from '../support/content-server.ts';
import {dockerAvailable} from '../support/docker.ts';
import {connectStdio} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';
import {connectHttp, KEYS, spawnCli} from './http/support.ts';
import {hashApiKey} from '../../src/policy/service-config.ts';

const ready = await dockerAvailable({images: ['toolcell/node']});

/** Containers on this host whose owner label names the toolcell server with PID `pid`. */
function containersOfServer(pid: number): string[] {
  const out = execFileSync('docker', ['ps', '-a', '--filter', 'label=toolcell.managed=true', '--format', '{{.Label "toolcell.owner"}} {{.ID}}'], {encoding: 'utf8'}).trim();
  const prefix = `${hostname()}/${pid}/`;
  return out === '' ? [] : out.split('\n').filter((line) => line.startsWith(prefix));
}

async function noContainersLeft(pid: number | undefined): Promise<void> {
  for (let i = 0; i < 100 && pid !== undefined && containersOfServer(pid).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  if (pid !== undefined) assert.deepEqual(containersOfServer(pid), [], 'no container of this server is left after it stopped');
}

/** The `toolcell/error` of a JSON-RPC error the SDK client threw. */
function toolcellError(err: unknown): {code?: string; rule?: string; changes?: string[]} | undefined {
  return ((err as {data?: Record<string, unknown>}).data?.['toolcell/error']) as {code?: string; rule?: string} | undefined;
}

describe('hosted resources and prompts', {skip: !ready && 'no Docker engine or toolcell/node image'}, () => {
  const image = useContentServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    dir = await tempDir();
  });
  after(async () => {
    await dir?.dispose();
  });

  describe('over stdio', () => {
    let server: Awaited<ReturnType<typeof connectStdio>>;
    let pid: number | undefined;
    before(async () => {
      writeContentPackage(`${dir.path}/good`, 'content', image.tag, image.imageId());
      server = await connectStdio(['--no-bundled-tools', '--tools', `${dir.path}/good`, '--audit-log', 'off']);
      pid = server.pid();
    });
    after(async () => {
      await server?.close();
      await noContainersLeft(pid);
    });

    test('toolcell declares resources and prompts and lists them as pinned, prompts as <package>__<prompt>', async () => {
      const caps = server.client.getServerCapabilities();
      assert.ok(caps?.resources && caps.prompts, 'capabilities declared');
      const prompts = (await server.client.listPrompts()).prompts.map((p) => p.name).sort();
      assert.deepEqual(prompts, ['content__test_prompt_with_arguments', 'content__test_prompt_with_embedded_resource', 'content__test_prompt_with_image', 'content__test_simple_prompt']);
      const resources = (await server.client.listResources()).resources.map((r) => r.uri).sort();
      assert.deepEqual(resources, ['test://instance', 'test://static-binary', 'test://static-text', 'test://watched-resource']);
      const templates = (await server.client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
      assert.deepEqual(templates, ['test://template/{id}/data']);
    });

    test('prompts/get and resources/read are relayed from the hosted server', async () => {
      const simple = await server.client.getPrompt({name: 'content__test_simple_prompt'});
      assert.deepEqual(simple.messages, [{role: 'user', content: {type: 'text', text: 'This is a simple prompt for testing.'}}]);
      const withArgs = await server.client.getPrompt({name: 'content__test_prompt_with_arguments', arguments: {arg1: 'hello', arg2: 'world'}});
      assert.match(JSON.stringify(withArgs.messages), /arg1='hello', arg2='world'/);
      const text = await server.client.readResource({uri: 'test://static-text'});
      assert.deepEqual(text.contents, [{uri: 'test://static-text', mimeType: 'text/plain', text: 'This is the content of the static text resource.'}]);
      const templated = await server.client.readResource({uri: 'test://template/123/data'});
      assert.deepEqual(JSON.parse((templated.contents[0] as {text: string}).text), {id: '123', templateTest: true, data: 'Data for ID: 123'});
      assert.equal((text._meta?.['toolcell/usage'] as {backend?: string}).backend, 'container');
    });

    // invariant: server:content:fresh-process
    test('each read runs in a fresh server process in a fresh container, removed after its read', async () => {
      const read = async () => JSON.parse(((await server.client.readResource({uri: 'test://instance'})).contents[0] as {text: string}).text) as {nonce: string; container: string};
      const first = await read();
      const second = await read();
      assert.notEqual(first.nonce, second.nonce, 'a new server process');
      assert.match(first.container, /^[0-9a-f]{64}$/, 'the server sees its container ID');
      assert.notEqual(first.container, second.container, 'a new container');
      const exists = (id: string) => {
        try {
          execFileSync('docker', ['inspect', '--format', '{{.Id}}', id], {stdio: 'ignore'});
          return true;
        } catch {
          return false;
        }
      };
      for (let i = 0; i < 50 && exists(first.container); i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(exists(first.container), false, 'the first read\'s container is removed');
    });

    test('a prompt argument the pin does not declare, or a missing required one, is refused before any sandbox', async () => {
      await assert.rejects(server.client.getPrompt({name: 'content__test_prompt_with_arguments', arguments: {arg1: 'x'}}), /arg2.*required/);
      await assert.rejects(server.client.getPrompt({name: 'content__test_simple_prompt', arguments: {evil: 'x'}}), /not an argument/);
      await assert.rejects(server.client.getPrompt({name: 'nope__x'}), /Unknown prompt/);
      await assert.rejects(server.client.readResource({uri: 'file:///etc/passwd'}), /Resource not found/);
    });
  });

  describe('pin drift', () => {
    let server: Awaited<ReturnType<typeof connectStdio>>;
    let pid: number | undefined;
    before(async () => {
      // rugpull 0: the server lists a changed description for test_simple_prompt and a renamed test://static-text from its first start.
      writeContentPackage(`${dir.path}/drift`, 'drifty', image.tag, image.imageId(), ['rugpull', '0']);
      server = await connectStdio(['--no-bundled-tools', '--tools', `${dir.path}/drift`, '--audit-log', 'off']);
      pid = server.pid();
    });
    after(async () => {
      await server?.close();
      await noContainersLeft(pid);
    });

    // invariant: server:content:pins-enforced
    test('a drifted prompt is DENIED with rule "pin" naming the change; an unchanged prompt of the same server still works', async () => {
      const err = await server.client.getPrompt({name: 'drifty__test_simple_prompt'}).then(() => undefined, (e: unknown) => e);
      assert.ok(err, 'refused');
      assert.equal(toolcellError(err)?.code, 'DENIED');
      assert.equal(toolcellError(err)?.rule, 'pin');
      assert.match(String((err as Error).message), /description changed/);
      const ok = await server.client.getPrompt({name: 'drifty__test_prompt_with_arguments', arguments: {arg1: 'a', arg2: 'b'}});
      assert.match(JSON.stringify(ok.messages), /arg1='a'/);
    });

    test('a drifted resource is DENIED with rule "pin"; the listing still shows the pinned definition', async () => {
      const err = await server.client.readResource({uri: 'test://static-text'}).then(() => undefined, (e: unknown) => e);
      assert.equal(toolcellError(err)?.code, 'DENIED');
      assert.equal(toolcellError(err)?.rule, 'pin');
      const listed = (await server.client.listResources()).resources.find((r) => r.uri === 'test://static-text');
      assert.equal(listed?.name, 'static-text');
      assert.equal((await server.client.readResource({uri: 'test://static-binary'})).contents.length, 1, 'an unchanged resource still reads');
    });
  });

  describe('over HTTP with grants', () => {
    let served: Awaited<ReturnType<typeof spawnCli>> | undefined;
    before(async () => {
      writeContentPackage(`${dir.path}/http`, 'content', image.tag, image.imageId());
      const config = `${dir.path}/service.json`;
      await writeFile(config, JSON.stringify({
        apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
        grants: [{principal: 'key:alice', packages: ['content']}, {principal: 'key:bob', packages: ['other']}],
      }));
      served = await spawnCli(['--http', '127.0.0.1:0', '--no-bundled-tools', '--tools', `${dir.path}/http`, '--config', config, '--audit-log', 'off']);
    });
    after(async () => {
      if (served && served.child.exitCode === null) served.child.kill('SIGTERM');
      await served?.exited;
      await noContainersLeft(served?.child.pid);
    });

    // invariant: server:content:grants
    test('the package grant covers its prompts and resources; to an ungranted principal they look unknown', async () => {
      const alice = await connectHttp(served!.url, {token: KEYS.alice});
      const bob = await connectHttp(served!.url, {token: KEYS.bob});
      try {
        assert.equal((await alice.client.listPrompts()).prompts.length, 4);
        const got = await alice.client.getPrompt({name: 'content__test_simple_prompt'});
        assert.equal(got.messages.length, 1);
        assert.deepEqual((await bob.client.listPrompts()).prompts, []);
        assert.deepEqual((await bob.client.listResources()).resources, []);
        assert.deepEqual((await bob.client.listResourceTemplates()).resourceTemplates, []);
        await assert.rejects(bob.client.getPrompt({name: 'content__test_simple_prompt'}), /Unknown prompt/);
        await assert.rejects(bob.client.getPrompt({name: 'content__no_such_prompt'}), /Unknown prompt/);
        await assert.rejects(bob.client.readResource({uri: 'test://static-text'}), /Resource not found/);
        await assert.rejects(bob.client.readResource({uri: 'test://template/1/data'}), /Resource not found/);
      } finally {
        await alice.close();
        await bob.close();
      }
    });
  });
});

test('without a hosted server that provides them, toolcell declares neither resources nor prompts, and their methods are not found', async () => {
  const server = await connectStdio(['--no-containers', '--audit-log', 'off']);
  try {
    const caps = server.client.getServerCapabilities();
    assert.ok(caps?.tools, 'tools declared');
    assert.equal(caps?.resources, undefined);
    assert.equal(caps?.prompts, undefined);
    await assert.rejects(server.client.request({method: 'prompts/list', params: {}}), /-32601|not found/i);
  } finally {
    await server.close();
  }
});
