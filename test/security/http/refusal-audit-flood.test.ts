/**
 * Refused calls cost the client nothing (no quota is charged before a tool is found), so a
 * principal granted nothing can flood calls to ungranted and unknown tools to grow the audit
 * file as fast as it can send (11,000 events/s were measured). The audit sink writes refusal
 * events at most at DEFAULT_REFUSAL_AUDIT_LIMITS per principal and then one `audit.suppressed`
 * count; the client still sees the same unknown-tool answer for both, another principal's events
 * are not affected, and the server keeps answering.
 *
 * Also: client-chosen names with lone UTF-16 surrogates (sent directly, or made by cutting a
 * name at 128 code units inside a pair) are written well-formed, so every audit line is valid
 * UTF-8 JSON whose strings any consumer can decode.
 */
// invariant: audit:refusals:rate-limited
// invariant: audit:lines:well-formed
import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';
import {after, before, test} from 'node:test';
import type {AuditEventV2, AuditSuppressedV2} from '../../../src/audit/audit-event.ts';
import {DEFAULT_REFUSAL_AUDIT_LIMITS} from '../../../src/audit/audit-log.ts';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {KEYS, messagesOf, modernCall, openRawSession, post, realRuntime, startService, until, writeFixtures} from '../../e2e/http/support.ts';

let fixtures: Awaited<ReturnType<typeof writeFixtures>>;
let env: Awaited<ReturnType<typeof realRuntime>>;
let service: HttpService;

before(async () => {
  fixtures = await writeFixtures();
  env = await realRuntime(fixtures);
  service = await startService(env.runtime, {
    apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}, {name: 'bob', sha256: hashApiKey(KEYS.bob)}],
    grants: [{principal: 'key:alice', packages: ['fixture']}],
  });
});

after(async () => {
  await service?.shutdown({drainMs: 0});
  await fixtures?.dispose();
});

type Line = AuditEventV2 | AuditSuppressedV2;
async function auditLines(): Promise<Line[]> {
  const bytes = await readFile(env.auditFile);
  // fatal: any byte sequence that is not UTF-8 throws.
  const text = new TextDecoder('utf-8', {fatal: true}).decode(bytes);
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line);
}

/** One 2026-07-28 tools/call as `key`, sent raw; returns the HTTP status and body text. */
async function rawCall(key: string, name: string): Promise<{status: number; text: string}> {
  const c = modernCall(name, {x: 1});
  const response = await post(service.url, c.body, {...c.headers, Authorization: `Bearer ${key}`});
  return {status: response.status, text: await response.text()};
}

/**
 * A 2025-era tools/call whose name is `rawName`, a JSON string literal put in the body as is
 * (so it can carry a lone surrogate escape); 2025 has no Mcp-Name header to match.
 */
