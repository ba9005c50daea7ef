// Tampering with an audit file: deleted, altered, reordered, inserted, forged and cut lines against the chain (seq, prev, sig) and `toolcell audit verify`.
// invariant: audit:chain:tamper-evident
// invariant: audit:signing-key:private
// invariant: audit:verify:hostile-file-contained
// invariant: audit:verify:strict-utf8
import assert from 'node:assert/strict';
import {generateKeyPairSync, type KeyObject} from 'node:crypto';
import {chmod, readFile, symlink, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {AuditChain, lineHash, newChain} from '../../../src/audit/audit-chain.ts';
import {AUDIT_GENESIS, newAuditId, type AuditEventV2} from '../../../src/audit/audit-event.ts';
import {JsonlAuditSink} from '../../../src/audit/audit-log.ts';
import {loadAuditSigningKey} from '../../../src/audit/signing-key.ts';
import {verifyAuditChain, type ChainVerdict} from '../../../src/audit/verify-chain.ts';
import {ConfigError} from '../../../src/errors.ts';
import {runCli} from '../../support/mcp-stdio.ts';
import {tempDir} from '../../support/temp.ts';

let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir('toolcell-audit-chain-');
});
after(async () => {
  await dir?.dispose();
});

const event = (i: number, tool = `text__t${i}`): AuditEventV2 => ({v: 2, type: 'tool.call.completed', at: new Date().toISOString(), auditId: newAuditId(),
  jobId: `j${i}`, principal: 'key:alice', transport: 'http', tool, outcome: 'ok', durationMs: 1, inputSha256: '0'.repeat(64)});

/** Writes `n` events through the real JSONL sink (appending to `file`) and returns the file's lines. */
async function writeEvents(file: string, n: number, signingKey?: KeyObject, from = 1): Promise<string[]> {
  const sink = new JsonlAuditSink(file, signingKey ? {signingKey} : {});
  for (let i = from; i < from + n; i++) sink.write(event(i));
  await sink.close();
  return (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '');
}

const verifyLines = (lines: string[], key?: KeyObject): ChainVerdict => verifyAuditChain(Buffer.from(lines.map((l) => `${l}\n`).join('')), key);
const brokenAt = (verdict: ChainVerdict, line: number, problem: RegExp) => {
  assert.equal(verdict.intact, false, 'the tampering is detected');
  if (verdict.intact) return;
  assert.equal(verdict.line, line, `reported at line ${line}: ${verdict.problem}`);
  assert.match(verdict.problem, problem);
};

test('the sink chains every line: seq from 1, prev = SHA-256 of the previous line, first prev the genesis value', async () => {
  const lines = await writeEvents(join(dir.path, 'plain.jsonl'), 5);
  const parsed = lines.map((l) => JSON.parse(l) as AuditEventV2 & {stream: string; seq: number; prev: string});
  assert.deepEqual(parsed.map((e) => e.seq), [1, 2, 3, 4, 5]);
  assert.equal(parsed[0]!.prev, AUDIT_GENESIS);
  for (let i = 1; i < 5; i++) assert.equal(parsed[i]!.prev, lineHash(lines[i - 1]!));
  assert.ok(parsed.every((e) => e.v === 2 && e.stream === parsed[0]!.stream));
  const verdict = verifyLines(lines);
  assert.equal(verdict.intact, true);
  if (verdict.intact) assert.equal(verdict.events, 5);
});

test('appending after a restart continues the file\'s chain (same stream, next seq)', async () => {
  const file = join(dir.path, 'restart.jsonl');
  await writeEvents(file, 3);
  const lines = await writeEvents(file, 2, undefined, 4);
  const parsed = lines.map((l) => JSON.parse(l) as {stream: string; seq: number});
  assert.deepEqual(parsed.map((e) => e.seq), [1, 2, 3, 4, 5]);
  assert.equal(new Set(parsed.map((e) => e.stream)).size, 1);
  assert.equal(verifyLines(lines).intact, true);
});

