// Container argv: placeholder substitution and the commands allowlist.
import {ToolcellError} from '../errors.ts';
import {PLACEHOLDER} from './manifest-schema.ts';

/**
 * Container argv templates (ARCHITECTURE.md, "Container command"). No shell is ever involved:
 * each element is one argv entry, and whatever an argument contains (`;`, `$(…)`, backticks,
 * quotes, newlines) stays inside its element, literally.
 */

/** String form of one argument value: strings as they are, anything else as JSON. */
export function argumentText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * Substitutes placeholders: `{{field}}` (a whole element) becomes the argument's string value,
 * and is dropped when the argument is absent; `{{...field}}` expands an array argument into
 * one element per item.
 * @throws ToolcellError `INVALID_ARGUMENTS` when a value contains a NUL byte (argv cannot carry one)
 *   or a `{{...field}}` argument is not an array.
 */
export function buildArgv(template: readonly string[], args: Readonly<Record<string, unknown>>): string[] {
  const argv: string[] = [];
  for (const element of template) {
    const match = PLACEHOLDER.exec(element);
    if (!match) {
      argv.push(element);
      continue;
    }
    const [, spread, field] = match as unknown as [string, string | undefined, string];
    const value = args[field];
    if (value === undefined) continue;
    if (spread) {
      if (!Array.isArray(value)) {
        throw new ToolcellError('INVALID_ARGUMENTS', `Argument "${field}" must be an array.`, {field});
      }
      argv.push(...value.map((item) => checkedArg(field, argumentText(item))));
    } else {
      argv.push(checkedArg(field, argumentText(value)));
    }
  }
  return argv;
}

function checkedArg(field: string, text: string): string {
  if (text.includes('\0')) {
    throw new ToolcellError('INVALID_ARGUMENTS', `Argument "${field}" contains a NUL byte, which a command line cannot carry.`, {field});
  }
  return text;
}

/**
 * Checks argv[0] against a profile's allowlist and replaces it with the absolute path the
 * name resolved to in the image when the profile was loaded. The check is exact string
 * equality on the name (or on the absolute path itself): `grep` matches `grep` only.
 *
 * @param allowed name or absolute path → absolute path inside the image
 * @returns a new argv whose first element is absolute
 * @throws ToolcellError `DENIED` naming the command and what is allowed; no container is created.
 */
export function authorizeArgv(argv: readonly string[], allowed: ReadonlyMap<string, string>, profile: string): string[] {
  const command = argv[0];
  const resolved = command === undefined ? undefined : allowed.get(command);
  if (resolved === undefined) {
    const names = [...new Set([...allowed.keys()].filter((k) => !k.startsWith('/')))].sort();
    throw new ToolcellError('DENIED',
      `Command ${JSON.stringify(command ?? '')} is not allowed by profile "${profile}". Allowed: ${names.join(', ')}.`,
      {profile, command: command ?? '', allowed: names, rule: 'commands'});
  }
  return [resolved, ...argv.slice(1)];
}
