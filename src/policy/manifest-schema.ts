// The tool package manifest (toolcell.json) as a strict zod schema.
import * as z from 'zod';

/**
 * The tool package manifest, `<dir>/<package>/toolcell.json` (ARCHITECTURE.md, "Tool package").
 * Strict: unknown keys are errors. A package *names* a profile and never defines one.
 * MCP tool names are `<package>__<tool>`, valid for LLM APIs that allow only `[A-Za-z0-9_-]`
 * (MCP 2025-11-25 server/tools §Tool Names allows `[A-Za-z0-9_.-]{1,128}`).
 */

/** Package names: kebab-case, no `__`. */
export const PACKAGE_NAME = /^[a-z][a-z0-9-]*$/;
/** Tool names: snake_case, no `__` (the separator between package and tool). */
export const TOOL_NAME = /^[a-z][a-z0-9_]*$/;
/** A whole-element argv placeholder: `{{field}}` or `{{...field}}`. */
export const PLACEHOLDER = /^\{\{(\.\.\.)?([A-Za-z_][A-Za-z0-9_]*)\}\}$/;

const noDoubleUnderscore = (s: string) => !s.includes('__');

const JsonSchemaObject = z.record(z.string(), z.unknown())
  .refine((s) => s.type === 'object', {message: 'must be a JSON Schema with "type": "object" (MCP tools §Tool)'});

const ArgvElement = z.string().max(4096).refine(
  (s) => PLACEHOLDER.test(s) || !s.includes('{{'),
  {message: 'a placeholder must be a whole argv element, "{{field}}" or "{{...field}}"'});

export const IsolateEntry = z.strictObject({
  entry: z.string().min(1).describe('Path of the bundled ES module, relative to the package directory.'),
});

export const ContainerEntry = z.strictObject({
  image: z.string().regex(/^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$/, 'must be a local image reference such as toolcell/python'),
  command: z.array(ArgvElement).min(1).max(256).describe('argv template; never a shell string.'),
  stdin: z.union([z.literal('json'), z.string().regex(PLACEHOLDER)]).optional()
    .describe('"json": the arguments as JSON on stdin; "{{field}}": that argument (a string as is, anything else as JSON).'),
  output: z.enum(['text', 'json']).default('text').describe('How stdout becomes the result.'),
  workdir: z.string().regex(/^\//, 'must be an absolute path inside the container').optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
    // Reserved for the warm-pool launcher's own shell variables (backends/container/launcher.ts RESERVED_ENV_PREFIX).
    .refine((k) => !k.startsWith('TOOLCELL_LAUNCHER_'), {message: 'names starting with TOOLCELL_LAUNCHER_ are reserved'}), z.string().max(4096)).optional()
    .describe('Fixed environment for the tool process. Nothing from the host environment is passed.'),
});

export const ToolManifest = z.strictObject({
  name: z.string().regex(TOOL_NAME, 'must be snake_case: a lower-case letter, then a-z, 0-9 or _').max(60)
    .refine(noDoubleUnderscore, {message: 'must not contain "__"'}),
  title: z.string().max(200).optional(),
  description: z.string().min(1).max(8192),
  inputSchema: JsonSchemaObject,
  outputSchema: JsonSchemaObject.optional(),
  profile: z.string().regex(/^[a-z][a-z0-9-]*$/, 'must name a profile (kebab-case)'),
  isolate: IsolateEntry.optional(),
  container: ContainerEntry.optional(),
}).refine((t) => (t.isolate === undefined) !== (t.container === undefined),
  {message: 'a tool has exactly one of "isolate" or "container"'});

export const PackageManifest = z.strictObject({
  $schema: z.string().optional(),
  name: z.string().regex(PACKAGE_NAME, 'must be kebab-case: a lower-case letter, then a-z, 0-9 or -').max(60)
    .refine(noDoubleUnderscore, {message: 'must not contain "__"'}),
  version: z.string().regex(/^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$/, 'must be a semantic version such as 1.0.0'),
  description: z.string().max(2000).optional(),
  tools: z.array(ToolManifest).min(1).max(256),
});

export type ToolManifest = z.infer<typeof ToolManifest>;
export type PackageManifest = z.infer<typeof PackageManifest>;
export type ContainerEntry = z.infer<typeof ContainerEntry>;