test('a deleted line is reported at the line after the gap, naming the missing seq', async () => {
  const lines = await writeEvents(join(dir.path, 'delete.jsonl'), 6);
  brokenAt(verifyLines([...lines.slice(0, 2), ...lines.slice(3)]), 3, /event 3 is missing.*deleted/);
  brokenAt(verifyLines(lines.slice(1)), 1, /begins at seq 2.*missing/);
});

test('an altered line is reported: the next line\'s prev no longer matches (alter the seq too, it is a gap or a repeat)', async () => {
  const lines = await writeEvents(join(dir.path, 'alter.jsonl'), 5);
  const altered = [...lines];
  altered[1] = altered[1]!.replace('"outcome":"ok"', '"outcome":"denied"');
  assert.notEqual(altered[1], lines[1]);
  brokenAt(verifyLines(altered), 3, /not the hash of line 2.*altered/);
  const unparsable = [...lines];
  unparsable[2] = unparsable[2]!.slice(0, 40);
  brokenAt(verifyLines(unparsable), 3, /not a JSON object/);
});

test('reordered lines are reported as reordered', async () => {
  const lines = await writeEvents(join(dir.path, 'reorder.jsonl'), 5);
  brokenAt(verifyLines([lines[0]!, lines[1]!, lines[3]!, lines[2]!, lines[4]!]), 3, /seq 4 .* before seq 3 \(line 4\): reordered/);
});

test('inserted lines are reported: a copied line repeats a seq; a forged line with a correct prev is found by its successor', async () => {
  const lines = await writeEvents(join(dir.path, 'insert.jsonl'), 4);
  brokenAt(verifyLines([lines[0]!, lines[1]!, lines[1]!, lines[2]!, lines[3]!]), 3, /seq 2 after seq 2.*duplicated|inserted/);
  // A careful forger without the key: computes seq and prev right for its own line.
  const head = {stream: (JSON.parse(lines[1]!) as {stream: string}).stream, seq: 2, hash: lineHash(lines[1]!)};
  const forged = new AuditChain(head).line(event(99, 'text__forged'));
  brokenAt(verifyLines([lines[0]!, lines[1]!, forged, lines[2]!, lines[3]!]), 4, /seq 3 after seq 3.*inserted/);
  const v1 = JSON.stringify({...event(98), v: 1});
  brokenAt(verifyLines([lines[0]!, v1, lines[1]!]), 2, /v1 .*inserted/);
});

test('signed: every line verifies with the public key; a forged, altered or unsigned line is reported at that line', async () => {
  const {privateKey, publicKey} = generateKeyPairSync('ed25519');
  const other = generateKeyPairSync('ed25519');
  const lines = await writeEvents(join(dir.path, 'signed.jsonl'), 4, privateKey);
  assert.ok(lines.every((l) => /,"sig":"[A-Za-z0-9+/=]+"\}$/.test(l)));
  const ok = verifyLines(lines, publicKey);
  assert.equal(ok.intact, true);
  if (ok.intact) assert.equal(ok.signed, 4);
  assert.equal(verifyLines(lines, other.publicKey).intact, false, 'another key does not verify');
  // Forged with the chain computed right, signed with another key: caught at the line itself.
  const head = {stream: (JSON.parse(lines[1]!) as {stream: string}).stream, seq: 2, hash: lineHash(lines[1]!)};
  brokenAt(verifyLines([lines[0]!, lines[1]!, new AuditChain(head, other.privateKey).line(event(99))], publicKey), 3, /signature does not verify/);
  brokenAt(verifyLines([lines[0]!, lines[1]!, new AuditChain(head).line(event(99))], publicKey), 3, /unsigned/);
  // The last line altered: no successor names its hash, but its signature fails.
  const last = lines[3]!.replace('"durationMs":1', '"durationMs":2');
  brokenAt(verifyLines([...lines.slice(0, 3), last], publicKey), 4, /signature does not verify/);
  // A signature moved into the middle of the line is not the writer's form.
  const obj = JSON.parse(lines[0]!) as Record<string, unknown>;
  const {sig, ...rest} = obj;
  const moved = JSON.stringify({sig, ...rest});
  brokenAt(verifyLines([moved, ...lines.slice(1)], publicKey), 1, /sig/);
});

