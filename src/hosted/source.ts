// What `toolcell add SOURCE` names: parses npm:, pypi:, oci: and dir: sources (pure, no I/O).
import {ConfigError} from '../errors.ts';

/**
 * A hosted server's source as the operator wrote it (ARCHITECTURE.md, "Hosted MCP servers"):
 * - `npm:<package>[@<version|range|tag>]` → `{type: 'npm', name, spec}` (`spec` default `latest`);
 * - `pypi:<package>[==<version>]` → `{type: 'pypi', name, version?}`;
 * - `pypi:<path to a .whl, .tar.gz or .zip>` (a path: contains `/` or ends in one of those) →
 *   `{type: 'pypi-file', path}`;
 * - `oci:<local image reference>` → `{type: 'oci', image}`;
 * - `dir:<path>` → `{type: 'dir', path}`.
 */
export type HostedSource =
  | {type: 'npm'; name: string; spec: string}
  | {type: 'pypi'; name: string; version?: string}
  | {type: 'pypi-file'; path: string}
  | {type: 'oci'; image: string}
  | {type: 'dir'; path: string};

/** npm package names (npm's validate-npm-package-name: lower case, URL-safe, scope optional, at most 214 characters). */
export const NPM_NAME = /^(?:@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
/** npm version, range or dist-tag: semver characters only; never a URL, path or git spec, never an option. */
export const NPM_SPEC = /^[A-Za-z0-9^~<>=*.|+ -]{1,100}$/;
/** PyPI project names (PEP 508 / PEP 503 before normalization). */
export const PYPI_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$/;
/** An exact PyPI version (PEP 440 characters). */
export const PYPI_VERSION = /^[0-9][0-9A-Za-z.!+_-]{0,63}$/;
/** A local image reference: `name[:tag]` or `sha256:<id>` (Docker's reference grammar, no digest pins, no registry-only forms). */
export const OCI_IMAGE = /^(?:sha256:[0-9a-f]{12,64}|[a-z0-9][a-z0-9._/-]{0,200}(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?)$/;

const SOURCES_HELP = 'npm:<package>[@<version or range>], pypi:<package>[==<version>], pypi:<path to a wheel or sdist>, oci:<local image> or dir:<path>';

/**
 * Parses a SOURCE argument of `toolcell add`.
 * @throws ConfigError (source "SOURCE") naming what is wrong and the forms allowed; nothing is
 *   resolved or run for a source that does not parse.
 */
export function parseSource(text: string): HostedSource {
  const colon = text.indexOf(':');
  const scheme = colon < 0 ? '' : text.slice(0, colon);
  const rest = colon < 0 ? '' : text.slice(colon + 1);
  const fail = (why: string): never => {
    throw new ConfigError('SOURCE', `${JSON.stringify(text.slice(0, 200))} ${why}. Allowed: ${SOURCES_HELP}.`);
  };
  if (text.includes('\0') || /[\r\n]/.test(text)) fail('contains a control character');
  switch (scheme) {
    case 'npm': {
      const at = rest.indexOf('@', rest.startsWith('@') ? 1 : 0);
      const name = at < 0 ? rest : rest.slice(0, at);
      const spec = at < 0 ? 'latest' : rest.slice(at + 1).trim();
      if (!NPM_NAME.test(name) || name.length > 214) fail('is not an npm package name (lower case, optionally @scope/name)');
      if (!NPM_SPEC.test(spec) || spec.startsWith('-')) fail('has a version that is not a version, range or tag (URLs, paths and git specs are not accepted)');
      return {type: 'npm', name, spec};
    }
    case 'pypi': {
      if (rest.includes('/') || /\.(?:whl|tar\.gz|zip)$/i.test(rest)) {
        if (!/\.(?:whl|tar\.gz|zip)$/i.test(rest)) fail('names a path that is not a wheel (.whl) or sdist (.tar.gz, .zip)');
        return {type: 'pypi-file', path: rest};
      }
      const [name, version, extra] = rest.split('==');
      if (extra !== undefined || name === undefined || !PYPI_NAME.test(name)) fail('is not a PyPI project name, optionally ==<exact version>');
      if (version !== undefined && !PYPI_VERSION.test(version)) fail('has a version that is not an exact PEP 440 version');
      return version === undefined ? {type: 'pypi', name: name!} : {type: 'pypi', name: name!, version};
    }
    case 'oci':
      if (!OCI_IMAGE.test(rest)) fail('is not a local image reference such as my/server:1.0 or sha256:<id>');
      return {type: 'oci', image: rest};
    case 'dir':
      if (rest.length === 0) fail('names no folder');
      return {type: 'dir', path: rest};
    default:
      return fail('has no known source type');
  }
}

/**
 * The package name `add` uses when `--name` is not given: the last part of the source's name,
 * lower-cased, without the usual `mcp-server-` / `server-` / `mcp-` prefixes and `-mcp-server` /
 * `-mcp` suffixes, other characters replaced by `-`. E.g. `@modelcontextprotocol/server-everything`
 * → `everything`, `mcp-server-time` → `time`, `oci:acme/tools:1` → `tools`.
 * @returns a name matching `^[a-z][a-z0-9-]*$` without `__`, or undefined when none can be made
 *   (then `--name` is required).
 */
export function defaultServerName(source: HostedSource): string | undefined {
  let base: string;
  switch (source.type) {
    case 'npm': base = source.name.split('/').pop()!; break;
    case 'pypi': base = source.name; break;
    case 'pypi-file': base = (source.path.split('/').pop() ?? '').replace(/\.(?:whl|tar\.gz|zip)$/i, '').split('-')[0] ?? ''; break;
    case 'oci': base = source.image.startsWith('sha256:') ? '' : source.image.split(':')[0]!.split('/').pop()!; break;
    case 'dir': base = source.path.replace(/\/+$/, '').split('/').pop() ?? ''; break;
  }
  let name = base.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  for (const prefix of ['mcp-server-', 'server-', 'mcp-']) if (name.startsWith(prefix) && name.length > prefix.length) name = name.slice(prefix.length);
  for (const suffix of ['-mcp-server', '-server', '-mcp']) if (name.endsWith(suffix) && name.length > suffix.length) name = name.slice(0, -suffix.length);
  name = name.slice(0, 40).replace(/-+$/, '');
  return /^[a-z][a-z0-9-]*$/.test(name) ? name : undefined;
}

/**
 * Compares two semantic versions (SemVer 2.0.0 §11: numeric major.minor.patch, a pre-release
 * sorts before its release, pre-release identifiers compared numerically or by ASCII; build
 * metadata ignored). Returns <0, 0 or >0. Strings that are not semver compare by code units.
 */
export function compareSemver(a: string, b: string): number {
  const parse = (v: string) => /^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/.exec(v);
  const x = parse(a);
  const y = parse(b);
  if (!x || !y) return a < b ? -1 : a > b ? 1 : 0;
  for (let i = 1; i <= 3; i++) {
    const d = Number(x[i]) - Number(y[i]);
    if (d !== 0) return d;
  }
  if (x[4] === undefined || y[4] === undefined) return (x[4] === undefined ? 1 : 0) - (y[4] === undefined ? 1 : 0);
  const xs = x[4].split('.');
  const ys = y[4].split('.');
  for (let i = 0; i < Math.max(xs.length, ys.length); i++) {
    const p = xs[i];
    const q = ys[i];
    if (p === undefined) return -1;
    if (q === undefined) return 1;
    const pn = /^\d+$/.test(p);
    const qn = /^\d+$/.test(q);
    if (pn && qn) {
      const d = Number(p) - Number(q);
      if (d !== 0) return d;
    } else if (pn !== qn) {
      return pn ? -1 : 1;
    } else if (p !== q) {
      return p < q ? -1 : 1;
    }
  }
  return 0;
}

/** The canonical source string written to `server.source`: the resolved form (`npm:<name>@<exact version>`, `oci:<image>`, ...). */
export function formatSource(source: HostedSource): string {
  switch (source.type) {
    case 'npm': return `npm:${source.name}@${source.spec}`;
    case 'pypi': return `pypi:${source.name}${source.version ? `==${source.version}` : ''}`;
    case 'pypi-file': return `pypi:${source.path}`;
    case 'oci': return `oci:${source.image}`;
    case 'dir': return `dir:${source.path}`;
  }
}
