/**
 * Attacks through a hosted server's resources and prompts, performed for real against a runtime
 * with the real server backend: a server that floods its resources/read answer or answers with
 * the wrong shape, a server whose prompt/resource changed since add (rug pull), a client that reads
 * a URI no package pinned or that asks for an ungranted package's prompt. Each time: the refusal
 * or the right code, the audit event, no container left, and the next request still works.
 */
import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';
import {hostname} from 'node:os';
import {after, before, describe, test} from 'node:test';
import {getPrompt, readResource} from '../../../src/frontend/hosted-request.ts';
import type {CallContext} from '../../../src/frontend/call-tool.ts';
import {createRuntime, type Runtime} from '../../../src/runtime.ts';
import {writeContentPackage} from '../../fixtures/content-server/write-package.ts';
import {useContentServerImage} from '../../support/content-server.ts';
import {docker, dockerAvailable} from '../../support/docker.ts';
import {tempDir} from '../../support/temp.ts';

const ready = await dockerAvailable({images: ['toolcell/node']});

const context = (packages: readonly string[] | '*' = '*'): CallContext => ({
  principal: {id: 'key:test', kind: 'api-key', scopes: [], packages},
  transport: 'http',
  signal: AbortSignal.timeout(60_000),
});
const toolcellError = (err: unknown) => ((err as {data?: Record<string, unknown>}).data?.['toolcell/error']) as {code?: string; rule?: string; changes?: string[]} | undefined;
const refusal = async (p: Promise<unknown>) => p.then(() => assert.fail('expected a refusal'), (err: unknown) => err);

/**
 * The complete lines of the audit file `file` as events, once `done(events)` holds (the
 * sink writes asynchronously, so a request's event may land after its answer), polled
 * every 20 ms for at most 10 s; then as they are, for the assertions to judge.
 */
async function auditEvents(file: string, done: (events: Array<Record<string, unknown>>) => boolean): Promise<Array<Record<string, unknown>>> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = await readFile(file, 'utf8');
    const events = text.slice(0, text.lastIndexOf('\n') + 1).split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as Record<string, unknown>);
    if (done(events) || Date.now() > deadline) return events;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Containers whose owner label names a backend of this test process. */
async function ownContainers(): Promise<string[]> {
  const list = await docker.listContainers({all: true, filters: {label: ['toolcell.managed=true']}});
  return list.filter((c) => c.Labels['toolcell.owner']?.startsWith(`${hostname()}/${process.pid}/`)).map((c) => c.Id);
}

