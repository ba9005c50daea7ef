import assert from 'node:assert/strict';
import {execFile} from 'node:child_process';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {promisify} from 'node:util';
import {CLI, connectStdio} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

/** What the CLI writes on stderr (issue 14, points 7 and 8): each problem once, one log format, audit only where asked. */

type Run = {code: number; stdout: string; stderr: string};
async function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  try {
    const running = promisify(execFile)(process.execPath, [CLI, ...args],
      {env: {...process.env, TOOLCELL_LOG_LEVEL: 'info', ...env}, timeout: 120_000});
    running.child.stdin?.end(); // serve over stdio ends when its input ends
    const {stdout, stderr} = await running;
    return {code: 0, stdout, stderr};
  } catch (e) {
    const err = e as {code: number; stdout: string; stderr: string};
    return {code: err.code, stdout: err.stdout, stderr: err.stderr};
  }
}

const REASON = 'no-such-profile'; // appears once per mention of the rejection, in text and in JSON (where quotes are escaped)
const count = (text: string, needle: string) => text.split(needle).length - 1;

let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir('toolcell-log-output-');
  await dir.write('tools/ok/toolcell.json', {name: 'ok', version: '1.0.0', tools: [{name: 'echo', description: 'echo', profile: 'isolate-strict',
    inputSchema: {type: 'object', properties: {text: {type: 'string'}}, additionalProperties: false}, isolate: {entry: 'echo.js'}}]});
  await dir.write('tools/ok/echo.js', 'export default ({text}) => String(text)');
  await dir.write('tools/ghost/toolcell.json', {name: 'ghost', version: '1.0.0', tools: [{name: 'x', description: 'x', profile: 'no-such-profile',
    inputSchema: {type: 'object'}, isolate: {entry: 'x.js'}}]});
});
after(() => dir.dispose());

const tools = () => ['--tools', join(dir.path, 'tools'), '--no-containers'];

describe('each rejection is shown once', () => {
  test('list prints the rejected package once (its report), not again as a log line', async () => {
    for (const args of [['list'], ['list', '--json']]) {
      const {stdout, stderr} = await cli([...args, ...tools()]);
      assert.equal(count(stdout + stderr, REASON), 1, `${args.join(' ')}:\n${stdout}\n--- stderr\n${stderr}`);
      assert.equal(count(stdout, REASON), 1);
    }
  });

  test('doctor prints the rejected package once', async () => {
    const {stdout, stderr} = await cli(['doctor', ...tools()]);
    assert.equal(count(stdout + stderr, REASON), 1, `${stdout}\n--- stderr\n${stderr}`);
  });
});

