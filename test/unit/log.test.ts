import assert from 'node:assert/strict';
import {test} from 'node:test';
import {LOG_LEVELS, logLevelProblem, prettyLine} from '../../src/log.ts';
import {escapeForTerminal, escapeJsonForTerminal} from '../../src/terminal-text.ts';

/** src/log.ts: the pretty format and the TOOLCELL_LOG_LEVEL check (issue 14, point 8). */

test('TOOLCELL_LOG_LEVEL: unset, empty and every pino level are accepted; anything else names the allowed levels', () => {
  for (const ok of [undefined, '', ...LOG_LEVELS]) assert.equal(logLevelProblem(ok), undefined, String(ok));
  for (const bad of ['verbose', 'WARN', 'warning', '30']) {
    assert.equal(logLevelProblem(bad), `TOOLCELL_LOG_LEVEL=${JSON.stringify(bad)} is not a log level; allowed: fatal, error, warn, info, debug, trace, silent`);
  }
});

test('a pretty line shows time, level, message and the other fields, one line per entry', () => {
  const line = JSON.stringify({level: 40, time: Date.UTC(2026, 11, 6, 9, 8, 7, 654), pid: 1, hostname: 'h', name: 'toolcell',
    tool: 'text__diff', reason: 'needs a Docker engine', n: 3, err: {type: 'Error', message: 'boom', stack: 'Error: boom\n    at x'}, msg: 'tool left out'});
  assert.equal(prettyLine(`${line}\n`), '09:08:07.654 WARN  tool left out tool=text__diff reason="needs a Docker engine" n=3 err="Error: boom"\n');
});

test('what a client or tool put in a message or field cannot act on the terminal or add a line (escape sequences, C1 CSI, newlines, bidi)', () => {
  const hostile = 'a\u001b[2J\u001b]0;owned\u0007b\u009b31mc\nFAKE 00:00:00.000 INFO  d\u202eevil\u2028e\u007f';
  const out = prettyLine(JSON.stringify({level: 30, time: 0, msg: hostile, tool: hostile}));
  assert.equal(out.split('\n').length, 2, 'one line, newline-terminated');
  assert.doesNotMatch(out.slice(0, -1), /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2028\u2029]/);
  assert.match(out, /a\\u001b\[2J/);
  assert.match(out, /b\\u009b31mc/);
  assert.equal(escapeForTerminal('plain ascii, ü and 日本'), 'plain ascii, ü and 日本');
  // JSON laid out over lines keeps its lines and its meaning.
  const value = {name: 'a\u009b2J\u202eb', n: [1, 2]};
  const json = escapeJsonForTerminal(JSON.stringify(value, null, 2));
  assert.doesNotMatch(json, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e]/);
  assert.deepEqual(JSON.parse(json), value);
  assert.equal(json.split('\n').length, 7);
  // A line that is not JSON is passed through, escaped.
  assert.equal(prettyLine('not json\u001b[1m\n'), 'not json\\u001b[1m\n');
});
