import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {JSONRPCMessage} from '@modelcontextprotocol/server';
import {REPLAY_BYTES, REPLAY_EVENTS, REPLAY_TTL_MS, SessionEventStore} from '../../../src/frontend/http/session-event-store.ts';

const note = (n: number): JSONRPCMessage => ({jsonrpc: '2.0', method: 'notifications/progress', params: {progressToken: 1, progress: n}});

async function replay(store: SessionEventStore, after: string): Promise<{stream: string; ids: string[]}> {
  const ids: string[] = [];
  const stream = await store.replayEventsAfter(after, {send: async (id) => void ids.push(id)});
  return {stream, ids};
}

test('event ids are unique across streams, and a replay sends only later events of the same stream', async () => {
  const store = new SessionEventStore();
  const a1 = await store.storeEvent('A', note(1));
  const b1 = await store.storeEvent('B', note(1));
  const a2 = await store.storeEvent('A', note(2));
  const b2 = await store.storeEvent('B', note(2));
  const a3 = await store.storeEvent('A', note(3));
  assert.equal(new Set([a1, a2, a3, b1, b2]).size, 5);
  assert.deepEqual(await replay(store, a1), {stream: 'A', ids: [a2, a3]});
  assert.deepEqual(await replay(store, b1), {stream: 'B', ids: [b2]});
  assert.equal(await store.getStreamIdForEventId(b2), 'B');
  assert.equal(await store.getStreamIdForEventId('A.999'), undefined, 'an id never issued is unknown');
  await assert.rejects(replay(store, 'A.999'));
});

test('the store is bounded by count, bytes and age', async () => {
  let now = 0;
  const store = new SessionEventStore(() => now);
  for (let i = 0; i < REPLAY_EVENTS + 50; i++) await store.storeEvent('S', note(i));
  assert.equal(store.size, REPLAY_EVENTS);
  const big = {jsonrpc: '2.0', method: 'x', params: {blob: 'x'.repeat(REPLAY_BYTES / 4)}} as JSONRPCMessage;
  for (let i = 0; i < 8; i++) await store.storeEvent('S', big);
  assert.ok(store.size <= 4, `at most ~${REPLAY_BYTES} bytes kept (${store.size} events)`);
  const old = await store.storeEvent('S', note(1));
  now += REPLAY_TTL_MS + 1;
  await store.storeEvent('S', note(2));
  assert.equal(await store.getStreamIdForEventId(old), undefined, 'expired events cannot be resumed');
});
