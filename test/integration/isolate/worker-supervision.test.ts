/**
 * The isolate worker process: killed mid-call, frozen, several workers, shutdown, and
 * its stdout never reaching the server's stdout.
 */
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import {after, before, describe, test} from 'node:test';
import {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {isAlive} from '../../support/processes.ts';
import {assertStillServes, captureLog, LIMITS, run, sleep, startBackend, waitFor, type CapturedLog} from './helpers.ts';

/** A tool that sleeps `args.ms` (without CPU: `Atomics.wait` on the isolate's thread) and returns `args.n`. */
const SLEEPY = 'export default (args) => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, args.ms); return args.n; }';

describe('isolate worker supervision', () => {
  let backend: IsolateBackend;
  let log: CapturedLog;
  before(async () => {
    ({backend, log} = await startBackend({backstopGraceMs: 300}));
  });
  after(() => backend.close());

  test('killing the worker mid-call runs every call in flight again, alone, and each completes; the worker is restarted', async () => {
    const [pid] = backend.workerPids();
    assert.ok(pid);
    const reruns = backend.stats().reruns;
    const calls = Array.from({length: 3}, (_, n) => run(backend, SLEEPY, {args: {n, ms: 400}, limits: {timeoutMs: 10_000}}));
    await sleep(100);
    process.kill(pid, 'SIGKILL');
    const results = await Promise.all(calls);
    results.forEach((result, n) => {
      assert.equal(result.failed, false, JSON.stringify(result));
      assert.equal(result.stdout, String(n));
    });
    assert.equal(backend.stats().reruns - reruns, 3, 'each call ran again once');
    const warning = log.lines.find((line) => line.msg === 'isolate worker stopped; restarting it' && line.pid === pid);
    assert.ok(warning, 'the restart is logged at warn');
    assert.equal(warning.level, 40);
    assert.equal(warning.signal, 'SIGKILL');
    assert.equal(warning.inflight, 3);
    await assertStillServes(backend);
    assert.notEqual(backend.workerPids()[0], pid);
    assert.equal(backend.stats().restarts >= 1, true);
  });

  test('a worker killed while idle is replaced and the next call succeeds', async () => {
    const [pid] = backend.workerPids();
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !backend.workerPids().includes(pid), 2000, 'the exit to be noticed');
    await assertStillServes(backend);
  });

  test('a frozen worker is backstopped: the call resolves timedOut shortly after its deadline and the worker is replaced', async () => {
    const [pid] = backend.workerPids();
    assert.ok(pid);
    // Frozen before the call is sent: stopping it right after the send raced with the
    // worker, which (woken by the send, on a loaded machine) could answer first.
    process.kill(pid, 'SIGSTOP');
    const result = await run(backend, 'export default () => 1', {limits: {timeoutMs: 500}});
    assert.equal(result.timedOut, true);
    assert.equal(result.failed, true);
    // The deadline, the backstop's grace, the grace of the ping that gets no answer, and slack.
    assert.ok(result.elapsedMs < 500 + 2 * 300 + 300, `took ${Math.round(result.elapsedMs)} ms`);
    await waitFor(() => !isAlive(pid), 2000, 'the frozen worker to be killed');
    const warning = log.lines.find((line) => line.msg === 'isolate worker stopped; restarting it' && line.pid === pid);
    assert.match(String(warning?.reason), /^unresponsive/);
    await assertStillServes(backend);
  });

  test('a malformed job is refused before it reaches the worker', async () => {
    await assert.rejects(backend.run({kind: 'isolate', id: 'bad', source: '', filename: 'x.js', args: {}, limits: {...LIMITS, timeoutMs: Number.NaN}}, {signal: new AbortController().signal}),
      (error: unknown) => (error as {code?: string}).code === 'INTERNAL');
    await assert.rejects(backend.run({kind: 'isolate', id: 'bad', source: '', filename: 'x.js', args: {big: 1n}, limits: LIMITS}, {signal: new AbortController().signal}),
      (error: unknown) => (error as {code?: string}).code === 'INVALID_ARGUMENTS');
    await assertStillServes(backend);
  });
});

