/**
 * A stdio client that writes without ever reading stdout: every line it sends makes an answer
 * (a -32700 refusal for junk, a result for a ping). Without backpressure the server kept reading
 * stdin and piling the answers up in memory until its heap ran out (~850 KB of `x\n` lines, or
 * ~6 MB of pings, at 512 MB). The server here has a 48 MB heap: it must stop reading stdin
 * while its answers are unwritten, stay alive, and, once the client reads, answer every line
 * and then a fresh request.
 */
// invariant: stdio:output:backpressure
import assert from 'node:assert/strict';
import {spawn, type ChildProcessWithoutNullStreams} from 'node:child_process';
import {join} from 'node:path';
import {test} from 'node:test';
import {PACKAGE_ROOT} from '../../../src/paths.ts';
import {CLI} from '../../support/mcp-stdio.ts';

/** Starts a stdio server with a 48 MB heap whose stdout nobody reads yet. */
function startServer(): {child: ChildProcessWithoutNullStreams; exited: Promise<{code: number | null; signal: string | null}>; stderr: () => string} {
  const child = spawn(process.execPath, ['--no-node-snapshot', '--max-old-space-size=48', CLI, 'serve', '--tools', join(PACKAGE_ROOT, 'tools'), '--no-containers', '--audit-log', 'off'], {
    stdio: ['pipe', 'pipe', 'pipe'], env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'},
  });
  const exited = new Promise<{code: number | null; signal: string | null}>((resolve) => child.once('exit', (code, signal) => resolve({code, signal})));
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => (stderr += text.slice(0, 4096)));
  child.stdin.on('error', () => {});
  child.stdout.pause();
  return {child, exited, stderr: () => stderr};
}

/** Reads stdout from now on, counting answers, until `done` holds or `ms` passed. */
function readAnswers(child: ChildProcessWithoutNullStreams, done: (answers: Array<{id?: unknown; error?: {code: number}}>) => boolean, ms: number): Promise<Array<{id?: unknown; error?: {code: number}}>> {
  return new Promise((resolve) => {
    const answers: Array<{id?: unknown; error?: {code: number}}> = [];
    let pending = '';
    const finish = () => {
      clearTimeout(timer);
      child.stdout.off('data', onData);
      resolve(answers);
    };
    const timer = setTimeout(finish, ms);
    const onData = (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      let newline: number;
      while ((newline = pending.indexOf('\n')) !== -1) {
        answers.push(JSON.parse(pending.slice(0, newline)) as {id?: unknown});
        pending = pending.slice(newline + 1);
      }
      if (done(answers)) finish();
    };
    child.stdout.on('data', onData);
    child.stdout.resume();
  });
}

async function flood(lines: string, count: number, expect: (a: {id?: unknown; error?: {code: number}}) => boolean, initialize: boolean): Promise<void> {
  const {child, exited, stderr} = startServer();
  let exit: {code: number | null; signal: string | null} | undefined;
  void exited.then((e) => (exit = e));
  const hazard = setTimeout(() => child.kill('SIGKILL'), 150_000);
  try {
    if (initialize) {
      child.stdin.write(`${JSON.stringify({jsonrpc: '2.0', id: 'init', method: 'initialize', params: {protocolVersion: '2025-11-25', capabilities: {}, clientInfo: {name: 'raw', version: '1'}}})}\n`);
      const init = await readAnswers(child, (a) => a.some((m) => m.id === 'init'), 30_000);
      assert.ok(init.some((m) => m.id === 'init'), `initialized; stderr: ${stderr()}`);
      child.stdout.pause();
      child.stdin.write('{"jsonrpc":"2.0","method":"notifications/initialized"}\n');
    }
    // The client writes everything and reads nothing for a while.
    child.stdin.write(lines);
    await new Promise((resolve) => setTimeout(resolve, 8000));
    assert.equal(exit, undefined, `the server died while its stdout was not read: ${JSON.stringify(exit)}; stderr: ${stderr()}`);
    assert.ok(child.stdin.writableLength > 0, 'the server stopped reading stdin while its answers were unread');
    // Now the client reads: every line is answered, in the end.
    let matched = 0;
    let seen = 0;
    await readAnswers(child, (a) => {
      for (; seen < a.length; seen++) if (expect(a[seen]!)) matched++;
      return matched >= count;
    }, 90_000);
    assert.equal(exit, undefined, `the server died: ${JSON.stringify(exit)}; stderr: ${stderr()}`);
    assert.equal(matched, count, 'one answer per line');
    child.stdin.write(`${JSON.stringify({jsonrpc: '2.0', id: 'after', method: 'ping'})}\n`);
    const after = await readAnswers(child, (a) => a.some((m) => m.id === 'after'), 30_000);
    assert.ok(after.some((m) => m.id === 'after'), 'the server still answers');
  } finally {
    clearTimeout(hazard);
    child.stdin.end();
    const gone = await Promise.race([exited.then(() => true), new Promise((resolve) => setTimeout(resolve, 10_000, false))]);
    if (!gone) child.kill('SIGKILL');
  }
}

test('200,000 junk lines (each answered -32700) from a client that does not read: the server stops reading instead of dying', async () => {
  const count = 200_000;
  await flood('x\n'.repeat(count), count, (a) => a.error?.code === -32700, false);
});

test('100,000 pings (each answered by the SDK) from a client that does not read: the server stops reading instead of dying', async () => {
  const count = 100_000;
  const lines = Array.from({length: count}, (_, i) => `{"jsonrpc":"2.0","id":${i},"method":"ping"}\n`).join('');
  await flood(lines, count, (a) => typeof a.id === 'number' && (a as {result?: unknown}).result !== undefined, true);
});
