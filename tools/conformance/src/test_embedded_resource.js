/** Conformance fixture `test_embedded_resource` (scenario tools-call-embedded-resource): one embedded text resource. */
export default function testEmbeddedResource() {
  return {
    content: [{
      type: 'resource',
      resource: {uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.'},
    }],
  };
}
