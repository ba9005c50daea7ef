// What `toolcell add`/`update` show and write: the permission summary, the tool list, name checks and the pinned toolcell.json (pure).
import * as z from 'zod';
import {HostedPackageManifest, MAX_HOSTED_TOOL_NAME, SERVER_TOOL_NAME} from '../policy/manifest-schema.ts';
import {definitionSha256, PINNED_FIELDS, PINNED_FIELDS_BY_KIND, profileSha256, type PinnedKind, type ServerToolDefinition} from '../policy/pins.ts';
import type {ContainerProfile, Profile} from '../policy/profile-schema.ts';
import {networkInWords} from '../egress/policy.ts';
import {makeVisible} from '../policy/screening.ts';

/** Longest description shown per tool in the confirmation (characters); the rest is counted, and screening covers it all. */
export const SHOWN_DESCRIPTION_CHARS = 2_000;

/**
 * A few lines saying what a container profile grants, for the confirmation of `add`/`update` and
 * for `list`: runtime, limits (timeout ms, memory MB with no swap, CPUs, processes, output bytes),
 * network, filesystem (root, tmpfs, mounts with ro/rw) and the command allowlist.
 */
export function permissionSummary(profile: Profile): string[] {
  if (profile.backend !== 'container') return [`profile ${profile.name}: ${profile.backend} backend (cannot host a server)`];
  const l = profile.limits;
  const fs = profile.filesystem;
  const tmpfs = Object.entries(fs.tmpfs).map(([path, size]) => `${path} ${size}`).join(', ');
  const mounts = fs.mounts.map((m) => `${m.source} → ${m.target} (${m.readOnly ? 'read-only' : 'read-write'})`).join(', ');
  return [
    `profile ${profile.name} (runtime ${profile.runtime})`,
    `  limits: ${l.timeoutMs} ms per call, ${l.memoryMb} MB memory (no swap), ${l.cpus} CPU, ${l.pids} processes, ${l.outputBytes} B output`,
    `  network: ${networkInWords(profile.network)}`,
    `  filesystem: root ${fs.readOnlyRoot ? 'read-only' : 'WRITABLE'}; tmpfs ${tmpfs || 'none'}; mounts ${mounts || 'none'}`,
    `  commands: ${profile.commands.join(', ')}`,
  ];
}

/** The grant lines that differ between two profiles (`-` approved, `+` now), or [] when the grants are the same. */
export function grantChanges(approved: Profile | undefined, current: Profile): string[] {
  if (approved === undefined) return [`+ ${permissionSummary(current).join('\n+ ')}`, '(the profile as approved was not recorded)'];
  if (profileSha256(approved as unknown as Record<string, unknown>) === profileSha256(current as unknown as Record<string, unknown>)) return [];
  const before = permissionSummary(approved);
  const after = permissionSummary(current);
  return [...before.filter((l) => !after.includes(l)).map((l) => `- ${l.trim()}`), ...after.filter((l) => !before.includes(l)).map((l) => `+ ${l.trim()}`)];
}

/** One tool as shown before confirmation: name, title and description with invisible characters made visible. */
export function describeTool(tool: Record<string, unknown>): string[] {
  const name = makeVisible(String(tool.name));
  const title = typeof tool.title === 'string' ? makeVisible(tool.title) : undefined;
  const description = typeof tool.description === 'string' ? makeVisible(tool.description) : '(no description)';
  const shown = description.length > SHOWN_DESCRIPTION_CHARS
    ? `${description.slice(0, SHOWN_DESCRIPTION_CHARS)}… (${description.length - SHOWN_DESCRIPTION_CHARS} more characters)`
    : description;
  return [`  ${name}${title ? ` — ${title}` : ''}`, ...shown.split(/\r?\n/).map((line) => `      ${line}`)];
}

/**
 * Why a server's tool names cannot be served under `<package>__<tool>`: each must match
 * `[A-Za-z0-9_-]{1,64}` (LLM APIs allow no other characters) and the MCP name at most 64
 * characters in all; names must be unique. Returns one reason per refused tool ([] when all fit).
 */
export function toolNameProblems(packageName: string, tools: readonly Record<string, unknown>[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const tool of tools) {
    const name = tool.name;
    if (typeof name !== 'string') {
      problems.push('a tool has no string name');
      continue;
    }
    const shown = makeVisible(name).slice(0, 100);
    if (!SERVER_TOOL_NAME.test(name)) problems.push(`tool "${shown}": the name must be 1-64 characters of A-Z, a-z, 0-9, _ or -`);
    else if (`${packageName}__${name}`.length > MAX_HOSTED_TOOL_NAME) problems.push(`tool "${shown}": the MCP name "${packageName}__${name}" is longer than ${MAX_HOSTED_TOOL_NAME} characters (choose a shorter --name)`);
    if (seen.has(name)) problems.push(`tool "${shown}" is listed twice`);
    seen.add(name);
  }
  return problems;
}

