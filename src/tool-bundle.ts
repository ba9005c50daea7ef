// Bundles isolate tool entries with esbuild: the one set of settings `npm run build` (scripts/build-tools.mjs) and `toolcell build` share.
import {existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';
import {wrapToolModule} from './backends/isolate/module-wrap.ts';

/**
 * Where the source of an isolate entry is looked for, in this order: the entry `dist/<stem>.js`
 * (or `.mjs`, in any folder of the package) is built from `src/<stem>.js`, `src/<stem>.mjs` or
 * `src/<stem>.ts` of the same package. An entry without such a source is taken as prebuilt when
 * the entry file exists.
 */
export const SOURCE_EXTENSIONS = ['.js', '.mjs', '.ts'] as const;

/** A failure that names the package (and tool) it belongs to, e.g. `text/diff: ...`. */
export class BuildError extends Error {
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'BuildError';
  }
}

/**
 * An esbuild plugin that refuses to read any file outside `pkgDir` that is not part of an npm
 * package (a path with a `node_modules` segment), after resolving symlinks: a package's source
 * cannot pull the builder's own files (`import key from '/home/me/.aws/credentials.json'`, or a
 * symlink in the package pointing there) into a bundle that a tool then returns at call time.
 * Not covered: a file swapped for a symlink between this check and esbuild's read (someone
 * writing into the package directory while it builds), and files inside any `node_modules`.
 */
export function confineToPackage(pkgDir: string): esbuild.Plugin {
  const root = realpathSync(pkgDir);
  return {
    name: 'toolcell-confine-to-package',
    setup(build) {
      build.onLoad({filter: /.*/}, (args) => {
        let real: string;
        try {
          real = realpathSync(args.path);
        } catch {
          return undefined; // esbuild reports the missing file itself
        }
        const rel = path.relative(root, real);
        const inside = rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
        if (inside || real.split(path.sep).includes('node_modules')) return undefined;
        return {errors: [{text: `reads ${JSON.stringify(args.path)}, which is outside the package directory and not in node_modules; a bundle may contain only the package's own files and its npm dependencies`}]};
      });
    },
  };
}

/**
 * Creates `dir` (recursively) after proving that it lies inside `pkgDir` once symlinks are
 * resolved: its deepest existing ancestor's realpath must be inside the package's realpath, and
 * what is created below it is new directories, no symlinks. So a package whose `dist` is a
 * symlink cannot make a build write a `.js` file elsewhere (into another program's folder).
 * Not covered: the package directory changing while the build runs.
 * @throws BuildError naming the directory
 */
function makeDirInside(pkgDir: string, dir: string, where: string): void {
  const root = realpathSync(pkgDir);
  let existing = dir;
  while (!existsSync(existing)) existing = path.dirname(existing);
  const rel = path.relative(root, realpathSync(existing));
  if (rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new BuildError(where, `${path.relative(pkgDir, dir) || '.'} resolves (through a symlink) outside the package directory; nothing is written there`);
  }
  mkdirSync(dir, {recursive: true});
}

/**
 * The esbuild options of every isolate tool bundle (esbuild docs, "API": build options):
 * ONE self-contained ES module (format esm, platform neutral, target es2023, every dependency
 * inlined) that a bare V8 isolate can run. `mainFields: ['module', 'main']` because the neutral
 * platform reads no package.json main field unless told to: without it a CommonJS library
 * (only `main`) is "Could not resolve". `process.env.NODE_ENV` is defined because libraries
 * read it and an isolate has no `process`.
 * @param source absolute path of the source file
 * @param outfile absolute path of the bundle
 * @param workingDir directory the metafile's paths are relative to
 * @param generator what the banner names as the bundle's maker, e.g. `toolcell build`
 * @param pkgDir the package directory: files outside it and outside node_modules are refused (`confineToPackage`)
 */
export function bundleOptions(source: string, outfile: string, workingDir: string, generator: string, pkgDir: string): esbuild.BuildOptions & {metafile: true; write: false} {
  return {
    plugins: [confineToPackage(pkgDir)],
    entryPoints: [source],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2023',
    mainFields: ['module', 'main'],
    define: {'process.env.NODE_ENV': '"production"'},
    minify: true,
    // Keep function and class names: libraries read them (mathjs typeOf uses constructor names).
    keepNames: true,
    legalComments: 'eof',
    charset: 'utf8',
    sourcemap: false,
    metafile: true,
    write: false,
    logLevel: 'silent',
    absWorkingDir: workingDir,
    banner: {js: `// Generated by ${generator} from ${path.relative(workingDir, source)}; do not edit.`},
  };
}

