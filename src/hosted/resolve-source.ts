// Resolves a hosted server's source to one exact artifact: npm version + integrity, file hash, image ID, folder hash.
import {createHash} from 'node:crypto';
import {createReadStream, readdirSync, readFileSync, realpathSync, statSync} from 'node:fs';
import {basename, join, posix, relative, resolve} from 'node:path';
import Docker from 'dockerode';
import {execa} from 'execa';
import {ConfigError, ToolcellError} from '../errors.ts';
import {checkIndexUrl, findInWheelhouse, resolveFromIndex} from './pypi-index.ts';
import {compareSemver, type HostedSource, NPM_NAME} from './source.ts';

/**
 * One exact artifact a source resolved to, everything the image build and the manifest need.
 * `version` is the upstream version (npm semver, PEP 440, image tag, folder hash);
 * `integrity` what pins the artifact itself (npm `dist.integrity` "sha512-…", `sha256-<hex>` of a
 * wheel/sdist or of a folder's files, or the image ID for `oci:`).
 */
export type ResolvedSource =
  | {type: 'npm'; name: string; version: string; integrity: string; bin: Record<string, string>}
  | {type: 'pypi-file'; path: string; fileName: string; project: string; version: string; integrity: string; sha256: string}
  | {type: 'pypi-index'; indexUrl: string; fileName: string; project: string; version: string; integrity: string; sha256: string}
  | {type: 'oci'; image: string; version: string; integrity: string; imageId: string; command: string[]}
  | {type: 'dir'; path: string; version: string; integrity: string};

/** Options of {@link resolveSource}. */
export interface ResolveOptions {
  docker?: Docker;
  /** Deadline for registry look-ups (ms); default 60 000. */
  timeoutMs?: number;
  /** The `npm` executable; default `npm` on PATH. */
  npm?: string;
  /** Progress lines (stderr in the CLI). */
  onProgress?: (line: string) => void;
  /** `pypi:<project>==<version>`: a folder of wheels and sdists to take the file from (`--find-links`). */
  findLinks?: string;
  /** `pypi:<project>==<version>`: a simple repository API (PEP 503/691) to resolve against and install from (`--index-url`). */
  indexUrl?: string;
}

/** Most files and bytes a `dir:` source may hold (the build context is copied). */
export const DIR_LIMITS = Object.freeze({files: 20_000, bytes: 512 * 2 ** 20});

/**
 * Resolves `source` to one exact artifact.
 * - `npm:` runs `npm view <name>@<spec> name version dist.integrity bin --json` (npm's own
 *   registry client and config: proxy, CA, registry URL) and takes the highest version that
 *   satisfies the spec (SemVer 2.0.0 precedence); a tag (`latest`) names one version.
 *   The integrity is the registry's `dist.integrity` (Subresource Integrity, W3C), which the
 *   image build checks against what `npm ci` installed.
 * - `pypi:<file>`: SHA-256 of the file; project and version from its name (PEP 427 wheel names,
 *   PEP 625 sdist names `<name>-<version>.tar.gz`).
 * - `pypi:<name>==<version>`: against the index the operator names, never PyPI by default:
 *   `findLinks` (a wheelhouse folder: the best file of that exact version, then as `pypi:<file>`)
 *   or `indexUrl` (pypi-index.ts: the project page's file of that version and its stated
 *   SHA-256; pip downloads it in the image build, hash-checked). Without either, or without
 *   `==<version>`, refused naming both options.
 * - `oci:`: the engine's image ID of the local image; command from its Entrypoint + Cmd.
 * - `dir:`: the folder's real path and a SHA-256 over its files (sorted relative paths and
 *   contents); version `dir-<first 12 hex>`.
 * @throws ConfigError naming the source and why it does not resolve (not found, no matching
 *   version, not a file/folder, too large, symlink leaving the folder);
 *   ToolcellError `BACKEND_UNAVAILABLE` when npm or the engine cannot be reached.
 */
