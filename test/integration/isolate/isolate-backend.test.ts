/**
 * The isolate backend's contract for well-behaved tools: results, arguments, console,
 * errors, cancellation and parallel calls.
 */
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertBounded, assertStillServes, bytes, GENEROUS_TIMEOUT_MS, run, startBackend} from './helpers.ts';

/** `run` for calls that are not hostile: a deadline no busy host reaches (GENEROUS_TIMEOUT_MS) unless the test sets one. */
const call = (backend: IsolateBackend, source: string, options: Parameters<typeof run>[2] = {}): ReturnType<typeof run> =>
  run(backend, source, {...options, limits: {timeoutMs: GENEROUS_TIMEOUT_MS, ...options.limits}});

describe('isolate backend: results', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  test('the default export receives a copy of the arguments and its return value becomes JSON on stdout', async () => {
    const result = await call(backend, 'export default (args) => ({sum: args.a + args.b, args})', {args: {a: 2, b: 3}});
    assert.deepEqual(
      {failed: result.failed, timedOut: result.timedOut, isCanceled: result.isCanceled, outOfMemory: result.outOfMemory, truncated: result.truncated},
      {failed: false, timedOut: false, isCanceled: false, outOfMemory: false, truncated: false},
    );
    assert.deepEqual(JSON.parse(result.stdout), {sum: 5, args: {a: 2, b: 3}});
    assert.equal(result.stderr, '');
    assert.equal(result.error, undefined);
    assert.ok(result.durationMs > 0 && result.durationMs < 10_000);
  });

  test('an async default export is awaited', async () => {
    const result = await call(backend, 'export default async (args) => { await null; return [args.text.toUpperCase()]; }', {args: {text: 'hé'}});
    assert.equal(result.failed, false);
    assert.equal(result.stdout, '["HÉ"]');
  });

  test('undefined arguments and an undefined result give empty stdout', async () => {
    const result = await call(backend, 'export default (args) => { if (args !== undefined) throw new Error("args"); }', {args: undefined});
    assert.equal(result.failed, false);
    assert.equal(result.stdout, '');
  });

  test('a string result is JSON text', async () => {
    const result = await call(backend, 'export default () => "line\\n\\"quoted\\""');
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.equal(JSON.parse(result.stdout), 'line\n"quoted"');
  });

  test('mutating the arguments inside the isolate does not touch the caller\'s object', async () => {
    const args = {list: [1, 2]};
    const result = await call(backend, 'export default (args) => { args.list.push(3); args.added = true; return args; }', {args});
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.stdout), {list: [1, 2, 3], added: true});
    assert.deepEqual(args, {list: [1, 2]});
  });

  test('a module without a default export function fails with a TypeError', async () => {
    const result = await call(backend, 'export const x = 1;');
    assert.equal(result.failed, true);
    assert.equal(result.error?.name, 'TypeError');
    assert.match(result.error?.message ?? '', /default export/);
  });

  test('a syntax error is reported as SyntaxError with the tool filename, not a host path', async () => {
    const result = await call(backend, 'export default () => {');
    assert.equal(result.failed, true);
    assert.equal(result.error?.name, 'SyntaxError');
    assert.doesNotMatch(result.error?.message ?? '', /\/work\/|node_modules|src\/backends/);
  });

  test('a thrown error gives failed with name and message only', async () => {
    const result = await call(backend, 'export default () => { console.log("before"); throw new RangeError("bad input"); }');
    assert.equal(result.failed, true);
    assert.equal(result.timedOut, false);
    assert.deepEqual(result.error, {name: 'RangeError', message: 'bad input'});
    assert.equal(result.stderr, 'before\n');
  });

  test('an error thrown while the module evaluates is reported and its console output kept', async () => {
    const result = await call(backend, 'console.warn("loading"); throw new TypeError("no config"); export default () => 1;');
    assert.equal(result.failed, true);
    assert.deepEqual(result.error, {name: 'TypeError', message: 'no config'});
    assert.equal(result.stderr, 'loading\n');
  });

  test('thrown non-Error values are described', async () => {
    const thrownString = await call(backend, 'export default () => { throw "plain text"; }');
    assert.deepEqual(thrownString.error, {name: 'Error', message: 'plain text'});
    const thrownObject = await call(backend, 'export default () => { throw {code: 42}; }');
    assert.equal(thrownObject.error?.name, 'Error');
    assert.equal(thrownObject.failed, true);
  });

  test('console methods are captured on stderr, formatted like util.format', async () => {
    const source = `export default () => {
      console.log('a %s b %d c %j', 'x', 42, {k: 1});
      console.info({nested: {deep: {deeper: {deepest: 1}}}, list: [1, 'two', null, undefined]});
      console.warn(1n, Symbol('s'), -0, true, null, undefined, () => 1, function named() {});
      console.error(new Map([['k', 1]]), new Set([1]), new Date(0), /re/g);
      console.debug('%% %c', 'color: red');
      const cyclic = {}; cyclic.self = cyclic; console.log(cyclic);
      console.log({get lazy() { throw new Error('getter ran'); }});
      console.group('g'); console.log('inside'); console.groupEnd(); console.log('outside');
      console.count(); console.count();
      console.assert(1 === 2, 'math');
    }`;
    const result = await call(backend, source);
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.equal(result.stderr, [
      'a x b 42 c {"k":1}',
      '{ nested: { deep: { deeper: [Object] } }, list: [ 1, "two", null, undefined ] }',
      '1n Symbol(s) -0 true null undefined [Function: (anonymous)] [Function: named]',
      'Map(1) { "k" => 1 } Set(1) { 1 } 1970-01-01T00:00:00.000Z /re/g',
      '% ',
      '{ self: [Circular] }',
      '{ lazy: [Getter] }',
      'g',
      '  inside',
      'outside',
      'default: 1',
      'default: 2',
      'Assertion failed: math',
      '',
    ].join('\n'));
  });

  test('an Error logged to the console shows its stack inside the isolate, without host paths', async () => {
    const result = await call(backend, 'export default () => { console.error(new Error("shown")); }');
    assert.match(result.stderr, /^Error: shown\n\s+at /);
    assert.doesNotMatch(result.stderr, /\/work\/|node_modules|src\/backends|file:\/\//);
  });

  test('stdout and stderr never exceed outputBytes, counting UTF-8 bytes', async () => {
    const outputBytes = 1000;
    const result = await call(backend, 'export default () => { try { for (;;) console.log("é€😀"); } catch {} return "😀".repeat(1000); }', {limits: {outputBytes}});
    assert.equal(result.truncated, true);
    assert.equal(result.failed, true);
    assert.ok(bytes(result.stdout) <= outputBytes, `stdout ${bytes(result.stdout)} bytes`);
    assert.ok(bytes(result.stderr) <= outputBytes, `stderr ${bytes(result.stderr)} bytes`);
    assert.doesNotMatch(result.stdout + result.stderr, /\uFFFD/, 'a character was split');
  });
});

