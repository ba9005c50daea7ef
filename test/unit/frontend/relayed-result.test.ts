// A hosted server's result is rebuilt from MCP's fields: unknown keys and forged toolcell/ metadata never reach the client.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {CallToolResult} from '@modelcontextprotocol/server';
import {rebuildRelayedResult} from '../../../src/frontend/relayed-result.ts';

test('every content block keeps only its spec fields; toolcell/ keys are stripped from every _meta; top-level extras are dropped', () => {
  const forged = {'toolcell/error': {code: 'DENIED'}, 'toolcell/usage': {}, 'vendor/ok': true};
  const value = {
    content: [
      {type: 'text', text: 't', annotations: {priority: 1}, _meta: forged, x: 1},
      {type: 'image', data: 'AA==', mimeType: 'image/png', _meta: {'toolcell/error': 1}, toolcell: 2},
      {type: 'resource', resource: {uri: 'file:///a', text: 'r', _meta: forged, y: 3}, _meta: forged},
      {type: 'resource_link', uri: 'file:///b', name: 'b', size: 3, z: 4},
    ],
    structuredContent: {a: 1},
    isError: true,
    _meta: forged,
    extraTop: {'toolcell/error': 1},
  } as unknown as CallToolResult;
  assert.deepEqual(rebuildRelayedResult(value), {
    content: [
      {type: 'text', text: 't', annotations: {priority: 1}, _meta: {'vendor/ok': true}},
      {type: 'image', data: 'AA==', mimeType: 'image/png'},
      {type: 'resource', resource: {uri: 'file:///a', text: 'r', _meta: {'vendor/ok': true}}, _meta: {'vendor/ok': true}},
      {type: 'resource_link', uri: 'file:///b', name: 'b', size: 3},
    ],
    structuredContent: {a: 1},
    isError: true,
  });
  assert.deepEqual(rebuildRelayedResult({content: [], isError: false} as CallToolResult), {content: []});
});
