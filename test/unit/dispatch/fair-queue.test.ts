// FairQueue: deficit-round-robin order between principals, weights, cancellation and longest-queue drop, with fake tasks.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {FairQueue} from '../../../src/dispatch/fair-queue.ts';

/** A task that records its label when it starts and ends when `release()` is called. */
function gate() {
  const order: string[] = [];
  const pending: (() => void)[] = [];
  const task = (label: string) => () => new Promise<string>((resolve) => {
    order.push(label);
    pending.push(() => resolve(label));
  });
  /** Ends the oldest running task and lets the queue start the next one. */
  const release = async () => {
    pending.shift()?.();
    await new Promise((r) => setImmediate(r));
  };
  return {order, task, release, pending};
}

const never = new AbortController().signal;
const full = () => new Error('full');

/** Ends every running task until nothing waits or runs. */
async function drain(q: FairQueue, g: ReturnType<typeof gate>): Promise<void> {
  for (let i = 0; i < 10_000 && (q.running > 0 || q.queued > 0); i++) await g.release();
}

test('one principal (stdio) is served first come, first served', async () => {
  const q = new FairQueue(1, 100);
  const g = gate();
  const calls = Array.from({length: 6}, (_, i) => q.add('local', g.task(`c${i}`), never, full));
  await drain(q, g);
  await Promise.all(calls);
  assert.deepEqual(g.order, ['c0', 'c1', 'c2', 'c3', 'c4', 'c5']);
});

test('waiting principals take turns one call each (equal weights), whoever queued first', async () => {
  const q = new FairQueue(1, 100);
  const g = gate();
  const calls = [q.add('a', g.task('a0'), never, full)];
  for (let i = 1; i < 4; i++) calls.push(q.add('a', g.task(`a${i}`), never, full));
  for (let i = 0; i < 2; i++) calls.push(q.add('b', g.task(`b${i}`), never, full));
  calls.push(q.add('c', g.task('c0'), never, full));
  await drain(q, g);
  await Promise.all(calls);
  // a0 ran at once; then the round a, b, c, a, b, a.
  assert.deepEqual(g.order, ['a0', 'a1', 'b0', 'c0', 'a2', 'b1', 'a3']);
});

test('a principal of weight 2 starts two calls per round, one of weight 0.5 one every second round', async () => {
  const weights: Record<string, number> = {heavy: 2, light: 0.5};
  const q = new FairQueue(1, 100, (p) => weights[p] ?? 1);
  const g = gate();
  const calls = [q.add('x', g.task('x-first'), never, full)];
  for (let i = 0; i < 4; i++) calls.push(q.add('heavy', g.task('h'), never, full));
  for (let i = 0; i < 4; i++) calls.push(q.add('light', g.task('l'), never, full));
  for (let i = 0; i < 4; i++) calls.push(q.add('one', g.task('o'), never, full));
  await drain(q, g);
  await Promise.all(calls);
  // Rounds: [h h, light 0.5 carried, o] [h h, l, o] [light 0.5 carried, o] [l, o].
  assert.deepEqual(g.order.slice(1, 10), ['h', 'h', 'o', 'h', 'h', 'l', 'o', 'o', 'l']);
});

test('a waiting call whose signal aborts leaves the queue with that reason and never starts', async () => {
  const q = new FairQueue(1, 100);
  const g = gate();
  const first = q.add('a', g.task('first'), never, full);
  const abort = new AbortController();
  const second = q.add('b', g.task('second'), abort.signal, full);
  assert.equal(q.queued, 1);
  abort.abort(new Error('cancelled'));
  await assert.rejects(second, /cancelled/);
  assert.equal(q.queued, 0);
  await drain(q, g);
  await first;
  assert.deepEqual(g.order, ['first']);
});

test('a full queue refuses the principal that holds the most waiting calls, never a quieter one', async () => {
  const q = new FairQueue(1, 4);
  const g = gate();
  const settled: Promise<PromiseSettledResult<string>>[] = [];
  const add = (p: string, label: string) => settled.push(q.add(p, g.task(label), never, full).then(
    (value) => ({status: 'fulfilled', value}) as const, (reason: unknown) => ({status: 'rejected', reason}) as const));
  add('flood', 'running');
  for (let i = 0; i < 4; i++) add('flood', `f${i}`);
  add('flood', 'f-refused');          // flood holds every waiting place: refused at once
  add('quiet', 'q0');                 // pushes flood's newest waiting call (f3) out
  assert.equal(q.queued, 4);
  assert.equal(q.queuedOf('quiet'), 1);
  await drain(q, g);
  const results = await Promise.all(settled);
  const refused = results.map((r, i) => (r.status === 'rejected' ? i : -1)).filter((i) => i >= 0);
  assert.deepEqual(refused, [4, 5], 'f3 (pushed out) and f-refused were refused; q0 was not');
  assert.ok(g.order.includes('q0'));
  assert.ok(g.order.indexOf('q0') <= 2, `the quiet call starts within one round: ${g.order.join(' ')}`);
});

test('clear refuses every waiting call and onIdle resolves once the running ones end', async () => {
  const q = new FairQueue(1, 10);
  const g = gate();
  const running = q.add('a', g.task('r'), never, full);
  const waiting = [q.add('a', g.task('w1'), never, full), q.add('b', g.task('w2'), never, full)];
  q.clear(() => new Error('stopped'));
  for (const w of waiting) await assert.rejects(w, /stopped/);
  const idle = q.onIdle();
  await g.release();
  await idle;
  assert.equal(await running, 'r');
  assert.deepEqual(g.order, ['r']);
});
