import assert from 'node:assert/strict';
import {test} from 'node:test';
import {annotationsOf, toMcpTool} from '../../../src/frontend/mcp-server.ts';
import {compileJsonSchema} from '../../../src/policy/json-schema.ts';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import type {ToolDefinition} from '../../../src/policy/tool-definition.ts';

const container = (filesystem: object) => parseProfile('/p/c.json', JSON.stringify({name: 'c', backend: 'container',
  limits: {timeoutMs: 1000, memoryMb: 64, cpus: 1, pids: 8, outputBytes: 1024}, commands: ['cat'], filesystem}));
const isolate = parseProfile('/p/i.json', JSON.stringify({name: 'i', backend: 'isolate', limits: {timeoutMs: 1000, memoryMb: 16, outputBytes: 1024}}));
const tool = (profile: ToolDefinition['profile']): ToolDefinition => ({name: 'p__t', packageName: 'p', packageVersion: '1.0.0', toolName: 't',
  description: 'd', inputSchema: {type: 'object'}, profile, validateInput: compileJsonSchema({type: 'object'}), packageDir: '/x'});

test('annotations come from the profile: no profile grants egress, so openWorldHint is false', () => {
  for (const p of [isolate, container({}), container({readOnlyRoot: false})]) assert.equal(annotationsOf(tool(p)).openWorldHint, false);
});

test('readOnlyHint only where nothing on the host can be written', () => {
  assert.equal(annotationsOf(tool(isolate)).readOnlyHint, true);
  assert.equal(annotationsOf(tool(container({tmpfs: {'/tmp': '8m'}}))).readOnlyHint, true);
  assert.equal(annotationsOf(tool(container({readOnlyRoot: false}))).readOnlyHint, false);
  const rw = container({mounts: [{source: '/tmp', target: '/w', readOnly: false}]});
  assert.equal(annotationsOf(tool(rw)).readOnlyHint, false);
  assert.equal(annotationsOf(tool(rw)).destructiveHint, undefined, 'left at the spec default (true)');
});

test('the listed tool names its profile and backend in _meta, and publishes the schema as given', () => {
  const listed = toMcpTool(tool(isolate));
  assert.deepEqual(listed._meta, {'toolcell/profile': 'i', 'toolcell/backend': 'isolate'});
  assert.deepEqual(listed.inputSchema, {type: 'object'});
});
