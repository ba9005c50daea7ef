// Resources, resource templates and prompts of hosted MCP servers: pinned at load, routed by a table, verified against each fresh server's listing, turned into jobs.
import type {ContainerJob, ListingVerdict, ServerJob, ServerOperation} from '../backends/backend.ts';
import {ToolcellError} from '../errors.ts';
import {authorizeArgv} from './command.ts';
import type {HostedPackageManifest} from './manifest-schema.ts';
import {definitionSha256, diffDefinitions, PINNED_FIELDS_BY_KIND, type PinnedKind, type ServerToolDefinition} from './pins.ts';
import type {ContainerProfile} from './profile-schema.ts';
import type {ContainerGrants} from './to-job.ts';
import {mcpToolName} from './tool-definition.ts';

/** A pinned definition of one kind: its SHA-256 and the definition as approved. */
export interface ContentPin {
  readonly sha256: string;
  readonly definition: ServerToolDefinition;
}

/** How a package's server is started (the package-level part of tool-definition.ts HostedServerEntry). */
export interface HostedServerStart {
  readonly source: string;
  readonly image: string;
  readonly imageId: string;
  readonly command: readonly string[];
  readonly args: readonly string[];
  /** Set when a pin broke before any request (profile or image changed since add): every request is `DENIED` (`rule: "pin"`). */
  readonly drift?: {readonly message: string; readonly changes: readonly string[]};
}

/** A prompt served as `name` (`<package>__<prompt>`, or bare for an unprefixed package). */
export interface HostedPrompt {
  readonly name: string;
  /** The prompt's name as the server lists it. */
  readonly serverName: string;
  readonly pin: ContentPin;
}

/** A resource (routed by its exact URI, unchanged) or a resource template (routed by matching its URI template). */
export interface HostedResource {
  readonly kind: 'resource' | 'resourceTemplate';
  /** The URI (resource) or URI template (resourceTemplate), as pinned. */
  readonly key: string;
  readonly pin: ContentPin;
  /** Templates: whether a URI matches (RFC 6570 level 1-3 expressions, see {@link templateMatcher}). */
  readonly matches?: (uri: string) => boolean;
}

/** Everything one hosted package offers besides tools. */
export interface HostedContent {
  readonly packageName: string;
  readonly packageVersion: string;
  readonly profile: ContainerProfile;
  readonly server: HostedServerStart;
  readonly prompts: readonly HostedPrompt[];
  readonly resources: readonly HostedResource[];
  readonly templates: readonly HostedResource[];
}

/**
 * The pins of a hosted manifest's `resources`, `resourceTemplates` and `prompts` (all optional)
 * checked against their definitions, as {@link HostedContent}; undefined when it has none.
 * @throws Error naming the entry whose sha256 does not match its definition (the package is rejected).
 */
export function hostedContentOf(manifest: HostedPackageManifest, profile: ContainerProfile, server: HostedServerStart, unprefixed: boolean): HostedContent | undefined {
  const pin = (kind: PinnedKind, label: string, sha256: string, definition: ServerToolDefinition): ContentPin => {
    if (definitionSha256(definition, PINNED_FIELDS_BY_KIND[kind]) !== sha256) {
      throw new Error(`${label}: its sha256 pin does not match its definition (the manifest was edited after add; run toolcell update)`);
    }
    return {sha256, definition};
  };
  const prompts = (manifest.prompts ?? []).map((p): HostedPrompt => ({
    name: unprefixed ? p.name : mcpToolName(manifest.name, p.name),
    serverName: p.name,
    pin: pin('prompt', `prompt "${p.name}"`, p.sha256, p.definition),
  }));
  const resources = (manifest.resources ?? []).map((r): HostedResource => ({
    kind: 'resource', key: r.uri, pin: pin('resource', `resource "${r.uri}"`, r.sha256, r.definition as ServerToolDefinition),
  }));
  const templates = (manifest.resourceTemplates ?? []).map((t): HostedResource => ({
    kind: 'resourceTemplate', key: t.uriTemplate, matches: templateMatcher(t.uriTemplate),
    pin: pin('resourceTemplate', `resource template "${t.uriTemplate}"`, t.sha256, t.definition as ServerToolDefinition),
  }));
  if (prompts.length + resources.length + templates.length === 0) return undefined;
  return {packageName: manifest.name, packageVersion: manifest.version, profile, server, prompts, resources, templates};
}

/** Most expressions a pinned URI template may hold; a template with more is refused at load. */
export const MAX_TEMPLATE_EXPRESSIONS = 16;

type TemplateToken = {lit: string} | {allow: (c: string) => boolean; min: 0 | 1; first?: string};

/**
 * A matcher for an RFC 6570 URI template: literal parts must match exactly; a simple expression
 * `{var}` (or `{a,b}`) matches one or more characters other than `/ ? #`; `{+var}` and `{#var}`
 * match anything (possibly nothing); `{/var}`, `{.var}`, `{;var}`, `{?var}`, `{&var}` match
 * nothing or a part without `#` that starts with their operator. Runs in time linear in the URI
 * for each token (a dynamic programme over positions, no backtracking regex), so a hostile
 * template (pinned from the server) cannot make a read spin. Matching only *routes* a read to the
 * package whose server answers it; it does NOT check that the server will accept the URI.
 * @throws Error for a template with more than {@link MAX_TEMPLATE_EXPRESSIONS} expressions or an unclosed brace.
 */
