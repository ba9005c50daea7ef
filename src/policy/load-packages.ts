// Loads tool packages from directories: manifests validated, entries kept inside their package.
import {readdir, readFile, realpath, stat} from 'node:fs/promises';
import {isAbsolute, join, relative, resolve, sep} from 'node:path';
import {compileJsonSchema} from './json-schema.ts';
import {deepFreeze} from './json-config.ts';
import {isWithin} from './path-within.ts';
import {describeZodIssues} from './schema-errors.ts';
import {HostedPackageManifest, isHostedManifest, MAX_HOSTED_TOOL_NAME, PackageManifest, PLACEHOLDER, type ToolManifest} from './manifest-schema.ts';
import {definitionSha256, profileSha256, type ToolPin} from './pins.ts';
import {HostedCatalog, hostedContentOf, type HostedContent} from './hosted-content.ts';
import {stripInvisible, withoutInvisibleText} from './screening.ts';
import type {Profile} from './profile-schema.ts';
import {mcpToolName, type HostedServerEntry, type ToolDefinition} from './tool-definition.ts';

/** The manifest file of a tool package. */
export const MANIFEST = 'toolcell.json';
/** Largest isolate entry module accepted, in bytes. */
export const MAX_ENTRY_BYTES = 16 * 2 ** 20;

/** A package that did not load, with a one-line reason for `toolcell list` and the start-up log. */
export interface RejectedPackage {
  /** The package directory (host path: operator-facing only). */
  readonly dir: string;
  /** The package name when the manifest got far enough to have one. */
  readonly name?: string;
  readonly reason: string;
}

/** A package that loaded. */
export interface LoadedPackage {
  readonly name: string;
  readonly version: string;
  readonly description?: string;
  readonly dir: string;
  readonly tools: readonly ToolDefinition[];
  /** A hosted package's pinned prompts and resources (hosted-content.ts); absent when it has none. */
  readonly content?: HostedContent;
}

export interface LoadedPackages {
  /** MCP name → tool. */
  readonly tools: ReadonlyMap<string, ToolDefinition>;
  readonly packages: readonly LoadedPackage[];
  readonly rejected: readonly RejectedPackage[];
  /** Prompts and resources of the loaded hosted packages, routed by name and URI (collisions refused at load). */
  readonly hostedContent: HostedCatalog;
}

class PackageRejection extends Error {}

/**
 * Loads tool packages. Each directory is either a package (it has `toolcell.json`) or holds
 * packages as sub-directories. A package that is invalid in any way (manifest, schema,
 * unknown profile, backend mismatch, entry escaping the package, name taken) is rejected
 * whole, with a reason; the others still load. Directories are read in the order given, and
 * packages within one alphabetically, so the first package with a name keeps it.
 *
 * @param dirs tool directories
 * @param profiles the operator's profiles (from `loadProfiles`)
 * @param options.unprefixed packages whose tools the operator serves under their bare tool
 *   names instead of `<package>__<tool>` (e.g. fixtures a test suite calls by fixed names).
 *   A bare name that collides with another loaded tool rejects the later package.
 */
export async function loadPackages(dirs: readonly string[], profiles: ReadonlyMap<string, Profile>,
  options: {unprefixed?: readonly string[]} = {}): Promise<LoadedPackages> {
  const unprefixed = new Set(options.unprefixed ?? []);
  const tools = new Map<string, ToolDefinition>();
  const packages: LoadedPackage[] = [];
  const rejected: RejectedPackage[] = [];
  const owners = new Map<string, string>();
  const hostedContent = new HostedCatalog();
  for (const dir of await packageDirs(dirs, rejected)) {
    try {
      const pkg = await loadPackage(dir, profiles, unprefixed);
      const owner = owners.get(pkg.name);
      if (owner !== undefined) throw new PackageRejection(`a package named "${pkg.name}" is already loaded from ${owner}`);
      const taken = pkg.tools.find((t) => tools.has(t.name));
      if (taken) throw new PackageRejection(`tool name "${taken.name}" is already served by package "${tools.get(taken.name)!.packageName}"`);
      if (pkg.content) {
        try {
          hostedContent.add(pkg.content);
        } catch (err) {
          throw new PackageRejection((err as Error).message);
        }
      }
      owners.set(pkg.name, dir);
      packages.push(pkg);
      for (const tool of pkg.tools) tools.set(tool.name, tool);
    } catch (err) {
      const name = (err as {packageName?: string}).packageName;
      rejected.push({dir, name, reason: err instanceof PackageRejection ? err.message : `cannot load: ${(err as Error).message}`});
    }
  }
  return {tools, packages, rejected, hostedContent};
}

