import assert from 'node:assert/strict';
import {test} from 'node:test';
import {JsonRpcLineFilter} from '../../../src/frontend/json-rpc-line-filter.ts';

/** Feeds `chunks` through a filter with a small cap; returns the lines passed on and the refusals. */
async function run(chunks: string[], maxBytes = 64): Promise<{passed: string[]; replies: Array<[unknown, number]>}> {
  const replies: Array<[unknown, number]> = [];
  const filter = new JsonRpcLineFilter((r) => void replies.push([r.id, r.error.code]), {maxBytes});
  let out = '';
  filter.on('data', (b: Buffer) => (out += b.toString()));
  const ended = new Promise((resolve) => filter.on('end', resolve));
  for (const c of chunks) filter.write(Buffer.from(c));
  filter.end();
  await ended;
  return {passed: out.split('\n').filter((l) => l !== ''), replies};
}

const list = (id: number) => JSON.stringify({jsonrpc: '2.0', id, method: 'tools/list'});

test('whole messages pass unchanged, however stdin splits them; blank lines are ignored', async () => {
  const text = `${list(1)}\n\n${list(2)}\r\n`;
  for (const size of [1, 3, 7, text.length]) {
    const chunks = text.match(new RegExp(`[\\s\\S]{1,${size}}`, 'g'))!;
    const {passed, replies} = await run(chunks);
    assert.deepEqual(passed.map((l) => (JSON.parse(l) as {id: number}).id), [1, 2], `chunks of ${size}`);
    assert.deepEqual(replies, []);
  }
});

for (const [title, line, expected] of [
  ['not JSON → -32700, id null', '{"jsonrpc":"2.0","id":3,', [null, -32700]],
  ['a batch → -32600, id null', `[${list(4)}]`, [null, -32600]],
  ['an empty batch → -32600', '[]', [null, -32600]],
  ['a scalar → -32600', '"tools/list"', [null, -32600]],
  ['no jsonrpc member → -32600 with its id', '{"id":5,"method":"tools/list"}', [5, -32600]],
  ['an object id is not echoed', '{"id":{"x":1},"method":"m"}', [null, -32600]],
  ['duplicate ids: the one JSON.parse takes (the last)', '{"id":1,"id":2,"method":5}', [2, -32600]],
] as const) {
  test(`refused: ${title}; the next message still passes`, async () => {
    const {passed, replies} = await run([`${line}\n${list(9)}\n`], 1024);
    assert.deepEqual(replies, [expected]);
    assert.deepEqual(passed, [list(9)]);
  });
}

test('a line over the cap is refused once, with id null (its last "id" is past the cap), discarded across chunks, and the next line passes', async () => {
  const big = `{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"text":"${'x'.repeat(500)}"}}`;
  const {passed, replies} = await run([big.slice(0, 40), big.slice(40, 300), `${big.slice(300)}\n${list(10)}\n`]);
  assert.deepEqual(replies, [[null, -32600]]);
  assert.deepEqual(passed, [list(10)]);
});

test('an oversized line fed one byte at a time is refused once, and the next line (also byte by byte) passes', async () => {
  const text = `{"id":77,"jsonrpc":"2.0","method":"m","params":{"t":"${'y'.repeat(300)}"}}\n${list(11)}\n`;
  const {passed, replies} = await run([...text]);
  assert.deepEqual(replies, [[null, -32600]]);
  assert.deepEqual(passed, [list(11)]);
});

test('a partial last line when stdin ends is dropped, not answered', async () => {
  const {passed, replies} = await run([`${list(1)}\n{"jsonrpc":"2.0","id":2`]);
  assert.deepEqual(passed, [list(1)]);
  assert.deepEqual(replies, []);
});

test('a malformed client response (result or error, no method) is dropped, never answered with its id', async () => {
  const lines = ['{"jsonrpc":"2.0","id":77,"result":"x"}', '{"jsonrpc":"2.0","id":78,"error":"x"}', '{"id":79,"result":{}}'];
  const {passed, replies} = await run([`${lines.join('\n')}\n${list(12)}\n`], 1024);
  assert.deepEqual(replies, []);
  assert.deepEqual(passed, [list(12)]);
});

test('an oversized line whose first "id" differs from its last is answered with id null, not the first', async () => {
  const text = `{"id":1,"method":"m","params":{"t":"${'y'.repeat(300)}"},"id":2}\n${list(13)}\n`;
  const {passed, replies} = await run([text]);
  assert.deepEqual(replies, [[null, -32600]]);
  assert.deepEqual(passed, [list(13)]);
});
