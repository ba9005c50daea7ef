/**
 * Prototype pollution through what crosses out of the isolate: the result JSON, the
 * error name and message. The host parses the result as it would for a client, and
 * its own prototypes must stay clean.
 */
// invariant: isolate:prototypes:host-clean
import assert from 'node:assert/strict';
import {after, afterEach, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, run, startBackend} from '../../integration/isolate/helpers.ts';

const assertHostClean = (): void => {
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(([] as unknown as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
  assert.equal(typeof (Object.prototype as Record<string, unknown>).toJSON, 'undefined');
};

describe('prototype pollution', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());
  afterEach(assertHostClean);

  test('a result with a __proto__ key does not pollute the host when parsed', async () => {
    const result = await run(backend, 'export default () => JSON.parse(\'{"__proto__": {"polluted": 1}, "a": {"__proto__": {"polluted": 2}}}\')');
    assert.equal(result.failed, false);
    const parsed = JSON.parse(result.stdout) as Record<string, unknown>;
    assert.ok(Object.prototype.hasOwnProperty.call(parsed, '__proto__'), '__proto__ stays an own data key');
    assertHostClean();
    await assertStillServes(backend);
  });

  test('a result with constructor and prototype keys does not pollute the host when parsed', async () => {
    const result = await run(backend, 'export default () => ({constructor: {prototype: {polluted: 1}}, prototype: {polluted: 1}, __proto__: {polluted: 3}})');
    assert.equal(result.failed, false, JSON.stringify(result));
    const parsed = JSON.parse(result.stdout) as Record<string, unknown>;
    assert.deepEqual(parsed.constructor, {prototype: {polluted: 1}});
    assertHostClean();
    // Merging the result the way naive code would must not reach Object.prototype either.
    const target: Record<string, unknown> = {};
    Object.assign(target, parsed);
    assertHostClean();
    await assertStillServes(backend);
  });

  test('a thrown error named __proto__ or with object-ish fields arrives as plain strings', async () => {
    const result = await run(backend, 'export default () => { const e = new Error("m"); Object.defineProperty(e, "name", {value: "__proto__"}); throw e; }');
    assert.equal(result.failed, true);
    assert.deepEqual(result.error, {name: '__proto__', message: 'm'});
    assert.equal(Object.getPrototypeOf(result.error), Object.prototype);
    const thrown = await run(backend, 'export default () => { throw {name: {polluted: 1}, message: {toString() { return "x"; }}, __proto__: {polluted: 1}}; }');
    assert.equal(typeof thrown.error?.name, 'string');
    assert.equal(typeof thrown.error?.message, 'string');
    assertHostClean();
  });

  test('a tool that pollutes its own Object.prototype cannot change the result envelope', async () => {
    const source = `export default () => {
      Object.prototype.polluted = 1;
      Object.defineProperty(Object.prototype, 'stdout', {get() { return 'forged'; }, set() {}, configurable: true});
      Object.defineProperty(Object.prototype, 'truncated', {get() { return false; }, set() {}, configurable: true});
      Object.defineProperty(Object.prototype, 'error', {get() { return {name: 'Forged', message: 'forged'}; }, set() {}, configurable: true});
      Array.prototype.push = () => { throw new Error('push'); };
      return {ok: true};
    }`;
    const result = await run(backend, source);
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), {ok: true});
    assert.equal(result.error, undefined);
    assertHostClean();
    await assertStillServes(backend);
  });
});
