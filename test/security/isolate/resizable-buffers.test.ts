/**
 * Resizable ArrayBuffers and growable SharedArrayBuffers: isolated-vm's `memoryLimit`
 * does not count their memory (seen with isolated-vm 7.0.1: a 32 MB isolate held 120 MB
 * in four of them and returned success), and filling them cannot be interrupted. Every
 * route to one (the global, `buffer.constructor`, Reflect.construct, a subclass, a
 * species lookup, growing one after creation) must end with an error or outOfMemory,
 * never with success holding more than the limit; the worker keeps answering.
 */
// invariant: isolate:memory:resizable-buffers-refused
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

/** Four buffers of 30 MB each, filled, in a 32 MB isolate: 120 MB if the attack works. */
const HOLD = 'const keep = []; for (let i = 0; i < 4; i++) { const b = MAKE; new Uint8Array(b).fill(1); keep.push(b); } return keep.length;';
const attack = (make: string, prelude = ''): string => `export default () => { ${prelude} ${HOLD.replace('MAKE', make)} }`;
const MB30 = '30 * 2 ** 20';

const ATTACKS: Record<string, string> = {
  'a resizable ArrayBuffer created at its maximum': attack(`new ArrayBuffer(${MB30}, {maxByteLength: ${MB30}})`),
  'a resizable ArrayBuffer grown with resize()': attack(`(() => { const b = new ArrayBuffer(0, {maxByteLength: ${MB30}}); b.resize(${MB30}); return b; })()`),
  'a resizable ArrayBuffer grown by transfer()': attack(`new ArrayBuffer(1, {maxByteLength: ${MB30}}).transfer(${MB30})`),
  'a growable SharedArrayBuffer grown with grow()': attack(`(() => { const b = new SharedArrayBuffer(0, {maxByteLength: ${MB30}}); b.grow(${MB30}); return b; })()`),
  'a growable SharedArrayBuffer created at its maximum': attack(`new SharedArrayBuffer(${MB30}, {maxByteLength: ${MB30}})`),
  'the built-in reached through buffer.constructor': attack(`new C(${MB30}, {maxByteLength: ${MB30}})`, 'const C = new Uint8Array(1).buffer.constructor;'),
  'the built-in reached through a SharedArrayBuffer\'s constructor': attack(`new C(${MB30}, {maxByteLength: ${MB30}})`, 'const C = new Int32Array(new SharedArrayBuffer(4)).buffer.constructor;'),
  'Reflect.construct with options': attack(`Reflect.construct(ArrayBuffer, [${MB30}, {maxByteLength: ${MB30}}])`),
  'a subclass of ArrayBuffer': attack(`new X(${MB30}, {maxByteLength: ${MB30}})`, 'class X extends ArrayBuffer {}'),
  'a resize method borrowed from the prototype': attack(`(() => { const b = new ArrayBuffer(0, {maxByteLength: ${MB30}}); ArrayBuffer.prototype.resize.call(b, ${MB30}); return b; })()`),
};

describe('resizable and growable buffers', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  for (const [name, source] of Object.entries(ATTACKS)) {
    test(`${name} ends with an error or outOfMemory, never success`, async () => {
      const result = await run(backend, source, {limits: {memoryMb: 32, timeoutMs: 3000}});
      assert.equal(result.failed, true, `the attack succeeded: ${JSON.stringify(result)}`);
      assert.ok(result.outOfMemory || result.error !== undefined, JSON.stringify(result));
      await assertStillServes(backend);
    });
  }

  test('fixed-length buffers, subclasses, slices and species still work', async () => {
    const result = await run(backend, `export default () => {
      class Y extends ArrayBuffer {}
      const b = new ArrayBuffer(8);
      return [b.byteLength, b.resizable, new Y(4) instanceof Y, new Y(4) instanceof ArrayBuffer, b.slice(0, 2).byteLength,
        ArrayBuffer.isView(new Uint8Array(1)), new Uint8Array(1).buffer instanceof ArrayBuffer, new SharedArrayBuffer(4).growable,
        b.transfer(16).byteLength, ArrayBuffer.name, new Uint8Array(1).buffer.constructor === ArrayBuffer];
    }`);
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), [8, false, true, true, 2, true, true, false, 16, 'ArrayBuffer', true]);
  });
});