/** The pinned fields of a listed tool (policy/pins.ts PINNED_FIELDS); `icons`, `_meta` and unknown keys are dropped (never served). */
export function pinnedDefinition(tool: Record<string, unknown>): ServerToolDefinition {
  const out: Record<string, unknown> = {};
  for (const field of PINNED_FIELDS) if (Object.hasOwn(tool, field) && tool[field] !== undefined) out[field] = tool[field];
  return out as ServerToolDefinition;
}

/** What a hosted package's manifest is made from. */
export interface HostedPackageInput {
  name: string;
  version: string;
  source: string;
  integrity?: string;
  image: string;
  imageId: string;
  command: readonly string[];
  args: readonly string[];
  profile: Profile;
  tools: readonly Record<string, unknown>[];
  /** What the server listed besides tools (absent or empty: nothing of that kind is pinned or served). */
  prompts?: readonly Record<string, unknown>[];
  resources?: readonly Record<string, unknown>[];
  resourceTemplates?: readonly Record<string, unknown>[];
}

/** The pinned fields of one listed prompt, resource or template, and their SHA-256 (pins.ts PINNED_FIELDS_BY_KIND). */
function pinOf(kind: Exclude<PinnedKind, 'tool'>, item: Record<string, unknown>): {sha256: string; definition: Record<string, unknown>} {
  const fields: readonly string[] = PINNED_FIELDS_BY_KIND[kind];
  const definition: Record<string, unknown> = {};
  for (const field of fields) if (Object.hasOwn(item, field) && item[field] !== undefined) definition[field] = item[field];
  return {sha256: definitionSha256(definition as ServerToolDefinition, PINNED_FIELDS_BY_KIND[kind]), definition};
}

/**
 * The `toolcell.json` of a hosted server (ARCHITECTURE.md "Hosted MCP servers"), validated with
 * the loader's own schema (HostedPackageManifest), so that what `add` writes is what `serve` loads:
 * per tool the pinned definition and its SHA-256, the server section with the profile's
 * SHA-256 as approved, lifetime `call`.
 * @throws Error naming the field when the result does not fit the schema (e.g. a schema that is
 *   not `"type": "object"`), with zod's message.
 */
export function hostedManifest(input: HostedPackageInput): HostedPackageManifest {
  const raw = {
    name: input.name,
    version: input.version,
    description: `From ${input.source}`.slice(0, 2000),
    server: {
      source: input.source,
      ...(input.integrity ? {integrity: input.integrity} : {}),
      image: input.image,
      imageId: input.imageId,
      command: [...input.command],
      ...(input.args.length > 0 ? {args: [...input.args]} : {}),
      transport: 'stdio',
      lifetime: 'call',
      profileSha256: profileSha256(input.profile as unknown as Record<string, unknown>),
    },
    profile: input.profile.name,
    tools: input.tools.map((tool) => {
      const definition = pinnedDefinition(tool);
      return {name: definition.name, sha256: definitionSha256(definition), definition};
    }),
    // Prompts, resources and templates are pinned like tools (served fresh per request; policy/hosted-content.ts).
    ...(input.prompts?.length ? {prompts: input.prompts.map((p) => ({name: p.name, ...pinOf('prompt', p)}))} : {}),
    ...(input.resources?.length ? {resources: input.resources.map((r) => ({uri: r.uri, ...pinOf('resource', r)}))} : {}),
    ...(input.resourceTemplates?.length ? {resourceTemplates: input.resourceTemplates.map((t) => ({uriTemplate: t.uriTemplate, ...pinOf('resourceTemplate', t)}))} : {}),
  };
  const parsed = HostedPackageManifest.safeParse(raw);
  if (!parsed.success) throw new Error(z.prettifyError(parsed.error).replaceAll('\n', '; '));
  return parsed.data;
}

/** The container profile a hosted server may run under, or why not. */
export function serverProfileProblem(profile: Profile | undefined, name: string, known: readonly string[], argv0: string | undefined): string | undefined {
  if (profile === undefined) return `unknown profile "${name}"; known: ${known.join(', ')}`;
  if (profile.backend !== 'container') return `profile "${name}" is for the ${profile.backend} backend; a hosted server needs a container profile`;
  const p = profile as ContainerProfile;
  if (argv0 !== undefined && !p.commands.includes(argv0)) return `the server's command "${argv0}" is not in the allowlist of profile "${name}" (allowed: ${p.commands.join(', ')})`;
  return undefined;
}