async function packageDirs(dirs: readonly string[], rejected: RejectedPackage[]): Promise<string[]> {
  const found: string[] = [];
  for (const dir of dirs) {
    const abs = resolve(dir);
    if (await isFile(join(abs, MANIFEST))) {
      found.push(abs);
      continue;
    }
    let entries;
    try {
      entries = await readdir(abs, {withFileTypes: true});
    } catch (err) {
      rejected.push({dir: abs, reason: `cannot read the tools directory (${(err as NodeJS.ErrnoException).code ?? 'error'})`});
      continue;
    }
    for (const entry of entries.filter((e) => e.isDirectory()).map((e) => e.name).sort()) {
      if (await isFile(join(abs, entry, MANIFEST))) found.push(join(abs, entry));
    }
  }
  return found;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * Loads and validates one package directory.
 * @throws PackageRejection with a one-line reason.
 */
async function loadPackage(dir: string, profiles: ReadonlyMap<string, Profile>, unprefixed: ReadonlySet<string>): Promise<LoadedPackage> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8'));
  } catch (err) {
    throw new PackageRejection(`${MANIFEST} is not valid JSON: ${(err as Error).message}`);
  }
  if (isHostedManifest(raw)) return loadHostedPackage(dir, raw, profiles, unprefixed);
  const parsed = PackageManifest.safeParse(raw);
  if (!parsed.success) {
    throw new PackageRejection(`invalid ${MANIFEST}: ${describeZodIssues(parsed.error.issues, raw).join('; ')}`);
  }
  const manifest = parsed.data;
  const fail = (message: string) => Object.assign(new PackageRejection(message), {packageName: manifest.name});
  const seen = new Set<string>();
  const tools: ToolDefinition[] = [];
  for (const tool of manifest.tools) {
    if (seen.has(tool.name)) throw fail(`tool "${tool.name}" is defined twice`);
    seen.add(tool.name);
    try {
      const name = unprefixed.has(manifest.name) ? tool.name : mcpToolName(manifest.name, tool.name);
      tools.push(await loadTool(dir, name, manifest.name, manifest.version, tool, profiles));
    } catch (err) {
      throw fail(`tool "${tool.name}": ${(err as Error).message}`);
    }
  }
  return freezePackage({
    name: manifest.name,
    version: manifest.version,
    description: manifest.description,
    dir,
    tools,
  });
}

/**
 * Loads a hosted MCP server package (a `server` section; ARCHITECTURE.md "Hosted MCP servers"):
 * one tool `<package>__<tool>` per pinned tool, its schemas those of the pinned definition
 * (compiled by ajv here, so arguments are validated before any sandbox), its profile the
 * package's, which must be a container profile whose `commands` allowlist holds the server's
 * argv[0]. Each pin must be the SHA-256 of its definition's canonical form (else the package is
 * rejected, naming the tool). A `profileSha256` that differs from the profile as loaded leaves
 * the tools loaded but refused at every call (`DENIED`, rule `pin`).
 * @throws PackageRejection with a one-line reason.
 */
