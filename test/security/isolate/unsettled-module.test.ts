/**
 * A tool's default export must not be called before its module has finished evaluating
 * (issue 11 item 7, red team F4): `export default function` is hoisted (initialised at
 * instantiation), so a module whose top-level await never settles used to be called and
 * report success. It must end TIMEOUT at its own deadline; a top-level await that does
 * settle is still waited for and the call succeeds.
 */
// invariant: isolate:module:settled-before-call
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {assertStillServes, GENEROUS_TIMEOUT_MS, run, startBackend} from '../../integration/isolate/helpers.ts';

const TIMEOUT_MS = 800;
/** Every call here ends by its deadline plus the idle probe, the backstop and hops on a busy host. */
const BOUND_MS = TIMEOUT_MS + 25_000;

const NEVER_SETTLING: Record<string, string> = {
  'a hoisted default function': 'await new Promise(() => {}); export default function () { return "never"; }',
  'a hoisted default function after console output': 'console.log("started"); await new Promise(() => {}); export default function () { return "never"; }',
  'a hoisted default async function': 'await new Promise(() => {}); export default async function () { return "never"; }',
  'a hoisted named function re-exported as default': 'await new Promise(() => {}); function f() { return "never"; } export {f as default};',
  'a never-settling await after settled ones': 'await null; await Promise.resolve(1); await new Promise(() => {}); export default function () { return "never"; }',
};

describe('a module whose top-level await never settles', () => {
  let backend: IsolateBackend;
  before(async () => {
    ({backend} = await startBackend({workers: 1}));
  });
  after(() => backend.close());

  for (const [name, source] of Object.entries(NEVER_SETTLING)) {
    test(`${name}: ends TIMEOUT, its default export never called`, async () => {
      const result = await run(backend, source, {limits: {timeoutMs: TIMEOUT_MS}});
      assert.equal(result.failed, true, `the call succeeded: ${JSON.stringify(result)}`);
      assert.equal(result.timedOut, true, JSON.stringify(result));
      assert.ok(!result.stdout.includes('never'), JSON.stringify(result));
      assert.ok(result.elapsedMs <= BOUND_MS, `the call took ${Math.round(result.elapsedMs)} ms`);
      await assertStillServes(backend);
    });
  }

  test('a top-level await that settles is waited for: the call succeeds with the settled state', async () => {
    const source = 'let ready = false; await null; await Promise.resolve(); ready = true; export default function () { return ready; }';
    const result = await run(backend, source, {limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
    assert.equal(result.failed, false, JSON.stringify(result));
    assert.equal(result.stdout, 'true');
  });

  test('a module without a default export still fails with its clear error', async () => {
    const result = await run(backend, 'export const x = 1;', {limits: {timeoutMs: GENEROUS_TIMEOUT_MS}});
    assert.equal(result.failed, true, JSON.stringify(result));
    assert.match(result.error?.message ?? JSON.stringify(result), /no default export function/);
  });
});