describe('one log format on stderr', () => {
  test('serve logs a rejection once, as a JSON line when stderr is not a terminal, and as one text line with --log-format pretty', async () => {
    const json = await cli(['serve', ...tools()]);
    assert.equal(json.code, 0, json.stderr);
    const lines = json.stderr.trim().split('\n').filter((l) => l.includes(REASON));
    assert.equal(lines.length, 1, json.stderr);
    assert.equal(JSON.parse(lines[0]!).level, 40);
    // Every line is a JSON log line, except the one ready line for the human watching (issue 14 point 6).
    for (const line of json.stderr.trim().split('\n').filter((l) => l !== '' && !/^toolcell: serving \d+ tools? over stdio$/.test(l))) {
      assert.doesNotThrow(() => JSON.parse(line), `not a JSON line: ${line}`);
    }

    const pretty = await cli(['--log-format', 'pretty', 'serve', ...tools()]);
    const prettyLines = pretty.stderr.trim().split('\n').filter((l) => l.includes(REASON));
    assert.equal(prettyLines.length, 1, pretty.stderr);
    assert.match(prettyLines[0]!, /^\d\d:\d\d:\d\d\.\d{3} WARN {2}package rejected: tool "x": names unknown profile/);
    // The option is accepted after the command too.
    const after = await cli(['serve', '--log-format', 'pretty', ...tools()]);
    assert.match(after.stderr, /^\d\d:\d\d:\d\d\.\d{3} WARN {2}package rejected/m);
  });

  test('serve without a Docker engine says in one log line which container tools it leaves out and why', async () => {
    const {stderr} = await cli(['serve'], {DOCKER_HOST: `unix://${join(dir.path, 'no-docker.sock')}`});
    const lines = stderr.split('\n').filter((l) => l.includes('left out'));
    assert.equal(lines.length, 1, stderr);
    const entry = JSON.parse(lines[0]!);
    assert.match(entry.msg, /^container tools left out: the Docker engine at unix:\/\/.*no-docker\.sock is not reachable/);
    assert.deepEqual(entry.tools, ['json__query', 'python__run', 'shell__run']);
  });

  test('a tool package whose directory name carries terminal escape sequences cannot write them to the operator\'s terminal (pretty format); the server keeps serving', async () => {
    // invariant: log:pretty:no-terminal-control
    const hostile = await tempDir('toolcell-log-hostile-');
    try {
      const name = 'evil\u001b[2J\u001b]0;owned\u0007\u009b31m\u202eexe.txt';
      await hostile.write(`tools/${name}/toolcell.json`, '{"name": "evil",');
      await hostile.write('tools/ok/toolcell.json', {name: 'ok', version: '1.0.0', tools: [{name: 'echo', description: 'echo', profile: 'isolate-strict',
        inputSchema: {type: 'object', properties: {text: {type: 'string'}}, additionalProperties: false}, isolate: {entry: 'echo.js'}}]});
      await hostile.write('tools/ok/echo.js', 'export default ({text}) => String(text)');
      const server = await connectStdio(['--log-format', 'pretty', '--tools', join(hostile.path, 'tools'), '--no-containers'], {env: {TOOLCELL_LOG_LEVEL: 'info'}});
      try {
        const result = await server.client.callTool({name: 'ok__echo', arguments: {text: 'still here'}});
        assert.equal(result.isError, undefined);
      } finally {
        await server.close();
      }
      const stderr = server.stderr();
      const rejected = stderr.split('\n').filter((l) => l.includes('package rejected'));
      assert.equal(rejected.length, 1, stderr);
      assert.match(rejected[0]!, /evil\\u001b\[2J\\u001b\]0;owned\\u0007\\u009b31m\\u202eexe/);
      assert.doesNotMatch(stderr.replaceAll('\n', ''), /[\u0000-\u001f\u007f-\u009f\u202a-\u202e]/, 'no control character reaches the terminal');
    } finally {
      await hostile.dispose();
    }
  });

  test('an unknown TOOLCELL_LOG_LEVEL or --log-format is a usage error (exit 2) naming what is allowed', async () => {
    const level = await cli(['list', ...tools()], {TOOLCELL_LOG_LEVEL: 'verbose'});
    assert.equal(level.code, 2);
    assert.match(level.stderr, /TOOLCELL_LOG_LEVEL="verbose" is not a log level; allowed: fatal, error, warn, info, debug, trace, silent/);
    assert.equal(level.stdout, '');
    const format = await cli(['--log-format', 'xml', 'list', ...tools()]);
    assert.equal(format.code, 2);
    assert.match(format.stderr, /Allowed choices are json, pretty/);
  });
});

describe('audit events on stdio', () => {
  test('are off unless asked for, and go to stderr with --audit-log stderr', async () => {
    for (const [args, expected] of [[[], 0], [['--audit-log', 'stderr'], 1]] as const) {
      const server = await connectStdio([...tools(), ...args], {env: {TOOLCELL_LOG_LEVEL: 'info'}});
      try {
        const result = await server.client.callTool({name: 'ok__echo', arguments: {text: 'hi'}});
        assert.equal(result.isError, undefined);
      } finally {
        await server.close();
      }
      const events = server.stderr().split('\n').filter((l) => l.includes('"tool.call.completed"'));
      assert.equal(events.length, expected, `${args.join(' ') || '(no --audit-log)'}:\n${server.stderr()}`);
    }
  });
});
