// Who is calling, and which tools a principal may see and call.
import type {ToolDefinition} from './tool-definition.ts';

/**
 * Who is calling. On stdio: the single local user (`localPrincipal`). Over HTTP: the
 * subject of a verified token or the name of an API key.
 */
export interface Principal {
  /** Stable id for audit and quotas, e.g. `local`, `key:ci-bot`, `sub:alice`. */
  readonly id: string;
  readonly kind: 'local' | 'api-key' | 'oauth';
  /** OAuth scopes granted by the token (empty for others). */
  readonly scopes: readonly string[];
  /** Tool packages this principal may list and call; `'*'` grants every loaded package. */
  readonly packages: readonly string[] | '*';
}

/** The local user of a stdio server: the one principal, granted every loaded package. */
export const localPrincipal: Principal = Object.freeze({id: 'local', kind: 'local', scopes: [], packages: '*'});

/**
 * Whether `principal` may see and call `tool`. Deny by default: only packages named in the
 * principal's grant are allowed. Callers must make a refusal look exactly like an unknown tool.
 */
export function mayUseTool(principal: Principal, tool: Pick<ToolDefinition, 'packageName'>): boolean {
  return principal.packages === '*' || principal.packages.includes(tool.packageName);
}