function loadHostedPackage(dir: string, raw: unknown, profiles: ReadonlyMap<string, Profile>, unprefixed: ReadonlySet<string>): LoadedPackage {
  const parsed = HostedPackageManifest.safeParse(raw);
  if (!parsed.success) {
    throw new PackageRejection(`invalid ${MANIFEST} (hosted server): ${describeZodIssues(parsed.error.issues, raw).join('; ')}`);
  }
  const manifest = parsed.data;
  const fail = (message: string) => Object.assign(new PackageRejection(message), {packageName: manifest.name});
  const profile = profiles.get(manifest.profile);
  if (profile === undefined) {
    throw fail(`names unknown profile "${manifest.profile}"; known profiles: ${[...profiles.keys()].sort().join(', ') || '(none)'}`);
  }
  if (profile.backend !== 'container') throw fail(`a hosted server needs a container profile; profile "${profile.name}" is for the ${profile.backend} backend`);
  const argv0 = manifest.server.command[0]!;
  if (!profile.commands.includes(argv0)) {
    throw fail(`server command "${argv0}" is not in the allowlist of profile "${profile.name}" (allowed: ${profile.commands.join(', ')})`);
  }
  const pins = new Map<string, ToolPin>();
  for (const tool of manifest.tools) {
    const actual = definitionSha256(tool.definition);
    if (actual !== tool.sha256) throw fail(`tool "${tool.name}": its sha256 pin does not match its definition (the manifest was edited after add; run toolcell update)`);
    pins.set(tool.name, {sha256: tool.sha256, definition: tool.definition});
  }
  let drift: HostedServerEntry['drift'];
  if (manifest.server.profileSha256 !== undefined && manifest.server.profileSha256 !== profileSha256(profile)) {
    drift = {message: `profile "${profile.name}" changed since the server was approved (pin)`, changes: [`profile "${profile.name}" changed since add`]};
  }
  let content: HostedContent | undefined;
  try {
    content = hostedContentOf(manifest, profile, {
      source: manifest.server.source, image: manifest.server.image, imageId: manifest.server.imageId,
      command: manifest.server.command, args: manifest.server.args ?? [], ...(drift === undefined ? {} : {drift}),
    }, unprefixed.has(manifest.name));
  } catch (err) {
    throw fail((err as Error).message);
  }
  const tools: ToolDefinition[] = [];
  for (const tool of manifest.tools) {
    const name = unprefixed.has(manifest.name) ? tool.name : mcpToolName(manifest.name, tool.name);
    if (name.length > MAX_HOSTED_TOOL_NAME) throw fail(`tool "${tool.name}": the MCP name "${name}" is longer than ${MAX_HOSTED_TOOL_NAME} characters`);
    const def = tool.definition;
    let validateInput;
    let validateOutput;
    try {
      validateInput = compileJsonSchema(def.inputSchema);
      validateOutput = def.outputSchema ? compileJsonSchema(def.outputSchema) : undefined;
    } catch (err) {
      throw fail(`tool "${tool.name}": invalid schema in its pinned definition: ${(err as Error).message}`);
    }
    const server: HostedServerEntry = {
      toolName: tool.name,
      source: manifest.server.source,
      image: manifest.server.image,
      imageId: manifest.server.imageId,
      command: manifest.server.command,
      args: manifest.server.args ?? [],
      lifetime: manifest.server.lifetime,
      ...(manifest.server.idleMs === undefined ? {} : {idleMs: manifest.server.idleMs}),
      pin: pins.get(tool.name)!,
      pins,
      ...(drift === undefined ? {} : {drift}),
    };
    tools.push({
      name,
      packageName: manifest.name,
      packageVersion: manifest.version,
      toolName: tool.name,
      // Served without invisible characters in titles and descriptions (screening.ts); the pin keeps the definition as approved.
      ...(def.title === undefined ? {} : {title: stripInvisible(def.title)}),
      description: stripInvisible(def.description ?? ''),
      inputSchema: withoutInvisibleText(def.inputSchema),
      ...(def.outputSchema === undefined ? {} : {outputSchema: withoutInvisibleText(def.outputSchema)}),
      profile,
      validateInput,
      ...(validateOutput === undefined ? {} : {validateOutput}),
      packageDir: dir,
      server,
    });
  }
  for (const pin of pins.values()) deepFreeze(pin.definition);
  if (content) deepFreeze(content);
  return freezePackage({
    name: manifest.name,
    version: manifest.version,
    ...(manifest.description === undefined ? {} : {description: manifest.description}),
    dir,
    tools,
    ...(content === undefined ? {} : {content}),
  });
}

function freezePackage(pkg: LoadedPackage): LoadedPackage {
  // Validators are functions with mutable `errors`; freeze the data, not them.
  for (const tool of pkg.tools) {
    deepFreeze(tool.inputSchema);
    if (tool.outputSchema) deepFreeze(tool.outputSchema);
    if (tool.container) deepFreeze(tool.container);
    Object.freeze(tool);
  }
  return Object.freeze(pkg);
}

