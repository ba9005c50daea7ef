// `toolcell check [DIR]`: loads a tool package as `serve` would and finds what today fails only at call time.
import {execFile} from 'node:child_process';
import {existsSync, statSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import type * as esbuild from 'esbuild';
import type {ProbeReport} from './check-probe.ts';
import {loadPackages} from './policy/load-packages.ts';
import {loadProfiles} from './policy/load-profiles.ts';
import {BUNDLED_PROFILES} from './paths.ts';
import {escapeForTerminal} from './terminal-text.ts';

/** The probe child's entry file, from src/ or dist/. */
const PROBE_PATH = fileURLToPath(new URL(`./check-probe${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));
/**
 * Wall-clock deadline for one probe child, in ms; then it is killed by its pid. The probe
 * limits each of its (up to 8) evaluations to 2 s of the isolate's CPU time, with a 15 s
 * wall-clock backstop each: this deadline bounds the whole child whatever its top level does.
 */
const PROBE_DEADLINE_MS = 30_000;

/** One problem: the file (relative to the current directory), where in it, and what. */
export interface CheckProblem {
  file: string;
  line?: number;
  column?: number;
  message: string;
}

/**
 * `file:line:column: message`, the form compilers and editors read, as one line: the message
 * may quote what the package's code threw or imports, so control characters are escaped.
 */
export function formatProblem(p: CheckProblem): string {
  return escapeForTerminal(`${p.file}${p.line === undefined ? '' : `:${p.line}${p.column === undefined ? '' : `:${p.column}`}`}: ${p.message}`);
}

/** Static checks of one entry with esbuild: imports left (with their position) and the default export. */
async function staticChecks(entryFile: string, shown: string): Promise<CheckProblem[]> {
  const {build} = await import('esbuild');
  const problems: CheckProblem[] = [];
  const common: esbuild.BuildOptions & {write: false} = {entryPoints: [entryFile], write: false, format: 'esm', platform: 'neutral', logLevel: 'silent', outdir: path.join(path.dirname(entryFile), '.toolcell-check')};
  // Every import esbuild meets is refused by the plugin, so each one is an error with its location.
  const refuse: esbuild.Plugin = {
    name: 'toolcell-check-imports',
    setup(b) {
      b.onResolve({filter: /.*/}, (a) => a.kind === 'entry-point' ? undefined : {errors: [{
        text: a.kind === 'require-call' ? `calls require("${a.path}"); an isolate has no require (bundle it with "toolcell build")`
          : `${a.kind === 'dynamic-import' ? 'dynamic import' : 'imports'} "${a.path}"; an isolate entry must be one self-contained module (bundle it with "toolcell build")`,
      }]});
    },
  };
  try {
    await build({...common, bundle: true, plugins: [refuse]});
  } catch (error) {
    for (const m of (error as {errors?: esbuild.Message[]}).errors ?? []) {
      problems.push({file: shown, ...(m.location ? {line: m.location.line, column: m.location.column + 1} : {}), message: m.text});
    }
  }
  try {
    const result = await build({...common, bundle: false, metafile: true});
    const output = Object.values(result.metafile?.outputs ?? {})[0];
    if (output && !output.exports.includes('default')) problems.push({file: shown, message: 'has no default export; the isolate calls the default export'});
  } catch (error) {
    for (const m of (error as {errors?: esbuild.Message[]}).errors ?? [{text: (error as Error).message} as esbuild.Message]) {
      problems.push({file: shown, ...(m.location ? {line: m.location.line, column: m.location.column + 1} : {}), message: `does not parse: ${m.text}`});
    }
  }
  return problems;
}

/**
 * Runs check-probe in its own Node process (`--no-node-snapshot`, as isolated-vm needs),
 * killed by its pid after `PROBE_DEADLINE_MS`. The tool's code runs only inside the probe's
 * isolate, never in this process.
 */
function runProbe(entryFile: string, filename: string): Promise<ProbeReport> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--no-node-snapshot', PROBE_PATH, entryFile, filename],
      {timeout: PROBE_DEADLINE_MS, killSignal: 'SIGKILL', maxBuffer: 1 << 20}, (error, stdout) => {
        try {
          resolve(JSON.parse(stdout) as ProbeReport);
        } catch {
          const why = (error as {killed?: boolean} | null)?.killed ? `did not finish in ${PROBE_DEADLINE_MS} ms` : `ended without a report (${error?.message.split('\n')[0] ?? 'no output'})`;
          resolve({problems: [{message: `evaluating the top level in an isolate ${why}`}]});
        }
      });
  });
}

/**
 * `toolcell check [DIR]` (default: the current directory; a package or a folder of packages).
 * 1. Loads the profiles (the bundled ones plus `profileDirs`) and the package exactly as
 *    `serve` does (manifest schema, profile names and backends, input/output schemas, entries
 *    inside the package): a rejection is one problem naming toolcell.json.
 * 2. For each isolate entry, with esbuild: every `import` (static, or dynamic with a literal
 *    specifier) and `require("...")` left, with its line and column; a missing default export.
 * 3. Evaluates the entry's top level in a fresh isolate prepared as for a call, in a child
 *    process, without calling the tool: each global it uses that an isolate lacks (`process`,
 *    `require`, `setTimeout`, `setInterval`, `setImmediate`, or any other), with its position,
 *    and a default export that is not a function.
 * Not checked: code inside the tool function (it runs at call time only), dynamic imports of a
 * computed specifier, and whether the tool returns what its outputSchema says.
 * Output: one line per problem on stdout, `FILE[:LINE:COLUMN]: message`, and a summary on stderr.
 * @returns exit code: 0 no problem, 1 problems, 2 DIR is not a directory or a profile is invalid
 */
export async function checkCommand(dir = '.', profileDirs: readonly string[] = []): Promise<number> {
  const target = path.resolve(dir);
  if (!existsSync(target) || !statSync(target).isDirectory()) {
    process.stderr.write(`toolcell check: ${dir} is not a directory; give a tool package directory (with toolcell.json) or a folder of packages\n`);
    return 2;
  }
  const profiles = await loadProfiles([BUNDLED_PROFILES, ...profileDirs.filter((d) => path.resolve(d) !== BUNDLED_PROFILES)]);
  const loaded = await loadPackages([target], profiles);
  const problems: CheckProblem[] = [];
  const rel = (file: string) => path.relative(process.cwd(), file) || '.';
  for (const r of loaded.rejected) problems.push({file: rel(path.join(r.dir, 'toolcell.json')), message: r.reason});
  if (loaded.packages.length === 0 && loaded.rejected.length === 0) {
    process.stderr.write(`toolcell check: no tool package in ${dir}: expected ${path.join(dir, 'toolcell.json')} or <package>/toolcell.json below it\n`);
    return 2;
  }
  let entries = 0;
  for (const pkg of loaded.packages) {
    for (const tool of pkg.tools) {
      if (!tool.isolate) continue;
      entries++;
      const file = path.join(pkg.dir, tool.isolate.filename.slice(pkg.name.length + 1));
      const shown = rel(file);
      const found = await staticChecks(file, shown);
      // A module with imports cannot even be instantiated in an isolate: its import lines say it all.
      if (found.some((p) => p.message.startsWith('imports ') || p.message.startsWith('dynamic import '))) {
        for (const p of found) if (!problems.some((q) => formatProblem(q) === formatProblem(p))) problems.push(p);
        continue;
      }
      const probe = await runProbe(file, tool.isolate.filename);
      const requireFound = found.some((p) => p.message.startsWith('calls require('));
      found.push(...probe.problems.filter((p) => !(requireFound && p.message.startsWith('uses "require"'))).map((p) => ({file: shown, ...p})));
      if (probe.defaultType === 'uninitialized') {
        found.push({file: shown, message: 'the default export is not ready when the top level returns (a top-level await that has not settled): a call waits for it, up to its timeout'});
      } else if (probe.defaultType !== undefined && probe.defaultType !== 'function' && !found.some((p) => p.message.startsWith('has no default export'))) {
        found.push({file: shown, message: `default export is a ${probe.defaultType}, not a function; the isolate calls it with the arguments`});
      }
      // The same file may be the entry of several tools: report it once.
      for (const p of found) if (!problems.some((q) => formatProblem(q) === formatProblem(p))) problems.push(p);
    }
  }
  for (const p of problems) process.stdout.write(`${formatProblem(p)}\n`);
  const summary = `${loaded.packages.length} package(s) loaded, ${loaded.rejected.length} rejected, ${entries} isolate entr${entries === 1 ? 'y' : 'ies'} checked`;
  process.stderr.write(problems.length === 0 ? `toolcell check: ok (${summary})\n` : `toolcell check: ${problems.length} problem(s) (${summary})\n`);
  return problems.length === 0 ? 0 : 1;
}