test('a cut tail is NOT detectable by verify: it reports the heads, which a copy kept elsewhere must be compared with', async () => {
  const lines = await writeEvents(join(dir.path, 'tail.jsonl'), 5);
  const full = verifyLines(lines);
  const cut = verifyLines(lines.slice(0, 3));
  assert.equal(cut.intact, true, 'without a checkpoint, a truncated tail looks like a stream that stopped');
  assert.ok(full.intact && cut.intact);
  assert.notEqual(full.streams[0]!.head, cut.streams[0]!.head, 'the head differs from the one a shipper or an operator recorded');
  assert.equal(cut.streams[0]!.lastSeq, 3);
});

test('interleaved streams (two replicas merged by a shipper) verify each on its own; a torn last write is reported', async () => {
  const a = new AuditChain(newChain());
  const b = new AuditChain(newChain());
  const merged = [a.line(event(1)), b.line(event(1)), b.line(event(2)), a.line(event(2)), a.line(event(3))];
  const verdict = verifyLines(merged);
  assert.equal(verdict.intact, true);
  if (verdict.intact) assert.equal(verdict.streams.length, 2);
  const torn = Buffer.from(`${merged.join('\n')}\n${a.line(event(4)).slice(0, 30)}`);
  const tornVerdict = verifyAuditChain(torn);
  assert.equal(tornVerdict.intact, false);
  if (!tornVerdict.intact) assert.match(tornVerdict.problem, /torn/);
});

