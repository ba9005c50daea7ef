/**
 * Resolving `pypi:<project>==<version>` against a package index the operator names: a wheelhouse
 * folder (`--find-links DIR`) or a simple repository API (`--index-url URL`, PEP 503 / PEP 691),
 * to one distribution file and its SHA-256.
 */
import {readdirSync, statSync} from 'node:fs';
import {join, resolve} from 'node:path';
import {ConfigError, ToolcellError} from '../errors.ts';
import {parseDistributionName} from './resolve-source.ts';

/** A distribution file an index offers. */
export interface Distribution {
  fileName: string;
  /** Lower-case hex SHA-256, when the index states it. */
  sha256?: string;
}

/** PEP 503 name normalization: lower case, runs of `-`, `_` and `.` become one `-`. */
export function normalizeProjectName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}

/** Rank of a file for installation (lower is better): pure-Python wheels, then sdists, then other wheels. */
function rank(fileName: string): number {
  if (/-none-any\.whl$/i.test(fileName)) return 0;
  if (/\.(?:tar\.gz|zip)$/i.test(fileName)) return 1;
  return 2;
}

/**
 * The files of `project` at exactly `version` among `files` (names parsed as PEP 427 wheels or
 * PEP 625 sdists; project names compared PEP 503-normalized, versions compared case-insensitively
 * as written), best first: pure-Python wheels, sdists, other wheels. Pure.
 */
export function matchingDistributions<T extends Distribution>(files: readonly T[], project: string, version: string): T[] {
  const want = normalizeProjectName(project);
  return files
    .filter((f) => {
      const parsed = parseDistributionName(f.fileName);
      return parsed !== undefined && normalizeProjectName(parsed.project) === want && parsed.version.toLowerCase() === version.toLowerCase();
    })
    .sort((a, b) => rank(a.fileName) - rank(b.fileName) || (a.fileName < b.fileName ? -1 : 1));
}

/** Versions of `project` that `files` hold (for the message when the one asked for is absent). */
function versionsOf(files: readonly Distribution[], project: string): string[] {
  const want = normalizeProjectName(project);
  const versions = new Set<string>();
  for (const f of files) {
    const parsed = parseDistributionName(f.fileName);
    if (parsed && normalizeProjectName(parsed.project) === want) versions.add(parsed.version);
  }
  return [...versions].sort();
}

/**
 * The best file of `project==version` in the wheelhouse folder `dir` (its regular files, not
 * sub-folders), as an absolute path.
 * @throws ConfigError when `dir` is no folder, or holds no file of that project and version
 *   (the message lists the versions it does hold).
 */
export function findInWheelhouse(dir: string, project: string, version: string): string {
  const root = resolve(dir);
  let names: string[];
  try {
    if (!statSync(root).isDirectory()) throw new Error('not a folder');
    names = readdirSync(root).filter((n) => statSync(join(root, n)).isFile());
  } catch {
    throw new ConfigError('--find-links', `${dir} is not a readable folder of wheels and sdists`);
  }
  const files = names.map((fileName) => ({fileName}));
  const best = matchingDistributions(files, project, version)[0];
  if (!best) {
    const have = versionsOf(files, project);
    throw new ConfigError('SOURCE', `pypi:${project}==${version}: ${dir} holds no wheel or sdist of that version${have.length ? ` (it has ${have.join(', ')})` : ` (nor any of ${project})`}`);
  }
  return join(root, best.fileName);
}

/**
 * Checks an `--index-url`: `http:` or `https:`, no user name or password (they would end up in
 * the image build's context), no whitespace. Returns it without a trailing `/`.
 * @throws ConfigError naming what is wrong.
 */