describe('hosted resources and prompts under attack', {skip: !ready && 'no Docker engine or toolcell/node image'}, () => {
  const image = useContentServerImage();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let runtime: Runtime | undefined;
  let auditFile: string;
  before(async () => {
    dir = await tempDir();
    auditFile = `${dir.path}/audit.jsonl`;
    // Prompts are namespaced, URIs are not: each hostile package gets its own tools directory and runtime would
    // clash on URIs, so the hostile servers pin only prompts here except "flood", which owns the URIs.
    writeContentPackage(`${dir.path}/tools`, 'flood', image.tag, image.imageId(), ['flood']);
  }, {timeout: 10_000});
  after(async () => {
    await runtime?.close();
    for (let i = 0; i < 50 && (await ownContainers()).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await ownContainers(), [], 'no container of this process is left');
    await dir?.dispose();
  });

  // invariant: server:content:contained
  test('a server that floods its resources/read answer is stopped (OUTPUT_LIMIT), audited, and the next request to that server works', async () => {
    runtime = await createRuntime({toolDirs: [`${dir.path}/tools`], audit: auditFile, isolatePool: 0});
    assert.ok(runtime.hostedContent?.hasResources, JSON.stringify(runtime.unavailable));
    const err = await refusal(readResource(runtime, 'test://static-text', context()));
    assert.equal(toolcellError(err)?.code, 'OUTPUT_LIMIT', String(err));
    // The prompts of the same server are unaffected (prompts/get does not flood).
    const ok = await getPrompt(runtime, 'flood__test_simple_prompt', {}, context());
    assert.equal(ok.messages.length, 1);
    const flooded = (e: Record<string, unknown>) => e.method === 'resources/read' && e.outcome === 'output-limit' && e.tool === 'test://static-text';
    const prompted = (e: Record<string, unknown>) => e.method === 'prompts/get' && e.outcome === 'ok';
    const events = await auditEvents(auditFile, (all) => all.some(flooded) && all.some(prompted));
    assert.ok(events.some(flooded), JSON.stringify(events));
    assert.ok(events.some(prompted));
  });

  // invariant: server:content:grants
  test('an ungranted package\'s prompt or resource, and a URI nobody pinned, look unknown and are audited before any sandbox', async () => {
    const before = (await auditEvents(auditFile, () => true)).length;
    const prompt = await refusal(getPrompt(runtime!, 'flood__test_simple_prompt', {}, context(['other'])));
    assert.match(String((prompt as Error).message), /Unknown prompt/);
    const resource = await refusal(readResource(runtime!, 'test://static-text', context(['other'])));
    assert.equal((resource as {code?: number}).code, -32002);
    const traversal = await refusal(readResource(runtime!, 'file:///etc/shadow', context()));
    assert.equal((traversal as {code?: number}).code, -32002);
    const long = await refusal(readResource(runtime!, `test://template/${'x'.repeat(5000)}/data`, context()));
    assert.equal((long as {code?: number}).code, -32002, 'a URI over the length limit is not routed');
    const events = (await auditEvents(auditFile, (all) => all.length >= before + 4)).slice(before);
    assert.deepEqual(events.map((e) => [e.method, e.rule]), [['prompts/get', 'grants'], ['resources/read', 'grants'], ['resources/read', 'unknown-tool'], ['resources/read', 'unknown-tool']]);
    assert.ok(events.every((e) => typeof e.tool === 'string' && (e.tool as string).length <= 129), 'a client-chosen URI is cut in the audit event');
  });

  // invariant: server:content:contained
  test('a server that answers prompts/get or resources/read with the wrong shape gets TOOL_FAILED; nothing of it is relayed', async () => {
    await runtime?.close();
    writeContentPackage(`${dir.path}/invalid`, 'bad', image.tag, image.imageId(), ['invalid']);
    runtime = await createRuntime({toolDirs: [`${dir.path}/invalid`], audit: 'off', isolatePool: 0});
    const p = await refusal(getPrompt(runtime, 'bad__test_simple_prompt', {}, context()));
    assert.equal(toolcellError(p)?.code, 'TOOL_FAILED');
    const r = await refusal(readResource(runtime, 'test://static-text', context()));
    assert.equal(toolcellError(r)?.code, 'TOOL_FAILED');
    assert.doesNotMatch(String((r as Error).message), /not an array/);
  });

  // invariant: server:content:pins-enforced
  test('an image tag re-pointed since add refuses every prompt and resource before any sandbox; an absent pinned image leaves them out', async () => {
    await runtime?.close();
    // The package was approved with image "toolcell/node" naming the fixture's ID; that tag now names another image.
    writeContentPackage(`${dir.path}/retag`, 'retag', 'toolcell/node', image.imageId());
    writeContentPackage(`${dir.path}/gone`, 'gone', image.tag, `sha256:${'0'.repeat(64)}`);
    runtime = await createRuntime({toolDirs: [`${dir.path}/retag`], audit: 'off', isolatePool: 0});
    const p = await refusal(getPrompt(runtime, 'retag__test_simple_prompt', {}, context()));
    assert.equal(toolcellError(p)?.rule, 'pin');
    assert.match(String((p as Error).message), /image changed/);
    assert.equal(toolcellError(await refusal(readResource(runtime, 'test://static-text', context())))?.rule, 'pin');
    assert.deepEqual(await ownContainers(), [], 'refused before any container');
    await runtime.close();
    runtime = await createRuntime({toolDirs: [`${dir.path}/gone`], audit: 'off', isolatePool: 0});
    assert.equal(runtime.hostedContent, undefined);
    assert.match(runtime.unavailable.map((u) => `${u.tool}: ${u.reason}`).join('\n'), /gone \(prompts, resources\): its pinned image .* is not present/);
  });

  // invariant: server:content:pins-enforced
  test('a rug pull on a prompt and a resource: DENIED rule "pin" with the changes, audited; an unchanged prompt of the server still works', async () => {
    await runtime?.close();
    writeContentPackage(`${dir.path}/rug`, 'rug', image.tag, image.imageId(), ['rugpull', String(Date.now())]);
    const audit = `${dir.path}/rug-audit.jsonl`;
    runtime = await createRuntime({toolDirs: [`${dir.path}/rug`], audit, isolatePool: 0});
    const p = await refusal(getPrompt(runtime, 'rug__test_simple_prompt', {}, context()));
    assert.equal(toolcellError(p)?.code, 'DENIED');
    assert.equal(toolcellError(p)?.rule, 'pin');
    assert.match(String((p as Error).message), /description changed: .*IMPORTANT/);
    const r = await refusal(readResource(runtime, 'test://static-text', context()));
    assert.equal(toolcellError(r)?.rule, 'pin');
    assert.match(String((r as Error).message), /name changed/);
    const ok = await getPrompt(runtime, 'rug__test_prompt_with_arguments', {arg1: 'a', arg2: 'b'}, context());
    assert.equal(ok.messages.length, 1);
    await runtime.close();
    const events = (await readFile(audit, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const denied = events.filter((e) => e.rule === 'pin');
    assert.equal(denied.length, 2);
    assert.ok(denied.every((e) => e.type === 'tool.call.denied' && Array.isArray(e.changes) && (e.changes as string[]).length > 0));
  });
});