async function loadTool(dir: string, name: string, packageName: string, version: string, tool: ToolManifest,
  profiles: ReadonlyMap<string, Profile>): Promise<ToolDefinition> {
  const profile = profiles.get(tool.profile);
  if (profile === undefined) {
    throw new Error(`names unknown profile "${tool.profile}"; known profiles: ${[...profiles.keys()].sort().join(', ') || '(none)'}`);
  }
  const kind = tool.isolate ? 'isolate' : 'container';
  if (profile.backend !== kind) {
    throw new Error(`is ${kind === 'isolate' ? 'an' : 'a'} ${kind} tool but profile "${profile.name}" is for the ${profile.backend} backend`);
  }
  let validateInput;
  let validateOutput;
  try {
    validateInput = compileJsonSchema(tool.inputSchema);
  } catch (err) {
    throw new Error(`invalid inputSchema: ${(err as Error).message}`);
  }
  try {
    validateOutput = tool.outputSchema ? compileJsonSchema(tool.outputSchema) : undefined;
  } catch (err) {
    throw new Error(`invalid outputSchema: ${(err as Error).message}`);
  }
  const base = {
    name,
    packageName,
    packageVersion: version,
    toolName: tool.name,
    title: tool.title,
    description: tool.description,
    inputSchema: tool.inputSchema,
    outputSchema: tool.outputSchema,
    profile,
    validateInput,
    validateOutput,
    packageDir: dir,
  };
  if (tool.isolate) {
    const file = await resolveInside(dir, tool.isolate.entry);
    const info = await stat(file);
    if (info.size > MAX_ENTRY_BYTES) throw new Error(`entry "${tool.isolate.entry}" is larger than ${MAX_ENTRY_BYTES} bytes`);
    const source = await readFile(file, 'utf8');
    return {...base, isolate: {source, filename: `${packageName}/${relative(await realpath(dir), file).split(sep).join('/')}`}};
  }
  const container = tool.container!;
  checkPlaceholders(container.command, container.stdin, tool.inputSchema);
  const argv0 = container.command[0]!;
  if (profile.backend === 'container' && !PLACEHOLDER.test(argv0) && !profile.commands.includes(argv0)) {
    throw new Error(`command "${argv0}" is not in the allowlist of profile "${profile.name}" (allowed: ${profile.commands.join(', ')})`);
  }
  return {...base, container};
}

/** Every placeholder must name a property declared in the input schema. */
function checkPlaceholders(command: readonly string[], stdin: string | undefined, inputSchema: Record<string, unknown>): void {
  const properties = (inputSchema.properties ?? {}) as Record<string, unknown>;
  for (const element of [...command, ...(stdin && stdin !== 'json' ? [stdin] : [])]) {
    const match = PLACEHOLDER.exec(element);
    if (match && !Object.hasOwn(properties, match[2]!)) {
      throw new Error(`placeholder ${element} names "${match[2]}", which inputSchema.properties does not declare`);
    }
  }
}

/**
 * Resolves `entry` inside the package directory and proves it stays there: no absolute path,
 * no `..` escape, and after resolving symlinks (realpath) still inside the package's realpath.
 * @throws Error naming the entry and why it is refused.
 */
export async function resolveInside(packageDir: string, entry: string): Promise<string> {
  if (isAbsolute(entry) || entry.includes('\0')) throw new Error(`entry "${entry}" must be a relative path inside the package`);
  const root = await realpath(packageDir);
  const lexical = resolve(root, entry);
  if (!isWithin(root, lexical)) throw new Error(`entry "${entry}" escapes the package directory`);
  let real: string;
  try {
    real = await realpath(lexical);
  } catch {
    throw new Error(`entry "${entry}" does not exist (is the package built?)`);
  }
  if (!isWithin(root, real)) throw new Error(`entry "${entry}" resolves (through a symlink) outside the package directory`);
  if (!(await stat(real)).isFile()) throw new Error(`entry "${entry}" is not a file`);
  return real;
}