describe('isolate backend: cancellation and concurrency', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend());
  });
  after(() => backend.close());

  test('aborting the signal ends a running call at once with isCanceled', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const result = await run(backend, 'export default () => { for (;;); }', {signal: controller.signal, limits: {timeoutMs: 5000}});
    assert.equal(result.isCanceled, true);
    assert.equal(result.failed, true);
    assert.equal(result.timedOut, false);
    assert.ok(result.elapsedMs < 100 + 300, `cancellation took ${Math.round(result.elapsedMs)} ms`);
    await assertStillServes(backend);
  });

  test('an already aborted signal resolves isCanceled without running the tool', async () => {
    const controller = new AbortController();
    controller.abort();
    const result = await run(backend, 'export default () => { for (;;); }', {signal: controller.signal});
    assert.equal(result.isCanceled, true);
    assertBounded(result, 0);
  });

  test('50 parallel calls each get their own arguments back', async () => {
    const source = 'export default async (args) => { let x = 0; for (let i = 0; i < 1000 * (args.n % 7); i++) x += i; await null; return {n: args.n, square: args.n * args.n}; }';
    const results = await Promise.all(Array.from({length: 50}, (_, n) => call(backend, source, {args: {n}})));
    results.forEach((result, n) => {
      assert.equal(result.failed, false, JSON.stringify(result));
      assert.deepEqual(JSON.parse(result.stdout), {n, square: n * n});
    });
  });

  test('parallel hostile and normal calls do not disturb each other', async () => {
    const hostile = run(backend, 'export default () => { for (;;); }', {limits: {timeoutMs: 600}});
    const normal = await Promise.all(Array.from({length: 10}, (_, n) => call(backend, 'export default (a) => a.n', {args: {n}})));
    normal.forEach((result, n) => assert.equal(result.stdout, String(n)));
    const timedOut = await hostile;
    assert.equal(timedOut.timedOut, true);
    assertBounded(timedOut, 600);
  });
});
