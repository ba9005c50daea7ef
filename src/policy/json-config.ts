// Operator JSON (profiles, the service config): parsed, validated by a strict zod schema, frozen.
import * as z from 'zod';
import {ConfigError} from '../errors.ts';
import {describeZodIssues} from './schema-errors.ts';

/**
 * Parses JSON text and validates it with a strict zod schema; the result is deeply frozen.
 * @param source file name (or another label) for messages
 * @param what what the text is, e.g. `profile`, for the message
 * @throws ConfigError naming the source and, for each invalid field, its JSON pointer, the value
 *   found there (quoted) and the rule (`describeZodIssues`)
 */
export function parseJsonConfig<S extends z.ZodType>(source: string, text: string, schema: S, what: string): z.infer<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(source, `is not valid JSON: ${(err as Error).message}`, {cause: err});
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError(source, `invalid ${what}: ${describeZodIssues(result.error.issues, raw).join('; ')}`);
  }
  return deepFreeze(result.data);
}

/** Freezes an object graph in place and returns it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as object)) deepFreeze(child);
  }
  return value;
}
