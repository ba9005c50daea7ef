import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {ExecutionResult} from '../../../src/backends/backend.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {errorResult, failureOf, successResult} from '../../../src/frontend/to-tool-result.ts';
import {compileJsonSchema} from '../../../src/policy/json-schema.ts';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import type {ToolDefinition} from '../../../src/policy/tool-definition.ts';

const profile = parseProfile('/p/tiny.json', JSON.stringify({name: 'tiny', backend: 'isolate', limits: {timeoutMs: 2000, memoryMb: 32, outputBytes: 65536}}));
const box = parseProfile('/p/box.json', JSON.stringify({name: 'box', backend: 'container',
  limits: {timeoutMs: 1000, memoryMb: 64, cpus: 0.5, pids: 16, outputBytes: 1024}, commands: ['cat']}));
const inputSchema = {type: 'object'};
const tool = (over: Partial<ToolDefinition> = {}): ToolDefinition => ({
  name: 'pkg__t', packageName: 'pkg', packageVersion: '1.0.0', toolName: 't', description: 'd', inputSchema, profile,
  validateInput: compileJsonSchema(inputSchema), isolate: {source: '', filename: 'pkg/t.js'}, packageDir: '/x', ...over,
});
const containerTool = (output: 'text' | 'json') => tool({profile: box, isolate: undefined, container: {image: 'i', command: ['cat'], output}});
const run = (extra: Partial<ExecutionResult>): ExecutionResult => ({
  failed: false, timedOut: false, isCanceled: false, outOfMemory: false, truncated: false, stdout: '', stderr: '', durationMs: 1, ...extra,
});

for (const [title, result, code, pattern] of [
  ['a timeout names the limit and the profile', run({failed: true, timedOut: true}), 'TIMEOUT', /time limit of 2000 ms \(profile "tiny"\)/],
  ['out of memory names the limit', run({failed: true, outOfMemory: true}), 'MEMORY_LIMIT', /memory limit of 32 MB/],
  ['truncation names the output limit', run({failed: true, truncated: true}), 'OUTPUT_LIMIT', /more than 65536 bytes/],
  ['a thrown error is TOOL_FAILED with its message', run({failed: true, error: {name: 'TypeError', message: 'x is not a function'}}), 'TOOL_FAILED', /TypeError: x is not a function/],
  ['cancellation wins over everything', run({failed: true, isCanceled: true, timedOut: true}), 'CANCELLED', /cancelled/],
  ['a timeout wins over truncation', run({failed: true, timedOut: true, truncated: true}), 'TIMEOUT', /time limit/],
] as const) {
  test(`failure mapping: ${title}`, () => {
    const failure = failureOf(tool(), result);
    assert.ok(failure);
    assert.equal(failure.code, code);
    assert.match(failure.message, pattern);
  });
}

test('a non-zero container exit is TOOL_FAILED with the exit code and the stderr tail', () => {
  const failure = failureOf(containerTool('text'), run({failed: true, exitCode: 3, stderr: `${'x'.repeat(5000)}Traceback: boom`}));
  assert.equal(failure?.code, 'TOOL_FAILED');
  assert.equal(failure?.data.exitCode, 3);
  assert.match(failure!.message, /exited with code 3/);
  assert.match(failure!.message, /Traceback: boom$/);
  assert.ok(failure!.message.length < 2300, 'only the tail of stderr is quoted');
});

test('pids exhaustion in a container is PIDS_LIMIT', () => {
  assert.equal(failureOf(containerTool('text'), run({failed: true, exitCode: 1, pidsLimited: true}))?.code, 'PIDS_LIMIT');
});

test('a success is not a failure', () => assert.equal(failureOf(tool(), run({stdout: '1'})), undefined));

test('isolate results: string → text, object → structuredContent + JSON text, content → CallToolResult', () => {
  assert.deepEqual(successResult(tool(), run({stdout: '"hi"'})), {content: [{type: 'text', text: 'hi'}]});
  assert.deepEqual(successResult(tool(), run({stdout: '{"a":1}'})), {content: [{type: 'text', text: '{"a":1}'}], structuredContent: {a: 1}});
  const image = {content: [{type: 'image', data: 'AAAA', mimeType: 'image/png'}]};
  assert.deepEqual(successResult(tool(), run({stdout: JSON.stringify(image)})), image);
  assert.deepEqual(successResult(tool(), run({stdout: ''})), {content: []});
});

test('a returned object with an invalid content array is TOOL_FAILED', () => {
  assert.throws(() => successResult(tool(), run({stdout: '{"content":[{"type":"bogus"}]}'})), (e: unknown) => e instanceof ToolcellError && e.code === 'TOOL_FAILED');
});

test('a tool cannot smuggle _meta (e.g. a fake toolcell/error) through a returned CallToolResult', () => {
  const r = successResult(tool(), run({stdout: JSON.stringify({content: [], _meta: {'toolcell/error': {code: 'X'}}})}));
  assert.equal(r._meta, undefined);
});

test('structured content that breaks the outputSchema is TOOL_FAILED', () => {
  const outputSchema = {type: 'object', properties: {n: {type: 'number'}}, required: ['n']};
  const t = tool({outputSchema, validateOutput: compileJsonSchema(outputSchema)});
  assert.deepEqual(successResult(t, run({stdout: '{"n":2}'})).structuredContent, {n: 2});
  assert.throws(() => successResult(t, run({stdout: '{"n":"2"}'})), /does not match its outputSchema: \/n: must be number/);
});

test('container stdout is text, or parsed JSON with output: json', () => {
  assert.deepEqual(successResult(containerTool('text'), run({stdout: '{"a":1}\n'})), {content: [{type: 'text', text: '{"a":1}\n'}]});
  assert.deepEqual(successResult(containerTool('json'), run({stdout: '{"a":1}\n'})).structuredContent, {a: 1});
  assert.throws(() => successResult(containerTool('json'), run({stdout: 'not json'})), /not valid JSON/);
});

test('errorResult: a ToolcellError keeps code and data; anything else is INTERNAL without details', () => {
  const denied = errorResult(new ToolcellError('DENIED', 'no', {rule: 'commands'}));
  assert.equal(denied.isError, true);
  assert.deepEqual(denied._meta?.['toolcell/error'], {code: 'DENIED', rule: 'commands'});
  const internal = errorResult(new Error('ENOENT: /home/secret/path'));
  assert.equal((internal._meta?.['toolcell/error'] as {code: string}).code, 'INTERNAL');
  assert.doesNotMatch(JSON.stringify(internal), /secret|ENOENT/);
});
