// Load-time schema errors as one phrase each: the JSON pointer, the offending value quoted, and what is wrong, instead of a validator's list of alternatives.
import type {ErrorObject} from 'ajv';
import type * as z from 'zod';

/** Longest quoted value, in UTF-16 units, before it is cut with `…`. */
const MAX_QUOTE = 80;

/**
 * A path as a JSON Pointer (RFC 6901): `/limits/timeoutMs`, `/tools/0/name`; `~` and `/` in
 * a key are escaped as `~0` and `~1`. The whole document is `(root)` (the pointer "" is easy
 * to miss in a message).
 */
export function jsonPointer(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path.map((k) => `/${String(k).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

/** The value at `path` in `root`, or undefined when a step is missing. */
function valueAt(root: unknown, path: readonly PropertyKey[]): {found: boolean; value?: unknown} {
  let current: unknown = root;
  for (const key of path) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, key as string)) return {found: false};
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return {found: true, value: current};
}

/** A value as JSON, cut at `MAX_QUOTE` characters (`{…}` style for long objects). */
export function quoteValue(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_QUOTE ? `${text.slice(0, MAX_QUOTE - 1)}…` : text;
}

/** `/limits/timeoutMs is "fast"` or `/limits/timeoutMs is missing`. */
function subject(root: unknown, path: readonly PropertyKey[]): string {
  const at = valueAt(root, path);
  return `${jsonPointer(path)} ${at.found ? `is ${quoteValue(at.value)}` : 'is missing'}`;
}

/** zod's message without its generic prefix and without the received type (the value is quoted instead). */
function reason(message: string): string {
  return message.replace(/^Invalid input: /, '').replace(/, received \w+$/, '');
}

type Issue = z.core.$ZodIssue;

/**
 * For a union, the issues of the alternative that got furthest: the one whose issues lie
 * deepest, then the one with fewest issues. A user meant one of the forms; listing why every
 * other form failed too buries the one line that helps.
 */
function bestAlternative(alternatives: readonly (readonly Issue[])[]): readonly Issue[] | undefined {
  let best: readonly Issue[] | undefined;
  let bestScore = [-1, 0];
  for (const issues of alternatives) {
    if (issues.length === 0) continue;
    const depth = Math.max(...issues.map((i) => i.path.length));
    if (depth > bestScore[0]! || (depth === bestScore[0] && issues.length < bestScore[1]!)) {
      best = issues;
      bestScore = [depth, issues.length];
    }
  }
  return best;
}

/**
 * zod issues as phrases, one per problem, e.g. `/limits/timeoutMs is "fast": expected number`,
 * `/backend is "vm": expected one of "isolate", "container"`, `/limits/timeoutMS is 5: unknown key`.
 * @param issues `error.issues` of a failed `safeParse`
 * @param input the value that was parsed (to quote what is at each path)
 */
export function describeZodIssues(issues: readonly Issue[], input: unknown, prefix: readonly PropertyKey[] = []): string[] {
  const lines: string[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    switch (issue.code) {
      case 'unrecognized_keys':
        for (const key of issue.keys) lines.push(`${subject(input, [...path, key])}: unknown key`);
        break;
      case 'invalid_union': {
        // A discriminated union whose discriminator matched no option (zod 4: `options`, no `errors`).
        const options = (issue as {options?: unknown[]}).options;
        if (Array.isArray(options) && options.length > 0) {
          lines.push(`${subject(input, path)}: expected one of ${options.map((v) => quoteValue(v)).join(', ')}`);
          break;
        }
        const best = bestAlternative(issue.errors);
        if (best !== undefined && best.some((i) => i.path.length > 0)) {
          lines.push(...describeZodIssues(best, input, path));
        } else {
          lines.push(`${subject(input, path)}: matches none of the allowed forms${issue.message && !/^Invalid input$/.test(issue.message) ? ` (${issue.message})` : ''}`);
        }
        break;
      }
      case 'invalid_value':
        lines.push(`${subject(input, path)}: expected ${issue.values.length === 1 ? quoteValue(issue.values[0]) : `one of ${issue.values.map((v) => quoteValue(v)).join(', ')}`}`);
        break;
      default:
        lines.push(`${subject(input, path)}: ${reason(issue.message)}`);
    }
  }
  return [...new Set(lines)];
}

/**
 * ajv's errors about a schema (from `validateSchema`, against the JSON Schema meta-schema) as
 * one phrase per place: `/properties/a/type is "strin": must be equal to one of the allowed
 * values ("array", "boolean", ...)`. Where ajv reports several alternatives for one place (an
 * `anyOf` whose every branch failed), only the most telling one is kept: `enum` (it lists what
 * is allowed), then `type`, then any other; the `anyOf`/`oneOf` summary itself never.
 * @param errors `ajv.errors` after `validateSchema` returned false
 * @param schema the schema that was validated (to quote what is at each place)
 */
export function describeAjvSchemaErrors(errors: readonly ErrorObject[] | null | undefined, schema: unknown): string[] {
  const byPlace = new Map<string, ErrorObject[]>();
  for (const e of errors ?? []) byPlace.set(e.instancePath, [...(byPlace.get(e.instancePath) ?? []), e]);
  const rank = (e: ErrorObject) => (e.keyword === 'enum' ? 0 : e.keyword === 'type' ? 1 : e.keyword === 'anyOf' || e.keyword === 'oneOf' ? 3 : 2);
  const lines: string[] = [];
  for (const [place, list] of byPlace) {
    const best = [...list].sort((a, b) => rank(a) - rank(b))[0]!;
    const path = place === '' ? [] : place.slice(1).split('/').map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
    const allowed = best.keyword === 'enum'
      ? ` (${((best.params as {allowedValues?: unknown[]}).allowedValues ?? []).map((v) => quoteValue(v)).join(', ')})` : '';
    lines.push(`${subject(schema, path)}: ${best.message ?? 'is invalid'}${allowed}`);
  }
  return lines;
}