export function templateMatcher(template: string): (uri: string) => boolean {
  const tokens: TemplateToken[] = [];
  let last = 0;
  let count = 0;
  for (const m of template.matchAll(/\{([+#./;?&]?)[A-Za-z0-9_.,%*:]*\}/g)) {
    if (++count > MAX_TEMPLATE_EXPRESSIONS) throw new Error(`URI template "${template.slice(0, 100)}" has more than ${MAX_TEMPLATE_EXPRESSIONS} expressions`);
    if (m.index > last) tokens.push({lit: template.slice(last, m.index)});
    const op = m[1]!;
    if (op === '') tokens.push({allow: (c) => c !== '/' && c !== '?' && c !== '#', min: 1});
    else if (op === '+' || op === '#') tokens.push({allow: () => true, min: 0});
    else tokens.push({allow: (c) => c !== '#', min: 0, first: op});
    last = m.index + m[0].length;
  }
  if (last < template.length) tokens.push({lit: template.slice(last)});
  if (tokens.some((t) => 'lit' in t && (t.lit.includes('{') || t.lit.includes('}')))) throw new Error(`URI template "${template.slice(0, 100)}" has a brace that is not a valid expression`);
  return (uri) => {
    if (uri.length > 8192) return false;
    const n = uri.length;
    let cur = new Uint8Array(n + 1);
    cur[0] = 1;
    for (const token of tokens) {
      const next = new Uint8Array(n + 1);
      if ('lit' in token) {
        for (let j = 0; j + token.lit.length <= n; j++) if (cur[j] && uri.startsWith(token.lit, j)) next[j + token.lit.length] = 1;
      } else {
        // open: some start i < j with cur[i], a valid first character at i, and allowed characters i..j-1.
        let open = false;
        if (token.min === 0) next[0] = cur[0]!;
        for (let j = 1; j <= n; j++) {
          const c = uri[j - 1]!;
          const ok = token.allow(c);
          open = ok && (open || (cur[j - 1] === 1 && (token.first === undefined || c === token.first)));
          next[j] = open || (token.min === 0 && cur[j] === 1) ? 1 : 0;
        }
      }
      cur = next;
    }
    return cur[n] === 1;
  };
}

/**
 * Routing table of every loaded package's prompts and resources. Names of prompts are unique
 * (they carry the package prefix); a resource URI belongs to one package; a template belongs to
 * one package, and a static URI of one package must not match another package's template.
 * Templates of two packages that both match some URI cannot be told apart at load in general:
 * a read such a URI is then refused as unknown (never sent to either server).
 */
export class HostedCatalog {
  readonly #prompts = new Map<string, {content: HostedContent; prompt: HostedPrompt}>();
  readonly #resources = new Map<string, {content: HostedContent; resource: HostedResource}>();
  readonly #templates: Array<{content: HostedContent; resource: HostedResource}> = [];
  readonly #packages: HostedContent[] = [];

  /**
   * Adds one package's content, or refuses all of it.
   * @throws Error naming the clash (prompt name, URI or template taken by another package).
   */
  add(content: HostedContent): void {
    for (const p of content.prompts) {
      const other = this.#prompts.get(p.name);
      if (other) throw new Error(`prompt name "${p.name}" is already served by package "${other.content.packageName}"`);
    }
    for (const r of content.resources) {
      const other = this.#resources.get(r.key) ?? this.#templates.find((t) => t.resource.matches!(r.key));
      if (other) throw new Error(`resource URI "${r.key}" is already served by package "${other.content.packageName}"`);
    }
    for (const t of content.templates) {
      const other = this.#templates.find((o) => o.resource.key === t.key) ?? [...this.#resources.values()].find((o) => t.matches!(o.resource.key));
      if (other) throw new Error(`resource template "${t.key}" would route URIs of package "${other.content.packageName}"`);
    }
    for (const p of content.prompts) this.#prompts.set(p.name, {content, prompt: p});
    for (const r of content.resources) this.#resources.set(r.key, {content, resource: r});
    for (const t of content.templates) this.#templates.push({content, resource: t});
    this.#packages.push(content);
  }

  /** The packages, in load order. */
  get packages(): readonly HostedContent[] {
    return this.#packages;
  }

  prompt(name: string): {content: HostedContent; prompt: HostedPrompt} | undefined {
    return this.#prompts.get(name);
  }

  /** The package that serves `uri`: its exact resource, else the one template that matches (two matching templates: none). */
  resource(uri: string): {content: HostedContent; resource: HostedResource} | undefined {
    const exact = this.#resources.get(uri);
    if (exact) return exact;
    const matching = this.#templates.filter((t) => t.resource.matches!(uri));
    return matching.length === 1 ? matching[0] : undefined;
  }

  get hasPrompts(): boolean {
    return this.#prompts.size > 0;
  }

  get hasResources(): boolean {
    return this.#resources.size > 0 || this.#templates.length > 0;
  }
}

/** The list request a fresh server answers before a request of each kind, and the key of its items. */
const LISTING = {
  prompt: {method: 'prompts/list', key: 'prompts', field: 'name'},
  resource: {method: 'resources/list', key: 'resources', field: 'uri'},
  resourceTemplate: {method: 'resources/templates/list', key: 'resourceTemplates', field: 'uriTemplate'},
} as const;

/**
 * Compares a fresh server's listing with one pinned entry: the request may go on only when the
 * server lists that entry (by its key) exactly once and its canonical definition hashes to the
 * pin. Other entries' changes do not refuse this request (they are refused when requested). Pure.
 */
export function verifyContentListing(kind: Exclude<PinnedKind, 'tool'>, key: string, pin: ContentPin, label: string,
  listed: ReadonlyArray<Readonly<Record<string, unknown>>>): ListingVerdict {
  const field = LISTING[kind].field;
  const seen = listed.filter((entry) => entry[field] === key);
  let changes: string[];
  if (seen.length === 0) changes = [`the server no longer lists this ${kind === 'prompt' ? 'prompt' : kind === 'resource' ? 'resource' : 'resource template'}`];
  else if (seen.length > 1) changes = [`the server lists it ${seen.length} times`];
  else {
    let hash: string | undefined;
    try {
      hash = definitionSha256(seen[0] as ServerToolDefinition, PINNED_FIELDS_BY_KIND[kind]);
    } catch {
      hash = undefined;
    }
    if (hash === pin.sha256) return {ok: true};
    changes = diffDefinitions(pin.definition, seen[0] as ServerToolDefinition, PINNED_FIELDS_BY_KIND[kind]);
    if (changes.length === 0) changes = ['the definition no longer matches its SHA-256 pin'];
  }
  return {
    ok: false,
    message: `${label} is refused: the hosted server's definition of it differs from the one approved (pin): ${changes.slice(0, 3).join('; ')}${changes.length > 3 ? `; and ${changes.length - 3} more` : ''}.`,
    changes,
  };
}

/**
 * The job of one `prompts/get` or `resources/read` on a hosted server: the same container as a
 * call of one of its tools (pinned image ID, the package profile's floor, limits and grants,
 * argv[0] through the profile's allowlist), with the listing of the entry's kind verified against
 * its pin before the request is sent. Pure.
 * @throws ToolcellError `DENIED` (`rule: "pin"` when a pin broke at load; `rule: "commands"` when argv[0] is not allowlisted).
 */
export function toContentJob(content: HostedContent, request: {kind: 'prompt'; prompt: HostedPrompt; arguments: Record<string, string>} | {kind: 'resource'; resource: HostedResource; uri: string},
  id: string, grants: ContainerGrants | undefined, principal?: string): ServerJob {
  const label = request.kind === 'prompt' ? `The prompt "${request.prompt.name}"` : `The resource "${request.uri.slice(0, 200)}"`;
  if (content.server.drift !== undefined) {
    throw new ToolcellError('DENIED', `${label} is refused: ${content.server.drift.message}.`, {rule: 'pin', changes: [...content.server.drift.changes]});
  }
  const profile = content.profile;
  const argv = authorizeArgv([...content.server.command, ...content.server.args], grants?.commands ?? new Map(), profile.name);
  const limits = {...profile.limits};
  const sandbox: ContainerJob = {
    kind: 'container', id, image: content.server.imageId, argv, limits, network: profile.network,
    readOnlyRoot: profile.filesystem.readOnlyRoot, tmpfs: {...profile.filesystem.tmpfs}, mounts: [...(grants?.mounts ?? [])],
    runtime: profile.runtime, profile: profile.name,
    ...(profile.network === 'none' ? {} : {egress: {callId: id, principal: principal ?? 'unknown', tool: `${content.packageName}:${request.kind}`, profile: profile.name, grant: profile.network.egress}}),
  };
  let operation: ServerOperation;
  let verify: ServerJob['verifyListing'];
  if (request.kind === 'prompt') {
    const {prompt} = request;
    operation = {list: {method: LISTING.prompt.method, key: LISTING.prompt.key}, method: 'prompts/get', params: {name: prompt.serverName, arguments: request.arguments}};
    verify = (listed) => verifyContentListing('prompt', prompt.serverName, prompt.pin, label, listed);
  } else {
    const {resource} = request;
    const listing = LISTING[resource.kind];
    operation = {list: {method: listing.method, key: listing.key}, method: 'resources/read', params: {uri: request.uri}};
    verify = (listed) => verifyContentListing(resource.kind, resource.key, resource.pin, label, listed);
  }
  return {
    kind: 'server', id, sandbox,
    tool: request.kind === 'prompt' ? request.prompt.serverName : request.resource.key,
    args: {}, verifyListing: verify, limits, packageName: content.packageName, operation,
  };
}
