// What `toolcell list` says about hosted MCP servers: source, pins (version, integrity, image ID) and the grants they run under.
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import type {LoadedPackage} from '../policy/load-packages.ts';
import {HostedPackageManifest, isHostedManifest} from '../policy/manifest-schema.ts';
import {permissionSummary} from './hosted-package.ts';

/** One hosted server as `toolcell list` shows it. */
export interface HostedServerSummary {
  name: string;
  version: string;
  source: string;
  integrity?: string;
  image: string;
  imageId: string;
  command: string[];
  lifetime: 'call' | 'principal';
  profile: string;
  /** permissionSummary lines of the profile as loaded now. */
  grants: string[];
  tools: string[];
  /** Why every call is refused (`rule: "pin"`) before any sandbox, when a pin broke at load (e.g. the profile changed since add). */
  drift?: string;
}

/**
 * The hosted servers among loaded packages, read from each package's `toolcell.json` (the loaded
 * tools do not carry the integrity). Packages that are not hosted servers are skipped; a manifest
 * that no longer parses is skipped too (the loader reports it as rejected).
 */
export function hostedServers(packages: readonly LoadedPackage[]): HostedServerSummary[] {
  const out: HostedServerSummary[] = [];
  for (const pkg of packages) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(join(pkg.dir, 'toolcell.json'), 'utf8'));
    } catch {
      continue;
    }
    if (!isHostedManifest(raw)) continue;
    const parsed = HostedPackageManifest.safeParse(raw);
    if (!parsed.success) continue;
    const m = parsed.data;
    const first = pkg.tools[0];
    const drift = first?.server?.drift?.message;
    out.push({
      name: m.name, version: m.version, source: m.server.source, ...(m.server.integrity ? {integrity: m.server.integrity} : {}),
      image: m.server.image, imageId: m.server.imageId, command: [...m.server.command, ...(m.server.args ?? [])], lifetime: m.server.lifetime,
      profile: m.profile, grants: first ? permissionSummary(first.profile) : [`profile ${m.profile}`], tools: pkg.tools.map((t) => t.name),
      ...(drift ? {drift} : {}),
    });
  }
  return out;
}

/** Text lines for `toolcell list`. */
export function formatHostedServers(servers: readonly HostedServerSummary[]): string[] {
  if (servers.length === 0) return [];
  const lines = [`${servers.length} hosted server(s):`];
  for (const s of servers) {
    lines.push(`  ${s.name} ${s.version}  from ${s.source}`);
    if (s.integrity) lines.push(`    integrity ${s.integrity}`);
    lines.push(`    image ${s.image} ${s.imageId}`, `    command ${JSON.stringify(s.command)}, one server per ${s.lifetime}`);
    for (const g of s.grants) lines.push(`    ${g}`);
    lines.push(`    tools: ${s.tools.join(', ') || '(none)'}`);
    if (s.drift) lines.push(`    REFUSED at every call: ${s.drift}`);
  }
  return lines;
}
