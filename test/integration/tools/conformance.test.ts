import assert from 'node:assert/strict';
import {before, describe, test} from 'node:test';
import {crc32, inflateSync} from 'node:zlib';
import {ensureBuilt, toolOf, useToolBackend, validator} from './helpers.ts';

/**
 * The conformance fixture package, checked the way the scenarios of
 * @modelcontextprotocol/conformance 0.1.16 check the tools they call (read from its
 * dist/index.js): tools-call-simple-text, -image, -audio, -embedded-resource,
 * -mixed-content, -error, -with-logging, and json-schema-2020-12 (pending suite).
 */

before(ensureBuilt);
const {callTool, valueOf, thrownBy} = useToolBackend();

interface Item {type: string; text?: string; data?: string; mimeType?: string; resource?: {uri?: string; mimeType?: string; text?: string; blob?: string}}

const contentOf = async (tool: string): Promise<Item[]> => {
  const value = await valueOf('conformance', tool, {}) as {content?: unknown};
  assert.ok(Array.isArray(value.content), 'returns a CallToolResult with a content array');
  return value.content as Item[];
};

/** Splits a PNG into chunks, checking the signature and every CRC. */
function pngChunks(bytes: Buffer): Array<{type: string; data: Buffer}> {
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const chunks = [];
  for (let at = 8; at < bytes.length;) {
    const length = bytes.readUInt32BE(at);
    const type = bytes.toString('latin1', at + 4, at + 8);
    const data = bytes.subarray(at + 8, at + 8 + length);
    assert.equal(bytes.readUInt32BE(at + 8 + length), crc32(bytes.subarray(at + 4, at + 8 + length)), `CRC of ${type}`);
    chunks.push({type, data});
    at += 12 + length;
  }
  return chunks;
}

describe('conformance fixtures', () => {
  test('test_simple_text returns the text the scenario specifies', async () => {
    assert.equal(await valueOf('conformance', 'test_simple_text', {}), 'This is a simple text response for testing.');
  });

  test('test_image_content returns a valid 1x1 red PNG', async () => {
    const [image] = await contentOf('test_image_content');
    assert.equal(image?.type, 'image');
    assert.equal(image.mimeType, 'image/png');
    const chunks = pngChunks(Buffer.from(image.data!, 'base64'));
    assert.deepEqual(chunks.map((c) => c.type), ['IHDR', 'IDAT', 'IEND']);
    const ihdr = chunks[0]!.data;
    assert.deepEqual([ihdr.readUInt32BE(0), ihdr.readUInt32BE(4), ihdr[8], ihdr[9]], [1, 1, 8, 2], '1x1, 8-bit RGB');
    assert.deepEqual([...inflateSync(chunks[1]!.data)], [0, 255, 0, 0], 'filter 0, one red pixel');
  });

  test('test_audio_content returns a valid WAV with mimeType exactly audio/wav', async () => {
    const [audio] = await contentOf('test_audio_content');
    assert.equal(audio?.type, 'audio');
    assert.equal(audio.mimeType, 'audio/wav');
    const wav = Buffer.from(audio.data!, 'base64');
    assert.equal(wav.toString('latin1', 0, 4), 'RIFF');
    assert.equal(wav.readUInt32LE(4), wav.length - 8);
    assert.equal(wav.toString('latin1', 8, 16), 'WAVEfmt ');
    assert.equal(wav.readUInt16LE(20), 1, 'PCM');
    assert.equal(wav.toString('latin1', 36, 40), 'data');
    assert.equal(wav.readUInt32LE(40), wav.length - 44);
  });

  test('test_embedded_resource returns a resource with uri, mimeType and text', async () => {
    assert.deepEqual(await contentOf('test_embedded_resource'), [{type: 'resource',
      resource: {uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.'}}]);
  });

  test('test_multiple_content_types returns text, image and resource items', async () => {
    const content = await contentOf('test_multiple_content_types');
    assert.deepEqual(content.map((c) => c.type), ['text', 'image', 'resource']);
    assert.equal(content[1]!.mimeType, 'image/png');
    assert.deepEqual(JSON.parse(content[2]!.resource!.text!), {test: 'data', value: 123});
  });

  test('test_error_handling always throws the message the scenario shows', async () => {
    assert.equal(await thrownBy('conformance', 'test_error_handling', {}), 'Error: This tool intentionally returns an error for testing');
  });

  test('test_tool_with_logging prints the three messages to the console and returns text', async () => {
    const out = await callTool('conformance', 'test_tool_with_logging', {});
    assert.equal(out.failed, false, JSON.stringify(out));
    assert.equal(out.stderr, 'Tool execution started\nTool processing data\nTool execution completed\n', 'one console line each, in order');
    assert.equal(typeof JSON.parse(out.stdout), 'string');
  });

  test('json_schema_2020_12_tool keeps $schema, $defs and additionalProperties: false in its inputSchema', async () => {
    const schema = toolOf('conformance', 'json_schema_2020_12_tool').inputSchema;
    assert.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
    assert.ok('address' in (schema.$defs as object));
    assert.equal(schema.additionalProperties, false);
    const valid = validator('conformance', 'json_schema_2020_12_tool');
    assert.ok(valid({name: 'Ada', address: {street: '1 Main St', city: 'Springfield'}}));
    assert.equal(valid({name: 'Ada', age: 3}), false);
    assert.equal(valid({address: {street: 1}}), false, '$ref into $defs is followed');
    assert.equal(await valueOf('conformance', 'json_schema_2020_12_tool', {name: 'Ada'}), 'Received: {"name":"Ada"}');
  });

  test('the no-argument fixtures accept {} and reject any argument', () => {
    for (const tool of ['test_simple_text', 'test_image_content', 'test_audio_content', 'test_embedded_resource',
      'test_multiple_content_types', 'test_error_handling', 'test_tool_with_logging']) {
      const valid = validator('conformance', tool);
      assert.ok(valid({}), tool);
      assert.equal(valid({x: 1}), false, tool);
      assert.equal(valid([]), false, tool);
    }
  });
});
