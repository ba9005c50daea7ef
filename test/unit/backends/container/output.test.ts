// Bounded capture of Docker's multiplexed attach stream.
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {OutputCollector, utf8Boundary} from '../../../../src/backends/container/output.ts';
import {EXIT_REPORT_MAX_BYTES, exitMarkers} from '../../../../src/backends/container/launcher.ts';

function frame(stream: 1 | 2, payload: Buffer | string): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

test('stdout and stderr frames are separated', () => {
  const c = new OutputCollector(100, () => assert.fail('no overflow'));
  c.push(Buffer.concat([frame(1, 'out1 '), frame(2, 'err'), frame(1, 'out2')]));
  assert.equal(c.stdout.text(), 'out1 out2');
  assert.equal(c.stderr.text(), 'err');
  assert.equal(c.truncated, false);
});

test('frames split at every byte boundary are reassembled', () => {
  const raw = Buffer.concat([frame(1, 'hello '), frame(2, 'oops'), frame(1, 'world')]);
  const c = new OutputCollector(100, () => undefined);
  for (const byte of raw) c.push(Buffer.from([byte]));
  assert.equal(c.stdout.text(), 'hello world');
  assert.equal(c.stderr.text(), 'oops');
});

test('output exactly at the cap is not truncated', () => {
  const c = new OutputCollector(5, () => assert.fail('no overflow'));
  c.push(frame(1, '12345'));
  assert.equal(c.stdout.text(), '12345');
  assert.equal(c.truncated, false);
});

test('100 MB of output keeps only the cap and signals overflow once', () => {
  let overflows = 0;
  const cap = 64 * 1024;
  const c = new OutputCollector(cap, () => overflows++);
  const chunk = frame(1, Buffer.alloc(1024 * 1024, 0x78));
  const before = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < 100; i++) c.push(chunk);
  assert.equal(overflows, 1);
  assert.equal(c.truncated, true);
  assert.equal(c.stdout.text().length, cap);
  assert.equal(c.stdout.seen, 100 * 1024 * 1024);
  // Kept memory stays near the cap (plus the one reused input chunk), not 100 MB.
  assert.ok(process.memoryUsage().arrayBuffers - before < 8 * 1024 * 1024);
});

test('a million one-byte frames do not create a million buffers (memory stays bounded)', () => {
  const c = new OutputCollector(1024 * 1024, () => undefined);
  const one = frame(1, 'x');
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 1_000_000; i++) c.push(one);
  assert.equal(c.stdout.text().length, 1_000_000);
  assert.ok(process.memoryUsage().heapUsed - before < 32 * 1024 * 1024);
});

test('a truncated stream is cut at a UTF-8 character boundary', () => {
  const c = new OutputCollector(4, () => undefined);
  c.push(frame(1, 'aé€')); // 1 + 2 + 3 bytes; the cap falls inside '€'
  assert.equal(c.stdout.text(), 'aé');
  assert.equal(c.truncated, true);
});

test('utf8Boundary keeps complete sequences', () => {
  assert.equal(utf8Boundary(Buffer.from('abc')), 3);
  assert.equal(utf8Boundary(Buffer.from('a€')), 4);
  assert.equal(utf8Boundary(Buffer.from('a€').subarray(0, 3)), 1);
  assert.equal(utf8Boundary(Buffer.from('😀').subarray(0, 2)), 0);
  assert.equal(utf8Boundary(Buffer.alloc(0)), 0);
});

describe('exit report of a warm-pool launcher', () => {
  const token = 'ab'.repeat(16);
  const markers = exitMarkers(token);
  const reportFrames = (status: number) => [frame(1, markers.stdout), frame(2, Buffer.concat([markers.stderrPrefix, Buffer.from(`${status}\x1e`)]))];

  test('both reports, split at every byte, give the status once and are left out of the text', () => {
    const raw = Buffer.concat([frame(1, 'result'), frame(2, 'warn\n'), ...reportFrames(3)]);
    const seen: number[] = [];
    const c = new OutputCollector(100, () => assert.fail('no overflow'));
    c.expectExitReport(markers, EXIT_REPORT_MAX_BYTES, (s) => seen.push(s));
    for (const byte of raw) c.push(Buffer.from([byte]));
    c.finish();
    assert.deepEqual(seen, [3]);
    assert.equal(c.reportedStatus, 3);
    assert.equal(c.stdout.text(), 'result');
    assert.equal(c.stderr.text(), 'warn\n');
  });

  test('one stream alone, a report with another token, output after the report or a bad status is not an exit', () => {
    const other = exitMarkers('cd'.repeat(16));
    const cases: Buffer[][] = [
      [frame(1, markers.stdout)],
      [frame(2, Buffer.concat([markers.stderrPrefix, Buffer.from('0\x1e')]))],
      [frame(1, markers.stdout), frame(2, Buffer.concat([other.stderrPrefix, Buffer.from('0\x1e')]))],
      [frame(1, other.stdout), frame(2, Buffer.concat([markers.stderrPrefix, Buffer.from('0\x1e')]))],
      [frame(1, markers.stdout), frame(1, 'late output'), frame(2, Buffer.concat([markers.stderrPrefix, Buffer.from('0\x1e')]))],
      [frame(1, markers.stdout), frame(2, Buffer.concat([markers.stderrPrefix, Buffer.from('9999\x1e')]))],
      [frame(1, markers.stdout), frame(2, Buffer.concat([markers.stderrPrefix, Buffer.from('0\x1e'), Buffer.from('more')]))],
    ];
    for (const frames of cases) {
      const c = new OutputCollector(100, () => undefined);
      c.expectExitReport(markers, EXIT_REPORT_MAX_BYTES, () => assert.fail('not an exit'));
      for (const f of frames) c.push(f);
      assert.equal(c.reportedStatus, undefined);
    }
  });

  test('output of exactly the cap, then the report: complete, not truncated', () => {
    const c = new OutputCollector(8, () => assert.fail('no overflow'));
    c.expectExitReport(markers, EXIT_REPORT_MAX_BYTES, () => undefined);
    c.push(Buffer.concat([frame(1, '12345678'), ...reportFrames(0)]));
    c.finish();
    assert.equal(c.reportedStatus, 0);
    assert.equal(c.stdout.text(), '12345678');
    assert.equal(c.truncated, false);
  });

  test('output over the cap but within the room kept for the report is still cut and truncated', () => {
    const c = new OutputCollector(8, () => undefined);
    c.expectExitReport(markers, EXIT_REPORT_MAX_BYTES, () => undefined);
    c.push(Buffer.concat([frame(1, '123456789A'), ...reportFrames(0)]));
    c.finish();
    assert.equal(c.stdout.text(), '12345678');
    assert.equal(c.truncated, true);
  });
});
