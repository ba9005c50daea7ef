import assert from 'node:assert/strict';
import {before, describe, test} from 'node:test';
import {runModule} from '../../support/isolate-backend.ts';
import {bundle, ensureBuilt, isolateProfile, toolOf, useToolBackend, validator} from './helpers.ts';

/** math__evaluate (mathjs) in the isolate backend under its profile's limits. */

before(ensureBuilt);
const {backend, valueOf, thrownBy} = useToolBackend();

const evaluate = (expression: string, precision?: number) =>
  valueOf('math', 'evaluate', precision === undefined ? {expression} : {expression, precision});
const refusal = (expression: string) => thrownBy('math', 'evaluate', {expression});

describe('math__evaluate', () => {
  test('converts units', async () => {
    assert.deepEqual(await evaluate('2 inch to cm'), {result: '5.08 cm', type: 'Unit'});
    assert.deepEqual(await evaluate('5 kg * 2 m/s^2 to N'), {result: '10 N', type: 'Unit'});
    assert.deepEqual(await evaluate('100 km/h to m/s', 4), {result: '27.78 m / s', type: 'Unit'});
    assert.deepEqual(await evaluate('sin(30 deg)'), {result: '0.5', type: 'number'});
  });

  test('computes with matrices', async () => {
    assert.deepEqual(await evaluate('det([[1,2],[3,4]])'), {result: '-2', type: 'number'});
    assert.deepEqual(await evaluate('inv([1,2;3,4])'), {result: '[[-2, 1], [1.5, -0.5]]', type: 'DenseMatrix'});
    assert.deepEqual(await evaluate('[1,2;3,4] * [5;6]'), {result: '[[17], [39]]', type: 'DenseMatrix'});
  });

  test('numbers, precision, complex and big numbers, variables and functions', async () => {
    assert.deepEqual(await evaluate('0.1 + 0.2'), {result: '0.3', type: 'number'});
    assert.deepEqual(await evaluate('0.1 + 0.2', 17), {result: '0.30000000000000004', type: 'number'});
    assert.deepEqual(await evaluate('pi', 5), {result: '3.1416', type: 'number'});
    assert.deepEqual(await evaluate('sqrt(-4)'), {result: '2i', type: 'Complex'});
    assert.deepEqual(await evaluate('bignumber("0.1") + bignumber("0.2")'), {result: '0.3', type: 'BigNumber'});
    assert.deepEqual(await evaluate('f(x) = x^2; f(3)'), {result: '[9]', type: 'ResultSet'});
    assert.deepEqual(await evaluate('a = 2\nb = a * 21\nb'), {result: '[2, 42, 42]', type: 'ResultSet'});
    assert.deepEqual(await evaluate('mean([1, 2, 3, 4])'), {result: '2.5', type: 'number'});
    assert.deepEqual(await evaluate('1 / 0'), {result: 'Infinity', type: 'number'});
  });

  test('its results conform to the declared outputSchema', async () => {
    const conforms = validator('math', 'evaluate', 'outputSchema');
    for (const expression of ['1', '2 inch to cm', 'det([[1,2],[3,4]])', 'sqrt(-1)', 'x = 1; x']) {
      assert.ok(conforms(await evaluate(expression)), expression);
    }
  });

  test('bad expressions fail with mathjs\'s message', async () => {
    assert.match(await refusal('1 +'), /^Error: Unexpected end of expression/);
    assert.match(await refusal('foo(1)'), /^Error: Undefined function foo/);
    assert.match(await refusal('2 inch to kg'), /^Error: Units do not match/);
  });

  test('functions the mathjs security docs name are disabled for expressions', async () => {
    for (const expression of ['import({x: 1})', 'createUnit("furlongish", "220 yard")', 'evaluate("1+1")', 'parse("1+1")',
      'compile("1")', 'simplify("2x + x")', 'derivative("x^2", "x")', 'resolve(parse("x"), {x: 1})', 'config({number: "BigNumber"})',
      'rationalize("1/x")', 'parser()']) {
      assert.match(await refusal(expression), /is disabled$/, expression);
    }
    assert.deepEqual(await evaluate('1 + 1'), {result: '2', type: 'number'}, 'still answers a normal call afterwards');
  });

  test('an expression cannot reach the JavaScript Function constructor', async () => {
    for (const expression of ['cos.constructor("return 1")', 'f(x) = x; f.constructor("return 1")', '[].constructor',
      'unit("5cm").constructor', 'cos["constructor"]', 'a = {}; a.__proto__']) {
      assert.match(await refusal(expression), /^Error: No access to (property|method) "(constructor|__proto__)"$/, expression);
    }
    assert.deepEqual(await evaluate('2 ^ 10'), {result: '1024', type: 'number'});
  });

  test('a memory bomb ends at the isolate heap limit, not in the host', async () => {
    // The profile's heap limit, with a deadline far above what filling it takes even on a
    // busy host (it took 1-6 s here), so that only the heap limit can end the call.
    const {limits} = isolateProfile(toolOf('math', 'evaluate').profile);
    const bomb = await runModule(backend, await bundle('math', 'evaluate'), {expression: 'zeros(20000, 20000)'},
      {...limits, timeoutMs: 60_000, cpuTimeMs: 60_000});
    assert.equal(bomb.failed, true);
    assert.equal(bomb.outOfMemory, true, `ended by the heap limit: ${JSON.stringify({...bomb, stdout: bomb.stdout.slice(0, 200)})}`);
    assert.deepEqual(await evaluate('3 * 3'), {result: '9', type: 'number'}, 'a fresh isolate still answers');
  });

  test('inputSchema accepts an expression with optional precision and rejects anything else', () => {
    const valid = validator('math', 'evaluate');
    assert.ok(valid({expression: '1 + 1'}));
    assert.ok(valid({expression: '1 + 1', precision: 1}));
    assert.ok(valid({expression: '1 + 1', precision: 64}));
    for (const bad of [{}, {expression: ''}, {expression: 1}, {expression: '1', precision: 0}, {expression: '1', precision: 65},
      {expression: '1', precision: 2.5}, {expression: '1', scope: {x: 1}}, {expression: 'x'.repeat(10_001)}]) {
      assert.equal(valid(bad), false, `rejects ${JSON.stringify(bad).slice(0, 60)}`);
    }
  });
});
