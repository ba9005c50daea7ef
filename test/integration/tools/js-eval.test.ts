import assert from 'node:assert/strict';
import {before, describe, test} from 'node:test';
import {errorOfResult, runModule, valueOfResult} from '../../support/isolate-backend.ts';
import {bundle, ensureBuilt, isolateProfile, toolOf, useToolBackend, validator} from './helpers.ts';

/** js__eval in the isolate backend under isolate-standard's limits. */

before(ensureBuilt);
const {backend, callTool, valueOf, thrownBy} = useToolBackend();

const run = (code: string) => valueOf('js', 'eval', {code});
const uncaught = (code: string) => thrownBy('js', 'eval', {code});

describe('js__eval', () => {
  test('returns the completion value of the last expression with the console lines printed', async () => {
    const value = await run('const xs = [3, 1, 2];\nconsole.log("sorting", xs.length, {n: 1});\nconsole.warn("careful");\nxs.sort().join(",")');
    assert.deepEqual(value, {type: 'string', result: '1,2,3', console: ['sorting 3 {"n":1}', 'warn: careful']});
  });

  test('awaits a returned promise and keeps capturing console output across awaits', async () => {
    const value = await run(`(async () => {
      console.log('start');
      const x = await Promise.resolve(20);
      await null;
      console.error('after await', x);
      return {sum: x + 22, when: 'later'};
    })()`);
    assert.deepEqual(value, {type: 'object', result: {sum: 42, when: 'later'}, console: ['start', 'error: after await 20']});
  });

  test('reports values JSON cannot represent with their type and a description', async () => {
    assert.deepEqual(await run('undefined'), {type: 'undefined', console: []});
    assert.deepEqual(await run('2n ** 70n'), {type: 'bigint', result: '1180591620717411303424n', console: []});
    assert.deepEqual(await run('0 / 0'), {type: 'number', result: 'NaN', console: []});
    assert.deepEqual(await run('function add(a, b) { return a + b }; add'), {type: 'function', result: '[Function: add]', console: []});
    assert.deepEqual(await run('class Point {}; Point'), {type: 'function', result: '[class Point]', console: []});
    assert.deepEqual(await run('const o = {}; o.self = o; o'), {type: 'object', result: '[object Object] (not JSON-serializable)', console: []});
    assert.deepEqual(await run('Symbol("s")'), {type: 'symbol', result: 'Symbol(s)', console: []});
    assert.deepEqual(await run('null'), {type: 'object', result: null, console: []});
  });

  test('its result conforms to the declared outputSchema', async () => {
    const conforms = validator('js', 'eval', 'outputSchema');
    for (const code of ['1', 'undefined', '({a: [1, 2]})', 'console.log(1); "x"', '10n', '(async () => 5)()']) {
      assert.ok(conforms(await run(code)), `output of ${code} conforms`);
    }
  });

  test('a throw fails the call with "Uncaught <Name>: <message>" and replays the lines printed before it', async () => {
    const threw = await callTool('js', 'eval', {code: 'console.log("before"); null.x'});
    assert.match(errorOfResult(threw), /^Error: Uncaught TypeError: Cannot read properties of null/);
    assert.equal(threw.stderr, 'before\n', 'the line printed before the throw reaches the runtime console');
    assert.equal(await uncaught('throw "plain string"'), 'Error: Uncaught plain string');
    assert.equal(await uncaught('(async () => { throw new RangeError("late") })()'), 'Error: Uncaught RangeError: late');
    assert.match(await uncaught('let = ;'), /^Error: Uncaught SyntaxError: /);
  });

  test('the code sees a bare isolate: no require, process, fetch, timers or import', async () => {
    const value = await run('[typeof require, typeof process, typeof fetch, typeof setTimeout, typeof TextEncoder].join()');
    assert.deepEqual(value, {type: 'string', result: 'undefined,undefined,undefined,undefined,undefined', console: []});
    assert.match(await uncaught('import("node:fs")'), /^Error: Uncaught /);
  });

  test('the console is restored after the call, even when the code replaced it', async () => {
    const out = await callTool('js', 'eval', {code: 'globalThis.console = {log() { throw new Error("hijacked") }}; 1'});
    assert.deepEqual(valueOfResult(out), {type: 'number', result: 1, console: []});
    assert.equal(out.stderr, '', 'nothing leaked to the runtime console');
  });

  test('console capture is capped and says how much it dropped', async () => {
    const value = await run('for (let i = 0; i < 5000; i++) console.log(i); "done"') as {console: string[]};
    assert.equal(value.console.length, 1001);
    assert.equal(value.console[999], '999');
    assert.match(value.console[1000]!, /4000 more console call\(s\) dropped/);
    const big = await run('console.log("x".repeat(300000)); 1') as {console: string[]};
    assert.ok(big.console[0]!.length <= 100_000 + 20, 'a long line is truncated to the character cap');
    assert.match(big.console[0]!, /\[line truncated\]$/);
  });

  test('an endless loop is not swallowed: the isolate timeout ends it and a fresh isolate still answers', async () => {
    const source = await bundle('js', 'eval');
    const {limits} = isolateProfile(toolOf('js', 'eval').profile);
    const looped = await runModule(backend, source, {code: 'for (;;) {}'}, {...limits, timeoutMs: 300});
    assert.equal(looped.failed, true);
    assert.equal(looped.timedOut, true, `ended by the deadline: ${JSON.stringify(looped)}`);
    assert.deepEqual(await run('6 * 7'), {type: 'number', result: 42, console: []});
  });

  test('inputSchema accepts code and rejects anything else', () => {
    const valid = validator('js', 'eval');
    assert.ok(valid({code: '1 + 1'}));
    assert.ok(valid({code: 'x'.repeat(100_000)}));
    for (const bad of [{}, {code: ''}, {code: 1}, {code: '1', timeout: 10}, {code: 'x'.repeat(100_001)}, null, 'code']) {
      assert.equal(valid(bad), false, `rejects ${JSON.stringify(bad)?.slice(0, 60)}`);
    }
  });
});