export async function resolveSource(source: HostedSource, options: ResolveOptions = {}): Promise<ResolvedSource> {
  switch (source.type) {
    case 'npm': return resolveNpm(source.name, source.spec, options);
    case 'pypi': {
      const written = `pypi:${source.name}${source.version ? `==${source.version}` : ''}`;
      if (options.findLinks === undefined && options.indexUrl === undefined) {
        throw new ConfigError('SOURCE', `${written} needs a package index, and toolcell queries none by default: give --find-links DIR (a folder of wheels and sdists) or --index-url URL (a simple index, PEP 503), or add a downloaded file by path (pypi:./${source.name}-<version>-py3-none-any.whl).`);
      }
      if (options.findLinks !== undefined && options.indexUrl !== undefined) throw new ConfigError('--find-links', 'and --index-url exclude each other; give one');
      if (source.version === undefined) throw new ConfigError('SOURCE', `${written} names no version; give the exact one: pypi:${source.name}==<version>`);
      if (options.findLinks !== undefined) {
        options.onProgress?.(`resolving ${written} in ${options.findLinks}`);
        return resolvePypiFile(findInWheelhouse(options.findLinks, source.name, source.version));
      }
      options.onProgress?.(`resolving ${written} at ${options.indexUrl}`);
      const found = await resolveFromIndex(options.indexUrl!, source.name, source.version, {timeoutMs: options.timeoutMs ?? 60_000});
      const parsed = parseDistributionName(found.fileName)!;
      return {type: 'pypi-index', indexUrl: checkIndexUrl(options.indexUrl!), fileName: found.fileName, project: parsed.project, version: parsed.version,
        sha256: found.sha256, integrity: `sha256-${found.sha256}`};
    }
    case 'pypi-file': return resolvePypiFile(source.path);
    case 'oci': return resolveOci(source.image, options.docker ?? new Docker());
    case 'dir': return resolveDir(source.path);
  }
}

interface NpmViewEntry {
  name?: string;
  version?: string;
  'dist.integrity'?: string;
  bin?: Record<string, string> | string;
}

