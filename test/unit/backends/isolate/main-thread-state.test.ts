/**
 * isMainThreadRunnable tells a process whose main thread waits for a CPU (runnable) from
 * one that is stopped (SIGSTOP) or asleep, and says nothing about a process that is gone.
 */
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {once} from 'node:events';
import {after, describe, test} from 'node:test';
import {isMainThreadRunnable} from '../../../../src/backends/isolate/main-thread-state.ts';

describe('isMainThreadRunnable', () => {
  const children: Array<ReturnType<typeof spawn>> = [];
  after(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    }
  });
  const waitState = async (pid: number, want: boolean): Promise<boolean | undefined> => {
    let state: boolean | undefined;
    for (let i = 0; i < 100; i++) {
      state = isMainThreadRunnable(pid);
      if (state === want) return state;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return state;
  };

  test('this process, reading its own state, is runnable', () => {
    assert.equal(isMainThreadRunnable(process.pid), true);
  });

  test('a sleeping process is not; a stopped one is not; a busy one is', async () => {
    const sleeper = spawn('sleep', ['30'], {stdio: 'ignore'});
    children.push(sleeper);
    assert.ok(sleeper.pid);
    assert.equal(await waitState(sleeper.pid, false), false);
    const busy = spawn('bash', ['-c', 'while :; do :; done'], {stdio: 'ignore'});
    children.push(busy);
    assert.ok(busy.pid);
    assert.equal(await waitState(busy.pid, true), true);
    busy.kill('SIGSTOP');
    assert.equal(await waitState(busy.pid, false), false, 'a stopped process is not runnable');
  });

  test('a process that is gone gives undefined', async () => {
    const gone = spawn('true', [], {stdio: 'ignore'});
    assert.ok(gone.pid);
    await once(gone, 'exit');
    assert.equal(isMainThreadRunnable(gone.pid), undefined);
  });
});
