import assert from 'node:assert/strict';
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {test} from 'node:test';
import {newAuditId, type AuditEventV2} from '../../../src/audit/audit-event.ts';
import {JsonlAuditSink} from '../../../src/audit/audit-log.ts';

/**
 * A client chooses the tool name an audit event records (an unknown tool is audited by the name
 * sent). Written raw, a C1 CSI or a bidi override in it would act on the terminal of an operator
 * who reads the audit stream (the default on `serve --http` is stderr).
 */
// invariant: cli:output:no-terminal-control

test('an audit line carries no raw control character and parses to the same event', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'toolcell-audit-terminal-'));
  try {
    const file = join(dir, 'audit.jsonl');
    const sink = new JsonlAuditSink(file);
    const tool = 'x\u009b2J\u001b[31m\u202eevil\u2028\u007f';
    const event: AuditEventV2 = {v: 2, type: 'tool.call.completed', at: new Date().toISOString(), auditId: newAuditId(), jobId: 'j1',
      principal: 'local', transport: 'stdio', tool, outcome: 'ok', durationMs: 1, inputSha256: '0'.repeat(64)} as AuditEventV2;
    sink.write(event);
    await sink.close();
    const text = readFileSync(file, 'utf8');
    assert.equal(text.split('\n').length, 2, 'one line');
    assert.doesNotMatch(text.slice(0, -1), /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/);
    // The sink adds the chain fields (v2); the event's own fields come back unchanged.
    const {stream, seq, prev, ...fields} = JSON.parse(text) as Record<string, unknown>;
    assert.deepEqual(fields, event);
    assert.equal(typeof stream, 'string');
    assert.equal(seq, 1);
    assert.match(String(prev), /^0{64}$/);
  } finally {
    rmSync(dir, {recursive: true, force: true});
  }
});
