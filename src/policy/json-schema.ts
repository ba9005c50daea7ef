// JSON Schema (ajv) for third-party tool schemas: compile, validate arguments, describe errors.
import {Ajv, type ErrorObject, type ValidateFunction} from 'ajv';
import {Ajv2020} from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import {ToolcellError} from '../errors.ts';
import {describeAjvSchemaErrors} from './schema-errors.ts';

/**
 * JSON Schema validation of third-party tool schemas, with ajv (https://ajv.js.org).
 * Dialect: 2020-12 when `$schema` is absent (MCP 2025-11-25, basic/index §JSON Schema Usage),
 * draft-07 when `$schema` names it; any other dialect is refused with a clear error.
 * Schemas are compiled once when a package loads; validation at call time is a plain function call.
 */

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const options = {strict: false, allErrors: true, allowUnionTypes: true} as const;
const ajv2020 = new Ajv2020(options);
const ajv07 = new Ajv(options);
addFormats(ajv2020 as unknown as Ajv);
addFormats(ajv07);

const DIALECTS_2020 = new Set(['https://json-schema.org/draft/2020-12/schema', 'https://json-schema.org/draft/2020-12/schema#']);
const DIALECTS_07 = new Set(['http://json-schema.org/draft-07/schema', 'http://json-schema.org/draft-07/schema#']);

/**
 * Compiles a JSON Schema object.
 * @throws Error naming the unsupported dialect, or ajv's reason why the schema is invalid.
 */
export function compileJsonSchema(schema: Record<string, unknown>): ValidateFunction {
  const dialect = schema.$schema;
  if (dialect === undefined || (typeof dialect === 'string' && DIALECTS_2020.has(dialect))) {
    return compileWith(ajv2020 as unknown as Ajv, schema);
  }
  if (typeof dialect === 'string' && DIALECTS_07.has(dialect)) {
    return compileWith(ajv07, schema);
  }
  throw new Error(`unsupported JSON Schema dialect ${JSON.stringify(dialect)}; supported: 2020-12 (default) and draft-07`);
}

/**
 * Checks the schema against its dialect's meta-schema first, so that an invalid schema is
 * described place by place with the value found there (`describeAjvSchemaErrors`) rather than
 * as ajv's list of every alternative that failed; then compiles it.
 * @throws Error `schema is invalid: /properties/a/type is "strin": must be ...`
 */
function compileWith(ajv: Ajv, schema: Record<string, unknown>): ValidateFunction {
  if (ajv.validateSchema(schema) !== true) {
    throw new Error(`schema is invalid: ${describeAjvSchemaErrors(ajv.errors, schema).join('; ')}`);
  }
  return ajv.compile(schema);
}

/** One line per ajv error, e.g. `/text: must be string`, at most `max` lines. */
export function describeSchemaErrors(errors: ErrorObject[] | null | undefined, max = 5): string[] {
  const lines = (errors ?? []).map((e) => {
    const where = e.instancePath === '' ? '(root)' : e.instancePath;
    const extra = e.keyword === 'additionalProperties'
      ? ` ("${String((e.params as {additionalProperty?: string}).additionalProperty)}" is not allowed)`
      : e.keyword === 'enum'
        ? ` (allowed: ${((e.params as {allowedValues?: unknown[]}).allowedValues ?? []).map((v) => JSON.stringify(v)).join(', ')})`
        : '';
    return `${where}: ${e.message ?? 'is invalid'}${extra}`;
  });
  return lines.length > max ? [...lines.slice(0, max), `…and ${lines.length - max} more`] : lines;
}

/**
 * Validates tool arguments before any sandbox is touched.
 * @throws ToolcellError `INVALID_ARGUMENTS` whose message names each wrong field and the rule it breaks.
 */
export function assertValidArguments(tool: string, validate: ValidateFunction, args: unknown): void {
  if (validate(args)) return;
  const problems = describeSchemaErrors(validate.errors);
  throw new ToolcellError('INVALID_ARGUMENTS',
    `Invalid arguments for tool "${tool}": ${problems.join('; ')}. See the tool's inputSchema for what is allowed.`,
    {problems});
}