async function resolveNpm(name: string, spec: string, options: ResolveOptions): Promise<ResolvedSource> {
  options.onProgress?.(`resolving npm:${name}@${spec}`);
  const result = await execa(options.npm ?? 'npm', ['view', `${name}@${spec}`, 'name', 'version', 'dist.integrity', 'bin', '--json'], {
    reject: false, timeout: options.timeoutMs ?? 60_000, stdin: 'ignore', env: {npm_config_update_notifier: 'false'},
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(result.stdout || 'null');
  } catch {
    parsed = undefined;
  }
  const error = (parsed as {error?: {code?: string; summary?: string}} | undefined)?.error;
  if (error?.code === 'E404') throw new ConfigError('SOURCE', `npm:${name}@${spec}: ${error.summary?.slice(0, 200) ?? 'not found'}`);
  if (result.exitCode !== 0 || parsed === undefined || error) {
    throw new ToolcellError('BACKEND_UNAVAILABLE', `npm could not resolve npm:${name}@${spec}${error?.summary ? `: ${error.summary.slice(0, 200)}` : ` (exit ${result.exitCode ?? 'none'}${result.timedOut ? ', timed out' : ''})`}.`,
      {}, {cause: new Error(String(result.stderr).slice(-2000))});
  }
  const entries = (Array.isArray(parsed) ? parsed : parsed === null ? [] : [parsed]) as NpmViewEntry[];
  const valid = entries.filter((e) => e.name === name && typeof e.version === 'string' && typeof e['dist.integrity'] === 'string');
  if (valid.length === 0) throw new ConfigError('SOURCE', `npm:${name}@${spec}: no version with an integrity hash matches`);
  const best = valid.reduce((a, b) => (compareSemver(a.version!, b.version!) >= 0 ? a : b));
  const bin = typeof best.bin === 'string' ? {[name.split('/').pop()!]: best.bin} : (best.bin ?? {});
  if (!/^sha512-[A-Za-z0-9+/]+={0,2}$/.test(best['dist.integrity']!)) {
    throw new ConfigError('SOURCE', `npm:${name}@${best.version}: the registry gives no sha512 integrity (${best['dist.integrity']!.slice(0, 20)}…); older packages with sha1 only are not accepted`);
  }
  if (!NPM_NAME.test(name)) throw new ConfigError('SOURCE', `npm:${name} is not an npm package name`);
  return {type: 'npm', name, version: best.version!, integrity: best['dist.integrity']!, bin: checkedBins(name, bin)};
}

/** Bin paths must stay inside the package: relative, no `..` after normalization. */
function checkedBins(name: string, bin: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [command, path] of Object.entries(bin)) {
    const normalized = posix.normalize(path);
    if (typeof path !== 'string' || posix.isAbsolute(normalized) || normalized.startsWith('..') || !/^[A-Za-z0-9@._-]+$/.test(command)) {
      throw new ConfigError('SOURCE', `npm:${name}: bin "${command.slice(0, 60)}" points outside the package or has an unusual name`);
    }
    out[command] = normalized;
  }
  return out;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Project and version from a distribution file name: wheel `{name}-{version}(-{build})?-{py}-{abi}-{platform}.whl`
 * (PEP 427), sdist `{name}-{version}.tar.gz` / `.zip` (PEP 625; a name holds no `-` once normalized).
 */
export function parseDistributionName(fileName: string): {project: string; version: string} | undefined {
  const wheel = /^([A-Za-z0-9_.]+)-([0-9][A-Za-z0-9_.!+]*)(?:-\d[A-Za-z0-9_.]*)?-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+\.whl$/.exec(fileName);
  const sdist = /^([A-Za-z0-9_.]+)-([0-9][A-Za-z0-9_.!+]*)\.(?:tar\.gz|zip)$/.exec(fileName);
  const m = wheel ?? sdist;
  return m ? {project: m[1]!, version: m[2]!} : undefined;
}

async function resolvePypiFile(path: string): Promise<ResolvedSource> {
  const abs = resolve(path);
  let st;
  try {
    st = statSync(abs);
  } catch {
    throw new ConfigError('SOURCE', `pypi:${path}: no such file`);
  }
  if (!st.isFile()) throw new ConfigError('SOURCE', `pypi:${path}: not a regular file`);
  const fileName = basename(abs);
  const parsed = parseDistributionName(fileName);
  if (!parsed) throw new ConfigError('SOURCE', `pypi:${path}: the file name is not a wheel (name-version-py-abi-platform.whl, PEP 427) or sdist (name-version.tar.gz, PEP 625)`);
  const sha256 = await sha256File(abs);
  return {type: 'pypi-file', path: abs, fileName, project: parsed.project, version: parsed.version, sha256, integrity: `sha256-${sha256}`};
}

async function resolveOci(image: string, docker: Docker): Promise<ResolvedSource> {
  let info: Docker.ImageInspectInfo;
  try {
    info = await docker.getImage(image).inspect();
  } catch (err) {
    if ((err as {statusCode?: number}).statusCode === 404) {
      throw new ConfigError('SOURCE', `oci:${image}: no such image in the local engine (toolcell does not pull; docker load or build it first)`);
    }
    throw new ToolcellError('BACKEND_UNAVAILABLE', 'The Docker engine is not reachable to inspect the image.', {}, {cause: err});
  }
  const tag = image.includes(':') && !image.startsWith('sha256:') ? image.slice(image.lastIndexOf(':') + 1) : 'latest';
  const command = [...(info.Config?.Entrypoint ?? []), ...(info.Config?.Cmd ?? [])];
  return {type: 'oci', image, version: tag, integrity: info.Id, imageId: info.Id, command};
}

async function resolveDir(path: string): Promise<ResolvedSource> {
  let root: string;
  try {
    root = realpathSync(path);
  } catch {
    throw new ConfigError('SOURCE', `dir:${path}: no such folder`);
  }
  if (!statSync(root).isDirectory()) throw new ConfigError('SOURCE', `dir:${path}: not a folder`);
  const hex = treeSha256(root, listDirFiles(root, path));
  return {type: 'dir', path: root, version: `dir-${hex.slice(0, 12)}`, integrity: `sha256-${hex}`};
}

/**
 * SHA-256 (hex) over the given files of a folder: for each, in the order given, its relative path,
 * its permission bits and its content (links followed). The integrity of a `dir:` source; the
 * image build computes it again over the copy it sends, so a file changed or a link swapped in
 * between is caught.
 */
export function treeSha256(root: string, files: readonly string[]): string {
  const hash = createHash('sha256');
  for (const rel of files) {
    const full = join(root, rel);
    hash.update(`${rel}\0${statSync(full).mode & 0o777}\0`);
    hash.update(readFileSync(full));
    hash.update('\0');
  }
  return hash.digest('hex');
}

/**
 * The regular files of a `dir:` source, relative and sorted. A symbolic link is followed only
 * when it stays inside the folder (else refused: the image must not carry host files from
 * elsewhere); other special files are refused.
 * @throws ConfigError over {@link DIR_LIMITS}, or for a link leaving the folder.
 */
export function listDirFiles(root: string, shown = root): string[] {
  const out: string[] = [];
  let bytes = 0;
  for (const entry of readdirSync(root, {recursive: true, withFileTypes: true}) as Array<{name: string; parentPath: string; isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean}>) {
    const full = join(entry.parentPath, entry.name);
    const rel = relative(root, full);
    if (entry.isDirectory()) continue;
    if (entry.isSymbolicLink()) {
      let target: string;
      try {
        target = realpathSync(full);
      } catch {
        throw new ConfigError('SOURCE', `dir:${shown}: ${rel} is a dangling symbolic link`);
      }
      const inside = relative(root, target);
      if (inside.startsWith('..') || inside === '' || resolve(root, inside) !== target) {
        throw new ConfigError('SOURCE', `dir:${shown}: ${rel} is a symbolic link that leaves the folder`);
      }
      if (!statSync(target).isFile()) continue;
    } else if (!entry.isFile()) {
      throw new ConfigError('SOURCE', `dir:${shown}: ${rel} is not a regular file`);
    }
    bytes += statSync(full).size;
    out.push(rel);
    if (out.length > DIR_LIMITS.files || bytes > DIR_LIMITS.bytes) {
      throw new ConfigError('SOURCE', `dir:${shown}: more than ${DIR_LIMITS.files} files or ${DIR_LIMITS.bytes / 2 ** 20} MB`);
    }
  }
  return out.sort();
}
