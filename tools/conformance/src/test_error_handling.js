/**
 * Conformance fixture `test_error_handling` (scenario tools-call-error): always throws.
 * The runtime turns the throw into a result with `isError: true` (TOOL_FAILED) whose
 * first content item is text carrying this message; the scenario checks exactly that.
 */
export default function testErrorHandling() {
  throw new Error('This tool intentionally returns an error for testing');
}