export function checkIndexUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError('--index-url', `${JSON.stringify(text.slice(0, 200))} is not a URL; give the simple index, e.g. https://pypi.example.org/simple`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError('--index-url', 'must be an http: or https: URL');
  if (url.username || url.password) throw new ConfigError('--index-url', 'must not carry a user name or password (they would be stored in the image build); use an index that needs none, or --find-links with downloaded files');
  if (/\s/.test(text)) throw new ConfigError('--index-url', 'must not contain whitespace');
  return url.href.replace(/\/+$/, '');
}

/**
 * Reads the project page of `project` from the simple index at `indexUrl` (PEP 691 JSON when the
 * index offers it, else PEP 503 HTML: anchors whose text is the file name and whose URL fragment
 * is `sha256=<hex>`) and picks the best file of exactly `version` that has a SHA-256.
 * @throws ConfigError when the index has no such project or version, or states no SHA-256 for
 *   it; ToolcellError `BACKEND_UNAVAILABLE` when the index cannot be reached or answers an error.
 * Does NOT: follow the file's URL (pip downloads it in the image build and checks it against
 *   this SHA-256 with `--require-hashes`).
 */
export async function resolveFromIndex(indexUrl: string, project: string, version: string, options: {timeoutMs?: number} = {}): Promise<Distribution & {sha256: string}> {
  const base = checkIndexUrl(indexUrl);
  const page = `${base}/${normalizeProjectName(project)}/`;
  let response: Response;
  try {
    response = await fetch(page, {headers: {accept: 'application/vnd.pypi.simple.v1+json, text/html;q=0.1'}, redirect: 'follow',
      signal: AbortSignal.timeout(options.timeoutMs ?? 60_000)});
  } catch (err) {
    throw new ToolcellError('BACKEND_UNAVAILABLE', `The package index ${base} could not be reached.`, {}, {cause: err});
  }
  if (response.status === 404) throw new ConfigError('SOURCE', `pypi:${project}==${version}: the index ${base} has no project ${normalizeProjectName(project)}`);
  if (!response.ok) throw new ToolcellError('BACKEND_UNAVAILABLE', `The package index ${base} answered HTTP ${response.status} for ${normalizeProjectName(project)}.`);
  const body = (await response.text()).slice(0, 16 * 2 ** 20);
  const files = /json/i.test(response.headers.get('content-type') ?? '') ? jsonFiles(body) : htmlFiles(body);
  const matching = matchingDistributions(files, project, version);
  if (matching.length === 0) {
    const have = versionsOf(files, project);
    throw new ConfigError('SOURCE', `pypi:${project}==${version}: the index ${base} has no file of that version${have.length ? ` (it has ${have.slice(-20).join(', ')})` : ''}`);
  }
  const best = matching.find((f) => f.sha256 !== undefined);
  if (!best) throw new ConfigError('SOURCE', `pypi:${project}==${version}: the index ${base} states no sha256 for its files, so they cannot be hash-checked`);
  return best as Distribution & {sha256: string};
}

/** Files of a PEP 691 JSON project page. */
function jsonFiles(body: string): Distribution[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return [];
  }
  const files = (parsed as {files?: unknown}).files;
  if (!Array.isArray(files)) return [];
  return files.flatMap((f: {filename?: unknown; hashes?: {sha256?: unknown}}) => {
    if (typeof f?.filename !== 'string') return [];
    const sha = f.hashes?.sha256;
    return [{fileName: f.filename, ...(typeof sha === 'string' && /^[0-9a-f]{64}$/i.test(sha) ? {sha256: sha.toLowerCase()} : {})}];
  });
}

/** Files of a PEP 503 HTML project page. */
function htmlFiles(body: string): Distribution[] {
  const out: Distribution[] = [];
  for (const m of body.matchAll(/<a\s[^>]*href\s*=\s*["']([^"']*)["'][^>]*>\s*([^<\s]+)\s*<\/a>/gi)) {
    const sha = /#sha256=([0-9a-f]{64})\b/i.exec(m[1]!)?.[1];
    out.push({fileName: m[2]!, ...(sha ? {sha256: sha.toLowerCase()} : {})});
  }
  return out;
}
