/**
 * Conformance fixture `json_schema_2020_12_tool` (scenario json-schema-2020-12, SEP-1613;
 * in the suite's "pending" set). The scenario only lists tools and checks that the input
 * schema keeps `$schema`, `$defs` and `additionalProperties: false`; calling it echoes the
 * arguments it received.
 */
export default function jsonSchema202012Tool(args) {
  return `Received: ${JSON.stringify(args)}`;
}
