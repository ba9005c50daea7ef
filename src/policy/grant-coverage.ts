// Which configured principals of the HTTP service can call no served tool: a warning each, and whether nobody can.
import {authConfigured, grantedPackages, type ServiceConfig} from './service-config.ts';

/** What `grantCoverage` found. */
export interface GrantCoverage {
  /** One line per principal that can list and call no served tool, naming it and why. */
  readonly warnings: readonly string[];
  /**
   * True when authentication is configured and no principal the configuration names (an API key,
   * or a token subject or scope in `grants`) can call any served tool: the service would serve
   * nothing to anyone.
   */
  readonly nobody: boolean;
}

/**
 * Checks the HTTP service configuration's grants against the packages actually served (deny by
 * default makes a missing grant silent at call time: the principal just sees no tools).
 * - Without authentication (loopback only) the local caller is granted every package: nothing to say.
 * - Each API key (`key:NAME`) whose grants name no served package gets a warning, unless it is a
 *   `/metrics` reader (a dedicated scraper key has no grants on purpose).
 * - Each `sub:`/`scope:` principal in `grants` whose packages are none of the served ones gets a
 *   warning; OAuth configured with no `sub:`/`scope:` grant at all gets one line too.
 * Not covered: a token's actual subject and scopes are known only at call time, so a principal
 * reached only through a token's scopes is judged by its `scope:` grants alone; a served package
 * may still have tools its principal's calls are refused for other reasons (quotas, a profile).
 *
 * @param servedPackages names of the packages with at least one served tool
 */
export function grantCoverage(config: ServiceConfig, servedPackages: readonly string[]): GrantCoverage {
  if (!authConfigured(config)) return {warnings: [], nobody: servedPackages.length === 0};
  const served = new Set(servedPackages);
  const warnings: string[] = [];
  let anyone = false;
  const judge = (id: string, what: string) => {
    const granted = grantedPackages(config, [id]);
    const callable = granted === '*' ? [...served] : granted.filter((p) => served.has(p));
    if (callable.length > 0) {
      anyone = true;
      return;
    }
    // Granted everything while nothing is served: the refusal to serve nothing says so, once.
    if (granted === '*') return;
    if (granted.length === 0) {
      warnings.push(`${what} ${id} has no grant: it can list and call no tool (add {"principal": "${id}", "packages": [...]} to "grants")`);
    } else {
      warnings.push(`${what} ${id} is granted only packages that are not served (${granted.join(', ')}): it can list and call no tool`);
    }
  };
  const readers = new Set(config.metrics.principals);
  for (const key of config.apiKeys) {
    const id = `key:${key.name}`;
    if (readers.has(id) && !config.grants.some((g) => g.principal === id)) continue;
    judge(id, 'API key principal');
  }
  const tokenPrincipals = [...new Set(config.grants.map((g) => g.principal).filter((p) => p.startsWith('sub:') || p.startsWith('scope:')))];
  for (const id of tokenPrincipals) judge(id, id.startsWith('sub:') ? 'token subject' : 'token scope');
  if (config.oauth !== undefined && tokenPrincipals.length === 0) {
    warnings.push('OAuth is configured, but no grant names a token subject (sub:SUBJECT) or scope (scope:SCOPE): access tokens can list and call no tool');
  }
  return {warnings, nobody: !anyone};
}