describe('a late but live isolate worker', () => {
  test('is pinged, not killed: a worker stalled past the backstop that then answers keeps serving', async () => {
    // A stand-in for a host too busy to run the worker for a while: it is stopped (SIGSTOP)
    // during a call and continued (SIGCONT) after the backstop fired but before the ping
    // it then sent timed out. Timeline, in ms from the call: deadline 300, backstop and
    // ping at 300 + 400, continue at 900, the ping would time out at 1100.
    const {backend} = await startBackend({backstopGraceMs: 400});
    const [pid] = backend.workerPids();
    assert.ok(pid);
    let stopped = false;
    try {
      const call = run(backend, 'export default () => { for (;;); }', {limits: {timeoutMs: 300}});
      await sleep(100);
      process.kill(pid, 'SIGSTOP');
      stopped = true;
      await sleep(800);
      process.kill(pid, 'SIGCONT');
      stopped = false;
      const result = await call;
      assert.equal(result.timedOut, true, JSON.stringify(result));
      assert.deepEqual(backend.workerPids(), [pid], 'the worker was not killed');
      assert.equal(backend.stats().restarts, 0);
      await assertStillServes(backend);
    } finally {
      if (stopped) process.kill(pid, 'SIGCONT');
      await backend.close();
    }
  });
});

describe('several isolate workers', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 2}));
  });
  after(() => backend.close());

  test('calls spread over the workers, and the calls of a killed worker run again and complete', async () => {
    const pids = backend.workerPids();
    assert.equal(pids.length, 2);
    const calls = Array.from({length: 2}, (_, n) => run(backend, SLEEPY, {args: {n, ms: 600}, limits: {timeoutMs: 5000}}));
    await sleep(150);
    process.kill(pids[0] as number, 'SIGKILL');
    const results = await Promise.all(calls);
    results.forEach((result, n) => assert.equal(result.stdout, String(n), JSON.stringify(result)));
    assert.equal(backend.stats().reruns, 1, 'only the killed worker\'s call ran again');
    await assertStillServes(backend);
    await waitFor(() => backend.workerPids().length === 2 && !backend.workerPids().includes(pids[0] as number), 2000, 'a replacement');
  });
});

describe('isolate worker that cannot start', () => {
  test('calls reject BACKEND_UNAVAILABLE at once and the backend does not respawn in a loop while idle', async () => {
    const log = captureLog();
    const backend = new IsolateBackend({logger: log.logger, nodePath: '/nonexistent/bin/node'});
    try {
      const started = performance.now();
      await assert.rejects(run(backend, 'export default () => 1'), (error: unknown) => {
        assert.equal((error as {code?: string}).code, 'BACKEND_UNAVAILABLE');
        assert.equal((error as Error).message, 'The isolate worker could not be started.');
        return true;
      });
      assert.ok(performance.now() - started < 2000);
      await sleep(300);
      assert.equal(log.lines.filter((line) => line.msg === 'isolate worker failed to start; the next call will try again').length, 1);
      await assert.rejects(backend.start(), (error: unknown) => (error as {code?: string}).code === 'BACKEND_UNAVAILABLE');
      assert.deepEqual(backend.workerPids(), []);
    } finally {
      await backend.close();
    }
  });
});

describe('isolate backend shutdown', () => {
  test('close() ends calls in flight with BACKEND_UNAVAILABLE, kills the workers and refuses later calls', async () => {
    const {backend} = await startBackend({workers: 2});
    const pids = backend.workerPids();
    const call = run(backend, 'export default () => { for (;;); }', {limits: {timeoutMs: 10_000}});
    const rejected = assert.rejects(call, (error: unknown) => (error as {code?: string}).code === 'BACKEND_UNAVAILABLE');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await backend.close();
    await rejected;
    for (const pid of pids) assert.equal(isAlive(pid), false, `worker ${pid} is gone`);
    await assert.rejects(run(backend, 'export default () => 1'), (error: unknown) => (error as {code?: string}).code === 'BACKEND_UNAVAILABLE');
    await backend.close();
  });

  test('an idle backend does not keep the process alive, and tool output never reaches its stdout', async () => {
    // A child process that uses the backend and then simply returns from its module: it
    // must exit on its own, with exactly its own stdout.
    const backendUrl = new URL('../../../src/backends/isolate/isolate-backend.ts', import.meta.url).href;
    const script = `
      import {IsolateBackend} from ${JSON.stringify(backendUrl)};
      const backend = new IsolateBackend({logger: (await import('pino')).pino({level: 'silent'})});
      const limits = {timeoutMs: 1000, memoryMb: 32, outputBytes: 65536};
      const result = await backend.run({kind: 'isolate', id: 'x', source: 'export default () => { console.log("TOOL-CONSOLE"); return "TOOL-RESULT"; }', filename: 't.js', args: {}, limits}, {signal: new AbortController().signal});
      process.stdout.write(result.stderr.includes('TOOL-CONSOLE') && result.stdout === '"TOOL-RESULT"' ? 'ok\\n' : 'bad\\n');
    `;
    const child = spawn(process.execPath, ['--no-node-snapshot', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('../../..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    // Generous: on a busy host, starting Node, its worker and the first isolate takes seconds.
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearTimeout(timer);
    assert.equal(code, 0, `exit code ${code}; stderr: ${stderr}`);
    assert.equal(stdout, 'ok\n');
  });
});