/** An npm package esbuild bundled, for the bundle's footer and THIRD_PARTY_LICENSES.txt. */
export interface BundledPackage {
  name: string;
  version: string;
  license: string;
  /** The package's LICENSE/LICENCE/COPYING file; undefined when absent. */
  licenseText: string | undefined;
  /** Its NOTICE file (Apache-2.0); undefined when absent. */
  noticeText: string | undefined;
}

/** The npm packages esbuild bundled, from the metafile's inputs, sorted by name. */
function bundledPackages(metafile: esbuild.Metafile, workingDir: string): BundledPackage[] {
  const roots = new Set<string>();
  for (const input of Object.keys(metafile.inputs)) {
    const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input.replaceAll('\\', '/'));
    if (match) roots.add(match[1]!);
  }
  const packages: BundledPackage[] = [];
  for (const root of roots) {
    const dir = path.resolve(workingDir, root);
    let pkg: {name?: unknown; version?: unknown; license?: unknown} = {};
    try { pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')); } catch { /* described as unknown below */ }
    const files = readdirSync(dir);
    const licenseFile = files.find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
    const noticeFile = files.find((f) => /^notice(\.(md|txt))?$/i.test(f));
    packages.push({
      name: typeof pkg.name === 'string' ? pkg.name : path.basename(dir),
      version: typeof pkg.version === 'string' ? pkg.version : 'unknown',
      license: typeof pkg.license === 'string' ? pkg.license : 'see package',
      licenseText: licenseFile ? readFileSync(path.join(dir, licenseFile), 'utf8') : undefined,
      noticeText: noticeFile ? readFileSync(path.join(dir, noticeFile), 'utf8') : undefined,
    });
  }
  return packages.sort((a, b) => a.name.localeCompare(b.name));
}

/** esbuild messages as one string, each with `(file:line:column)` where esbuild has it. */
export function formatMessages(messages: readonly esbuild.Message[]): string {
  return messages.map((m) => {
    const at = m.location ? ` (${m.location.file}:${m.location.line}:${m.location.column})` : '';
    return `${m.text}${at}`;
  }).join('; ');
}

/**
 * Resolves the entry of one isolate tool to `{source, outfile}`, or null for a prebuilt entry
 * (no source, but the entry file exists). Convention: `SOURCE_EXTENSIONS`.
 * @throws BuildError for an entry outside the package, of the wrong type, or without source
 */
export function locateSource(pkgDir: string, where: string, entry: unknown): {source: string; outfile: string} | null {
  if (typeof entry !== 'string' || entry.length === 0) throw new BuildError(where, 'isolate.entry must be a non-empty string');
  if (path.isAbsolute(entry) || entry.includes('\\')) throw new BuildError(where, `isolate.entry "${entry}" must be a relative path with "/" separators`);
  const outfile = path.resolve(pkgDir, entry);
  const rel = path.relative(pkgDir, outfile);
  if (rel.startsWith('..') || path.isAbsolute(rel)) throw new BuildError(where, `isolate.entry "${entry}" leaves the package directory`);
  if (!/\.m?js$/.test(outfile)) throw new BuildError(where, `isolate.entry "${entry}" must end in .js or .mjs`);
  const stem = path.basename(outfile).replace(/\.m?js$/, '');
  const candidates = SOURCE_EXTENSIONS.map((ext) => path.join(pkgDir, 'src', stem + ext));
  const source = candidates.find((file) => existsSync(file));
  if (source) return {source, outfile};
  if (existsSync(outfile)) return null;
  throw new BuildError(where, `no source for isolate entry "${entry}": expected ${candidates.map((c) => path.relative(pkgDir, c)).join(' or ')}`);
}

/** What one bundled tool produced. */
export interface BuiltTool {
  tool: string;
  outfile: string;
  /** Bundle size in bytes. */
  bytes: number;
  /** Modules left as `require()` calls that esbuild turns into a shim throwing when called. */
  shims?: string[];
  /** esbuild's warnings as one string. */
  warnings?: string;
  packages?: BundledPackage[];
  /** The entry had no source and was kept as it is. */
  prebuilt?: boolean;
}

/**
 * Bundles one tool and writes it (write, then rename) only if every check passes: esbuild
 * resolved every import, read nothing outside the package but npm packages, the bundle imports nothing (static, or dynamic with a literal) and
 * has a `default` export, and `wrapToolModule` (the rewrite every call runs) accepts it. Only `require` inside try/catch survives, as esbuild's throwing shim.
 * @throws BuildError naming `where` and the reason
 */
