/** Conformance fixture `test_simple_text` (scenario tools-call-simple-text): one text item. */
export default function testSimpleText() {
  return 'This is a simple text response for testing.';
}
