/**
 * A principal probes for another principal's tools over HTTP: calling a tool it is not granted
 * must look exactly like calling a tool that does not exist (the same JSON-RPC error), must run
 * nothing, and must leave a `tool.call.denied` audit event on disk naming the principal, the
 * tool and the rule, with the arguments only as their hash. The server keeps answering.
 */
// invariant: audit:refusals:recorded
import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';
import {after, before, test} from 'node:test';
import type {AuditEventV2} from '../../../src/audit/audit-event.ts';
import {sha256Json} from '../../../src/audit/audit-event.ts';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {connectHttp, errorCode, KEYS, realRuntime, refusalOf, startService, until, writeFixtures} from '../../e2e/http/support.ts';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let env: Awaited<ReturnType<typeof realRuntime>>;
let service: HttpService;

/** Appears only in the arguments of refused calls: it must never reach the audit log. */
const SECRET_ARGUMENT = 'do-not-record-this-argument-7f3a';

before(async () => {
  fixtures = await writeFixtures();
  env = await realRuntime(fixtures);
  service = await startService(env.runtime, {
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
    grants: [{principal: 'key:alice', packages: ['fixture']}, {principal: 'key:bob', packages: ['other']}],
  });
});

after(async () => {
  await service?.shutdown({drainMs: 0});
  await fixtures?.dispose();
});

/**
 * The granted tool still answers: its result, or, on a host too busy to run a real isolate call
 * within the fixture's 1 s, a TIMEOUT/BUSY result (the server answered; the sandbox was slow).
 */
async function assertStillAnswers(client: Awaited<ReturnType<typeof connectHttp>>['client'], x: number): Promise<void> {
  const result = await client.callTool({name: 'fixture__double', arguments: {x}});
  if (result.isError) assert.match(errorCode(result) ?? '', /^(TIMEOUT|BUSY)$/, JSON.stringify(result));
  else assert.deepEqual(result.content, [{type: 'text', text: String(x * 2)}]);
}

for (const era of ['legacy', 'modern'] as const) {
  test(`${era}: an ungranted tool gets the unknown-tool answer and a tool.call.denied audit event with rule "grants", never the arguments`, async () => {
    const alice = await connectHttp(service.url, {token: KEYS.alice, era});
    try {
      const before = (await env.auditEvents()).length;
      const args = {text: SECRET_ARGUMENT};
      const ungranted = await refusalOf(alice.client.callTool({name: 'other__shout', arguments: args}));
      const unknown = await refusalOf(alice.client.callTool({name: 'other__whisper', arguments: args}));
      assert.equal(ungranted.code, -32602);
      assert.equal(ungranted.message.replace('other__shout', 'X'), unknown.message.replace('other__whisper', 'X'), 'an ungranted tool looks like an unknown one');

      let events: AuditEventV2[] = [];
      await until(async () => (events = (await env.auditEvents()).slice(before)).length >= 2, 5000, 'two audit events');
      const denied = events.find((e) => e.tool === 'other__shout');
      assert.ok(denied, `an event for the ungranted tool: ${JSON.stringify(events)}`);
      assert.equal(denied.type, 'tool.call.denied');
      assert.equal(denied.principal, 'key:alice');
      assert.equal(denied.rule, 'grants');
      assert.equal(denied.outcome, 'denied');
      assert.equal(denied.code, 'DENIED');
      assert.equal(denied.transport, 'http');
      assert.equal(denied.inputSha256, sha256Json(args));
      const missing = events.find((e) => e.tool === 'other__whisper');
      assert.equal(missing?.type, 'tool.call.denied');
      assert.equal(missing?.rule, 'unknown-tool');
      assert.ok(!events.some((e) => e.type === 'tool.call.completed'), 'nothing ran');

      const file = await readFile(env.auditFile, 'utf8');
      assert.ok(!file.includes(SECRET_ARGUMENT), 'the arguments never reach the audit log');

      await assertStillAnswers(alice.client, 21);
    } finally {
      await alice.close();
    }
  });
}

test('a client-chosen tool name is cut in the audit event, and the server still answers', async () => {
  // 2025 era: the name travels in the body only (2026-07-28 also puts it in the Mcp-Name header).
  const alice = await connectHttp(service.url, {token: KEYS.alice, era: 'legacy'});
  try {
    const before = (await env.auditEvents()).length;
    const name = `a${'b'.repeat(100_000)}`;
    const refused = await refusalOf(alice.client.callTool({name, arguments: {}}));
    assert.equal(refused.code, -32602);
    let events: AuditEventV2[] = [];
    await until(async () => (events = (await env.auditEvents()).slice(before)).length >= 1, 5000, 'one audit event');
    assert.equal(events[0]!.rule, 'unknown-tool');
    assert.ok(events[0]!.tool.length <= 129, `cut name: ${events[0]!.tool.length} characters`);
    await assertStillAnswers(alice.client, 2);
  } finally {
    await alice.close();
  }
});