async function bundleTool(where: string, source: string, outfile: string, workingDir: string, generator: string, pkgDir: string): Promise<Omit<BuiltTool, 'tool' | 'outfile'>> {
  let result;
  try {
    result = await esbuild.build(bundleOptions(source, outfile, workingDir, generator, pkgDir));
  } catch (error) {
    const e = error as {errors?: esbuild.Message[]; message?: string};
    const detail = Array.isArray(e?.errors) && e.errors.length > 0 ? formatMessages(e.errors) : String(e?.message ?? error);
    throw new BuildError(where, `esbuild failed: ${detail}`);
  }
  const outputs = Object.values(result.metafile.outputs);
  const output = outputs[0];
  if (outputs.length !== 1 || !output) throw new BuildError(where, `expected one output file, got ${outputs.length}`);
  const imports = output.imports.filter((i) => i.kind !== 'require-call');
  if (imports.length > 0) {
    throw new BuildError(where, `bundle still imports ${imports.map((i) => `"${i.path}" (${i.kind})`).join(', ')}; isolate bundles must be self-contained`);
  }
  if (!output.exports.includes('default')) throw new BuildError(where, 'bundle has no default export; the isolate calls the default export');
  const file = result.outputFiles?.[0];
  if (!file) throw new BuildError(where, 'esbuild produced no output');
  const packages = bundledPackages(result.metafile, workingDir);
  const footer = packages.length === 0 ? '' : `\n/* Bundled npm packages (license texts: THIRD_PARTY_LICENSES.txt beside this file):\n${
    packages.map((p) => ` * ${p.name}@${p.version} (${p.license})`).join('\n')}\n */\n`;
  const contents = file.text + footer;
  // The module a call runs is this bundle rewritten by wrapToolModule: refuse here what it would refuse there.
  const wrap = wrapToolModule(contents, path.basename(outfile));
  if ('error' in wrap) throw new BuildError(where, `the isolate cannot run the bundle: ${wrap.error.name}: ${wrap.error.message}`);
  // Write then rename: a reader (a running server, a parallel test) sees the old or the new bundle, never half of one.
  makeDirInside(pkgDir, path.dirname(outfile), where);
  const temporary = `${outfile}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(temporary, contents);
  renameSync(temporary, outfile);
  return {
    packages,
    bytes: Buffer.byteLength(contents),
    shims: output.imports.filter((i) => i.kind === 'require-call').map((i) => i.path),
    ...(result.warnings.length > 0 ? {warnings: formatMessages(result.warnings)} : {}),
  };
}

/**
 * Writes `dist/THIRD_PARTY_LICENSES.txt` of one package: every npm package bundled into any of
 * its tools, with its license text (MIT and BSD licenses require the notice to travel with the
 * code). Writes nothing when no npm package was bundled.
 */
function writeLicenses(pkgDir: string, tools: readonly BuiltTool[], where: string): void {
  const byName = new Map<string, BundledPackage>();
  for (const tool of tools) for (const p of tool.packages ?? []) byName.set(`${p.name}@${p.version}`, p);
  if (byName.size === 0) return;
  const sections = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name)).map((p) =>
    `${p.name}@${p.version} (${p.license})\n${'-'.repeat(72)}\n${p.licenseText?.trim() ?? '(no license file in the package; see its package.json)'}\n${
      p.noticeText ? `\nNOTICE\n${p.noticeText.trim()}\n` : ''}`);
  const file = path.join(pkgDir, 'dist', 'THIRD_PARTY_LICENSES.txt');
  const temporary = `${file}.${process.pid}.tmp`;
  makeDirInside(pkgDir, path.dirname(file), where);
  writeFileSync(temporary, `Third-party software bundled into the files of this directory.\n\n${sections.join('\n')}`);
  renameSync(temporary, file);
}

/** What building one package produced. */
export interface BuiltPackage {
  name: string;
  tools: BuiltTool[];
  /** Why nothing was built, e.g. `no isolate tools`. */
  skipped?: string;
  ms?: number;
}

/** Options of `buildPackage` and `buildTools`. */
export interface BuildOptions {
  /** Where summary lines go (default: stderr). */
  log?: (line: string) => void;
  /** What the bundle's banner and the summary lines name as the maker (default `build-tools`). */
  generator?: string;
  /** Prefix of summary lines (default `build-tools`). */
  label?: string;
}

/**
 * Builds the isolate tools of one package directory (`<pkgDir>/toolcell.json`). Reads the
 * manifest only as far as it needs (`tools[].name`, `tools[].isolate.entry`): `toolcell check`
 * validates the rest.
 * @param pkgDir absolute path of the package directory
 * @param name the package's label in messages (its folder name)
 * @param workingDir the directory metafile paths and the banner are relative to
 * @param errors receives every failure as `<name>/<tool>: <reason>` or `<name>: <reason>`
 * @returns what was built, or undefined when the folder has no toolcell.json
 */
export async function buildPackage(pkgDir: string, name: string, workingDir: string, errors: string[], generator = 'scripts/build-tools.mjs'): Promise<BuiltPackage | undefined> {
  const manifestPath = path.join(pkgDir, 'toolcell.json');
  if (!existsSync(manifestPath)) return undefined;
  const entry: BuiltPackage = {name, tools: []};
  let manifest: {tools?: unknown};
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  } catch (error) {
    errors.push(`${name}: toolcell.json does not parse: ${(error as Error).message}`);
    return entry;
  }
  if (!manifest || !Array.isArray(manifest.tools)) {
    errors.push(`${name}: toolcell.json has no "tools" array`);
    return entry;
  }
  type RawTool = {name?: unknown; isolate?: {entry?: unknown}};
  const isolateTools = (manifest.tools as unknown[]).filter((t): t is RawTool => t !== null && typeof t === 'object' && (t as RawTool).isolate !== undefined);
  if (isolateTools.length === 0) {
    entry.skipped = 'no isolate tools';
    return entry;
  }
  const started = Date.now();
  await Promise.all(isolateTools.map(async (tool) => {
    const toolName = typeof tool.name === 'string' ? tool.name : '(unnamed tool)';
    const where = `${name}/${toolName}`;
    try {
      const located = locateSource(pkgDir, where, tool.isolate?.entry);
      if (located === null) {
        const outfile = path.resolve(pkgDir, tool.isolate!.entry as string);
        entry.tools.push({tool: toolName, outfile, bytes: statSync(outfile).size, prebuilt: true});
        return;
      }
      const built = await bundleTool(where, located.source, located.outfile, workingDir, generator, pkgDir);
      entry.tools.push({tool: toolName, outfile: located.outfile, ...built});
    } catch (error) {
      errors.push(error instanceof BuildError ? error.message : `${where}: ${(error as Error)?.message ?? error}`);
    }
  }));
  try {
    writeLicenses(pkgDir, entry.tools, name);
  } catch (error) {
    errors.push(error instanceof BuildError ? error.message : `${name}: ${(error as Error)?.message ?? error}`);
  }
  entry.ms = Date.now() - started;
  return entry;
}

/** One summary line per package: `<label>: <name>: N bundle(s) [tool 1.2 KiB, ...] in M ms`. */
export function summarize(packages: readonly BuiltPackage[], errors: readonly string[], label: string): string[] {
  const lines: string[] = [];
  for (const pkg of packages) {
    if (pkg.skipped) {
      lines.push(`${label}: ${pkg.name}: skipped (${pkg.skipped})`);
      continue;
    }
    const failed = errors.filter((e) => e.startsWith(`${pkg.name}/`) || e.startsWith(`${pkg.name}:`)).length;
    const sizes = pkg.tools.sort((a, b) => String(a.tool).localeCompare(String(b.tool)))
      .map((t) => `${t.tool} ${(t.bytes / 1024).toFixed(1)} KiB${t.prebuilt ? ' (prebuilt)' : ''}${t.shims?.length ? ` (require shim that throws: ${t.shims.join(', ')})` : ''}${t.warnings ? ` (esbuild warnings: ${t.warnings})` : ''}`).join(', ');
    lines.push(`${label}: ${pkg.name}: ${pkg.tools.length} bundle(s)${failed ? `, ${failed} FAILED` : ''}${sizes ? ` [${sizes}]` : ''}${pkg.ms !== undefined ? ` in ${pkg.ms} ms` : ''}`);
  }
  return lines;
}

/**
 * Builds every package under `toolsDir` (each sub-directory with a toolcell.json).
 * `errors` lists every failure as "<package>/<tool>: <reason>"; the function does not throw
 * for them. A bundle is written only when it passes every check, so a failed build leaves the
 * previous file (if any).
 * @param toolsDir absolute path of the tools directory
 */
export async function buildTools(toolsDir: string, options: BuildOptions = {}): Promise<{packages: BuiltPackage[]; errors: string[]}> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const errors: string[] = [];
  const dirs = existsSync(toolsDir) ? readdirSync(toolsDir, {withFileTypes: true}).filter((d) => d.isDirectory()).map((d) => d.name).sort() : [];
  const built = await Promise.all(dirs.map((dir) => buildPackage(path.join(toolsDir, dir), dir, path.dirname(toolsDir), errors, options.generator)));
  const packages = built.filter((p): p is BuiltPackage => p !== undefined).sort((a, b) => a.name.localeCompare(b.name));
  for (const line of summarize(packages, errors, options.label ?? 'build-tools')) log(line);
  return {packages, errors: errors.sort()};
}
