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

// ---------------------------------------------------------------------------------------------
// Hosted MCP servers (issue 9; ARCHITECTURE.md "Hosted MCP servers"): a package with a `server`
// section instead of isolate/container tools.

/**
 * Names of a hosted server's tools, as the server lists them: `[A-Za-z0-9_-]`, at most 64
 * characters (with the `<package>__` prefix, checked when the package loads). `add` refuses
 * a server tool whose name does not fit, with the reason (ARCHITECTURE.md).
 */
export const SERVER_TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest MCP name (`<package>__<tool>`) of a hosted tool. */
export const MAX_HOSTED_TOOL_NAME = 64;
/** A lowercase hex SHA-256. */
export const SHA256_HEX = /^[0-9a-f]{64}$/;

const ServerArgvElement = z.string().min(1).max(4096)
  .refine((s) => !s.includes('\0'), {message: 'must not contain a NUL byte'})
  .refine((s) => !s.includes('{{'), {message: 'a hosted server\'s command takes no placeholders (arguments reach it in tools/call, never on its command line)'});

/**
 * The `server` section of a hosted package: how to start it and what was pinned at `add`.
 * `command` is the argv run in the container (argv[0] must be in the profile's `commands`,
 * checked at load); `args` are appended (the `-- SERVER_ARGS` of `toolcell add`).
 * `imageId` is compared with the engine's image at load and at every container create.
 * `profileSha256` is the SHA-256 of the canonical JSON of the profile as it was at `add`
 * (written by `add`/`update`); when present, a profile changed since makes every tool `DENIED`
 * (`rule: "pin"`).
 */
export const ServerSection = z.strictObject({
  source: z.string().max(2048).regex(/^(npm|pypi|oci|dir):\S/, 'must be npm:, pypi:, oci: or dir: followed by what was added'),
  integrity: z.string().min(1).max(1024).optional()
    .describe('The source\'s own integrity string (npm "sha512-…", a wheel\'s sha256), as resolved at add.'),
  image: z.string().max(256).regex(/^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$/, 'must be a local image reference such as toolcell/srv-everything:1.0.0'),
  imageId: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be the image ID the engine reports, "sha256:" and 64 hex digits'),
  command: z.array(ServerArgvElement).min(1).max(64).describe('argv of the server inside the image; never a shell string.'),
  args: z.array(ServerArgvElement).max(256).optional().describe('Arguments appended to command.'),
  transport: z.literal('stdio').describe('MCP stdio transport (spec 2025-11-25, basic/transports §stdio).'),
  lifetime: z.enum(['call', 'principal']).default('call')
    .describe('"call": a fresh server process per call; "principal": one per (principal, server), removed after idleMs.'),
  idleMs: z.number().int().positive().max(86_400_000).optional(),
  profileSha256: z.string().regex(SHA256_HEX, 'must be 64 lowercase hex digits').optional(),
}).refine((s) => s.idleMs === undefined || s.lifetime === 'principal', {message: 'idleMs applies only to "lifetime": "principal"', path: ['idleMs']});

/** A tool definition as approved at `add`: exactly the pinned fields (policy/pins.ts PINNED_FIELDS). */
export const PinnedDefinition = z.strictObject({
  name: z.string().regex(SERVER_TOOL_NAME, 'must be 1-64 characters of A-Z, a-z, 0-9, _ or -'),
  title: z.string().max(1024).optional(),
  description: z.string().max(65_536).optional(),
  inputSchema: JsonSchemaObject,
  outputSchema: JsonSchemaObject.optional(),
  annotations: z.record(z.string(), z.unknown()).optional(),
});

/** One pinned tool of a hosted package: its name, the SHA-256 of its canonical definition, and that definition. */
export const PinnedTool = z.strictObject({
  name: z.string().regex(SERVER_TOOL_NAME, 'must be 1-64 characters of A-Z, a-z, 0-9, _ or -'),
  sha256: z.string().regex(SHA256_HEX, 'must be 64 lowercase hex digits (SHA-256 of the canonical definition)'),
  definition: PinnedDefinition,
}).refine((t) => t.definition.name === t.name, {message: 'definition.name must equal name', path: ['definition', 'name']});

/**
 * A hosted MCP server package (`toolcell.json` with a `server` section). Strict: a hosted
 * package has one package-level `profile` (a container profile) and pinned tools, never
 * isolate or container tools. `version` is the upstream's version as resolved at `add`
 * (npm semver, PyPI versions such as `2.3` or `1.0rc1`, or an image tag).
 */
export const HostedPackageManifest = z.strictObject({
  $schema: z.string().optional(),
  name: z.string().regex(PACKAGE_NAME, 'must be kebab-case: a lower-case letter, then a-z, 0-9 or -').max(60)
    .refine(noDoubleUnderscore, {message: 'must not contain "__"'}),
  version: z.string().max(64).regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]*$/, 'must be a version such as 1.0.0 or 2026.8.31'),
  description: z.string().max(2000).optional(),
  server: ServerSection,
  profile: z.string().regex(/^[a-z][a-z0-9-]*$/, 'must name a profile (kebab-case)'),
  tools: z.array(PinnedTool).max(256),
}).refine((p) => new Set(p.tools.map((t) => t.name)).size === p.tools.length, {message: 'a tool name appears twice', path: ['tools']});

/** True when a parsed `toolcell.json` is a hosted server package (it has a `server` key), to pick the schema. */
export const isHostedManifest = (raw: unknown): boolean =>
  typeof raw === 'object' && raw !== null && !Array.isArray(raw) && Object.hasOwn(raw, 'server');

export type ServerSection = z.infer<typeof ServerSection>;
export type PinnedDefinition = z.infer<typeof PinnedDefinition>;
export type PinnedTool = z.infer<typeof PinnedTool>;
export type HostedPackageManifest = z.infer<typeof HostedPackageManifest>;