test('toolcell audit verify: exit 0 and "intact: N events", exit 1 naming the line, exit 2 for usage', async () => {
  const {privateKey, publicKey} = generateKeyPairSync('ed25519');
  const file = join(dir.path, 'cli.jsonl');
  const lines = await writeEvents(file, 3, privateKey);
  const pub = await dir.write('audit.pub', publicKey.export({type: 'spki', format: 'pem'}).toString());
  const intact = await runCli(['audit', 'verify', file, '--public-key', pub]);
  assert.equal(intact.code, 0, intact.stderr);
  assert.match(intact.stdout, /^intact: 3 events$/m);
  assert.match(intact.stdout, /signatures: all 3 verified/);
  const tampered = await dir.write('tampered.jsonl', `${lines[0]}\n${lines[2]}\n`);
  const broken = await runCli(['audit', 'verify', tampered]);
  assert.equal(broken.code, 1);
  assert.match(broken.stdout, /^broken: line 2: event 2 is missing/m);
  const missing = await runCli(['audit', 'verify', join(dir.path, 'nope.jsonl')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read/);
  const badKey = await runCli(['audit', 'verify', file, '--public-key', file]);
  assert.equal(badKey.code, 2);
  assert.match(badKey.stderr, /--public-key/);
});

test('the signing key must be a private regular file of the service user, and Ed25519', async () => {
  const {privateKey} = generateKeyPairSync('ed25519');
  const pem = privateKey.export({type: 'pkcs8', format: 'pem'}).toString();
  const key = await dir.write('audit.pem', pem);
  await chmod(key, 0o644);
  assert.throws(() => loadAuditSigningKey(key, 'cfg'), (e: unknown) => e instanceof ConfigError && /open to group or others \(mode 0644\).*0600/.test(e.message));
  await chmod(key, 0o600);
  assert.equal(loadAuditSigningKey(key, 'cfg').asymmetricKeyType, 'ed25519');
  const link = join(dir.path, 'link.pem');
  await symlink(key, link);
  assert.throws(() => loadAuditSigningKey(link, 'cfg'), /symlink/);
  const rsa = generateKeyPairSync('rsa', {modulusLength: 1024}).privateKey.export({type: 'pkcs8', format: 'pem'}).toString();
  const rsaFile = join(dir.path, 'rsa.pem');
  await writeFile(rsaFile, rsa, {mode: 0o600});
  assert.throws(() => loadAuditSigningKey(rsaFile, 'cfg'), /rsa.*Ed25519/);
});

test('a crafted deeply nested line (200,000 levels in v, stream or another field) gets a verdict naming its type, never a crash or a stack (exit 1)', {timeout: 120_000}, async () => {
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  const {privateKey} = generateKeyPairSync('ed25519');
  const good = await writeEvents(join(dir.path, 'deep-base.jsonl'), 1, privateKey);
  const cases: Array<[string, string, RegExp]> = [
    ['v', `{"v":${deep(200_000)}}`, /^broken: line 1: unknown schema version an array/m],
    ['stream', `{"v":2,"stream":${deep(200_000)},"seq":1,"prev":"${'0'.repeat(64)}"}`, /^broken: line 1: a v2 line without a valid stream/m],
    ['long stream', `{"v":2,"stream":"${'x'.repeat(1_000_000)}","seq":5,"prev":"${'0'.repeat(64)}"}`, /^broken: line 1: stream "x{40}"\.\.\. \(1000000 characters\) begins at seq 5/m],
    ['after a good line', `${good[0]}\n{"v":${deep(200_000)}}`, /^broken: line 2: unknown schema version an array/m],
  ];
  for (const [name, text, expected] of cases) {
    const file = await dir.write(`deep-${name.replace(/ /g, '-')}.jsonl`, `${text}\n`);
    const r = await runCli(['audit', 'verify', file]);
    assert.equal(r.code, 1, `${name}: exit ${r.code}; stderr: ${r.stderr.slice(0, 300)}`);
    assert.match(r.stdout, expected, name);
    assert.ok(r.stdout.length < 2000, `${name}: the verdict does not quote the file (${r.stdout.length} bytes)`);
    assert.doesNotMatch(r.stderr, /RangeError|at .*\.ts:\d+/, `${name}: no stack`);
  }
});

test('signed lines are checked as bytes: an invalid UTF-8 byte in place of U+FFFD (or anywhere) is broken, even with the key; the original verifies', async () => {
  const {privateKey, publicKey} = generateKeyPairSync('ed25519');
  const file = join(dir.path, 'utf8.jsonl');
  // A tool name with a lone surrogate: the writer makes it U+FFFD (EF BF BD) before hashing and signing.
  const sink = new JsonlAuditSink(file, {signingKey: privateKey});
  sink.write(event(1));
  sink.write(event(2, 'text__\ud800x'));
  await sink.close();
  const bytes = await readFile(file);
  const at = bytes.indexOf(Buffer.from([0xef, 0xbf, 0xbd]));
  assert.ok(at > 0, 'the writer wrote U+FFFD for the lone surrogate');
  const intact = verifyAuditChain(bytes, publicKey);
  assert.equal(intact.intact, true, JSON.stringify(intact));
  // The three bytes of U+FFFD become one invalid byte (a lenient decoder reads it as U+FFFD again).
  const mutated = Buffer.concat([bytes.subarray(0, at), Buffer.from([0xff]), bytes.subarray(at + 3)]);
  brokenAt(verifyAuditChain(mutated, publicKey), 2, /not valid UTF-8/);
  brokenAt(verifyAuditChain(mutated), 2, /not valid UTF-8/);
  // Any invalid sequence (overlong, lone continuation byte, a surrogate encoded in UTF-8) in any line.
  for (const bad of [[0xc0, 0xaf], [0x80], [0xed, 0xa0, 0x80]]) {
    const first = bytes.indexOf(0x0a);
    const spliced = Buffer.concat([bytes.subarray(0, 20), Buffer.from(bad), bytes.subarray(20, first), bytes.subarray(first)]);
    brokenAt(verifyAuditChain(spliced, publicKey), 1, /not valid UTF-8/);
  }
  // A byte-order mark before a line is not the writer's bytes either.
  brokenAt(verifyAuditChain(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]), publicKey), 1, /not a JSON object/);
  const mfile = await dir.write('utf8-mutated.jsonl', '');
  await writeFile(mfile, mutated);
  const pub = await dir.write('utf8.pub', publicKey.export({type: 'spki', format: 'pem'}).toString());
  const r = await runCli(['audit', 'verify', mfile, '--public-key', pub]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^broken: line 2: not valid UTF-8/m);
});
