/**
 * Red team (issue 12): a SIGHUP sent while `serve --http` was still starting (a cert-rotation
 * sidecar, logrotate-style tooling) killed it (exit 129): the handler was installed only once
 * the service served. Now the entry holds SIGHUP before loading anything slow and queues it
 * until the service exists; the reload then runs once and the service serves.
 */
// invariant: http:sighup:startup-safe
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {readFileSync} from 'node:fs';
import {after, before, test} from 'node:test';
import {CLI, until, writeFixtures, type Fixtures} from '../../e2e/http/support.ts';

let fixtures: Fixtures;
before(async () => {
  fixtures = await writeFixtures();
});
after(async () => {
  await fixtures?.dispose();
});

/** Whether process `pid` catches SIGHUP (bit 0 of SigCgt in /proc/PID/status, proc(5)); false when it is gone. */
function catchesHangup(pid: number): boolean {
  try {
    const line = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return line !== null && (BigInt(`0x${line[1]}`) & 1n) === 1n;
  } catch {
    return false;
  }
}

test('SIGHUP during start-up is held and queued: the process is not killed, serves, and reports the reload once it serves', {timeout: 90_000}, async () => {
  const child = spawn(process.execPath, ['--no-node-snapshot', CLI, 'serve', '--http', '127.0.0.1:0', '--tools', fixtures.toolDir, '--no-bundled-tools',
    '--profiles', fixtures.profileDir, '--no-containers', '--audit-log', 'off'], {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, stdio: ['ignore', 'ignore', 'pipe']});
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>((resolve) => child.once('exit', (code, signal) => resolve({code, signal})));
  let exit: {code: number | null; signal: NodeJS.Signals | null} | undefined;
  void exited.then((e) => (exit = e));
  try {
    // Poll until the process catches SIGHUP; it must do so before it prints that it serves.
    let sentDuringStartup = 0;
    await until(() => {
      if (exit !== undefined || stderr.includes('serving MCP')) return true;
      if (catchesHangup(child.pid!)) {
        child.kill('SIGHUP');
        sentDuringStartup++;
        return true;
      }
      return false;
    }, 30_000, 'the process catches SIGHUP or serves');
    assert.equal(exit, undefined, `the process exited during start-up: ${JSON.stringify(exit)}; stderr:\n${stderr}`);
    assert.ok(sentDuringStartup > 0, `no SIGHUP handler before the service served; stderr:\n${stderr}`);
    // More hangups while it still starts (each is queued; they count as one).
    for (let i = 0; i < 3 && !stderr.includes('serving MCP'); i++) {
      child.kill('SIGHUP');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await until(() => exit !== undefined || stderr.includes('SIGHUP: TLS certificate not reloaded: no certificate configured'), 30_000, 'the queued reload is reported');
    assert.equal(exit, undefined, `the process exited: ${JSON.stringify(exit)}; stderr:\n${stderr}`);
    const url = /serving MCP over Streamable HTTP at (\S+)/.exec(stderr)?.[1];
    assert.ok(url, `the service serves; stderr:\n${stderr}`);
    assert.ok(stderr.indexOf('serving MCP') < stderr.indexOf('SIGHUP:'), 'the reload runs once the service exists');
    assert.equal((await fetch(url.replace(/\/mcp$/, '/healthz'), {signal: AbortSignal.timeout(10_000)})).status, 200);
  } finally {
    if (exit === undefined) child.kill('SIGTERM');
    const hazard = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(hazard);
  }
});