async function legacyCall(key: string, rawName: string): Promise<{status: number; text: string}> {
  const headers = {Authorization: `Bearer ${key}`};
  const sessionId = await openRawSession(service.url, headers);
  const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":${rawName},"arguments":{}}}`;
  const response = await post(service.url, body, {...headers, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25'});
  return {status: response.status, text: await response.text()};
}

async function aliceStillServed(): Promise<void> {
  const c = modernCall('fixture__double', {x: 4});
  const response = await post(service.url, c.body, {...c.headers, Authorization: `Bearer ${KEYS.alice}`});
  assert.equal(response.status, 200);
  const [message] = await messagesOf(response);
  const result = message!.result as {content: Array<{text: string}>; isError?: boolean; _meta?: Record<string, {code?: string}>};
  if (result.isError) assert.match(result._meta?.['toolcell/error']?.code ?? '', /^(TIMEOUT|BUSY)$/);
  else assert.equal(result.content[0]!.text, '8');
}

test('a principal granted nothing floods refused calls: the audit file gets at most the refusal rate plus one summary, answers stay identical, others are still audited and served', async () => {
  const {ratePerSec, burst} = DEFAULT_REFUSAL_AUDIT_LIMITS;
  const startLines = (await auditLines()).length;
  const started = Date.now();
  let calls = 0;
  const answers = new Set<string>();
  // 8 concurrent senders until the flood has clearly passed the refusal audit rate (by 50 calls
  // more than the bucket could have let through, with 2 s of slack), however long that takes on
  // a busy host: no count of what fits in a fixed time. Bounded: 4000 calls or 90 s.
  const passedTheRate = (): boolean => calls > burst + ratePerSec * ((Date.now() - started) / 1000 + 2) + 50;
  await Promise.all(Array.from({length: 8}, async () => {
    while (!passedTheRate() && Date.now() - started < 90_000 && calls < 4000) {
      calls++;
      const ungranted = calls % 2 === 0;
      const r = await rawCall(KEYS.bob, ungranted ? 'fixture__double' : 'fixture__triple');
      answers.add(`${r.status} ${r.text.replace(ungranted ? 'fixture__double' : 'fixture__triple', 'NAME')}`);
    }
  }));
  const elapsedS = (Date.now() - started) / 1000;
  assert.equal(answers.size, 1, `ungranted and unknown answer alike: ${[...answers].join(' | ')}`);
  assert.match([...answers][0]!, /Unknown tool/);
  assert.ok(calls > burst + ratePerSec * (elapsedS + 2), `the flood passed the refusal audit rate (${calls} calls in ${elapsedS} s; the host could not send refused calls faster than ${ratePerSec}/s)`);

  // A refusal of alice during bob's flood is still written (her own bucket).
  await rawCall(KEYS.alice, 'other__nothing');
  await aliceStillServed();
  let lines: Line[] = [];
  await until(async () => (lines = (await auditLines()).slice(startLines)).some((l) => l.type === 'audit.suppressed' && l.principal === 'key:bob'), 10_000, 'a summary of what was left out');
  const bobDenied = lines.filter((l) => l.type === 'tool.call.denied' && l.principal === 'key:bob').length;
  const suppressed = lines.filter((l): l is AuditSuppressedV2 => l.type === 'audit.suppressed' && l.principal === 'key:bob')
    .reduce((n, l) => n + (l.suppressed['tool.call.denied'] ?? 0), 0);
  const writtenElapsedS = (Date.now() - started) / 1000;
  assert.ok(bobDenied <= burst + ratePerSec * writtenElapsedS + 1, `denied events written for bob: ${bobDenied} (bound ${burst} + ${ratePerSec}/s)`);
  assert.ok(bobDenied >= burst, 'the first refusals are written');
  await until(async () => {
    lines = (await auditLines()).slice(startLines);
    const written = lines.filter((l) => l.type === 'tool.call.denied' && l.principal === 'key:bob').length;
    const left = lines.filter((l): l is AuditSuppressedV2 => l.type === 'audit.suppressed' && l.principal === 'key:bob').reduce((n, l) => n + (l.suppressed['tool.call.denied'] ?? 0), 0);
    return written + left === calls;
  }, 10_000, `every refusal is written or counted (${calls} calls; written ${bobDenied}, counted ${suppressed} so far)`);
  assert.ok(lines.some((l) => l.type === 'tool.call.denied' && l.principal === 'key:alice' && (l as AuditEventV2).tool === 'other__nothing'), "alice's refusal is written");
  assert.ok(lines.some((l) => l.type === 'tool.call.completed' && l.principal === 'key:alice'), "alice's call is written");
});

test('names with lone surrogates (sent, or made by the 128-unit cut) are written well-formed: every audit line is valid UTF-8 JSON', async () => {
  const startLines = (await auditLines()).length;
  const lone = await legacyCall(KEYS.alice, '"x\\ud800y\\udfffz"');
  assert.equal(lone.status, 200);
  assert.match(lone.text, /Unknown tool/);
  // 127 ASCII characters, then a pair the 128-unit cut would split.
  const cut = await legacyCall(KEYS.alice, JSON.stringify(`${'a'.repeat(127)}\u{1F600}${'b'.repeat(50)}`));
  assert.match(cut.text, /Unknown tool/);
  let lines: Line[] = [];
  await until(async () => (lines = (await auditLines()).slice(startLines)).length >= 2, 5000, 'two audit events');
  const tools = lines.filter((l): l is AuditEventV2 => l.type === 'tool.call.denied').map((l) => l.tool);
  assert.equal(tools.length, 2);
  for (const tool of tools) assert.ok(tool.isWellFormed(), `well-formed: ${JSON.stringify(tool)}`);
  assert.equal(tools[0], 'x\uFFFDy\uFFFDz');
  assert.equal(tools[1], `${'a'.repeat(127)}…`);
  const raw = await readFile(env.auditFile, 'utf8');
  assert.doesNotMatch(raw, /\\ud[89ab][0-9a-f]{2}/i, 'no escaped lone surrogate in the file');
  await aliceStillServed();
});
