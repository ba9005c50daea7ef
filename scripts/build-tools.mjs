#!/usr/bin/env node
/**
 * Bundles the isolate tools of the bundled tool packages (ARCHITECTURE.md, "Tool package").
 *
 *   node scripts/build-tools.mjs [TOOLS_DIR]        (default: <repo>/tools)
 *
 * For every `TOOLS_DIR/<package>/toolcell.json`, every tool with an `isolate.entry` such as
 * `dist/<tool>.js` is bundled with esbuild from `src/<tool>.js` (or `.mjs`, `.ts`) into that
 * entry: ONE self-contained ES module (format esm, platform neutral, target es2023, all
 * dependencies inlined) that a bare V8 isolate can run. Packages without isolate tools
 * (container-only manifests) are skipped. An isolate entry without a source file is left as
 * it is if the entry file already exists (a prebuilt third-party bundle), else an error.
 *
 * Checks, each failing the build with the package and tool named:
 * - the manifest parses and `tools` is an array;
 * - the entry is a relative `.js`/`.mjs` path that stays inside the package directory;
 * - esbuild resolves every import (a Node built-in such as `fs` cannot be resolved on the
 *   neutral platform, so it fails here rather than at call time);
 * - the bundle keeps no `import` of anything (static or dynamic with a literal) and has a
 *   `default` export.
 * What it does NOT check: that the code avoids globals a bare isolate lacks (`process`,
 * `setTimeout`, `TextEncoder`, ...). The integration tests run every bundle in a bare
 * isolate for that (test/integration/tools).
 *
 * Each bundle ends with a comment naming the npm packages it contains; their license texts
 * go to `dist/THIRD_PARTY_LICENSES.txt` of the package.
 * Output: one summary line per package on stderr; exit code 1 if anything failed.
 * Runs on Node 24 as plain ESM (it is part of `npm run build`); the work is done by
 * src/tool-bundle.ts, shared with `toolcell build`.
 */
import path from 'node:path';
import {fileURLToPath, pathToFileURL} from 'node:url';
// The esbuild settings, the source convention and the checks live in src/tool-bundle.ts, which
// `toolcell build` uses too (Node 24 runs the .ts file by type stripping), so they cannot drift.
import {buildTools as build} from '../src/tool-bundle.ts';

/**
 * Builds every package under `toolsDir`.
 * @param {string} toolsDir absolute path of the tools directory
 * @param {{log?: (line: string) => void}} [options] where summary lines go (default: stderr)
 * @returns {Promise<{packages: Array<{name: string, tools: Array<{tool: string, outfile: string, bytes: number, shims?: string[], warnings?: string, prebuilt?: boolean}>, skipped?: string, ms?: number}>, errors: string[]}>}
 *   `errors` lists every failure as "<package>/<tool>: <reason>"; the function does not throw for them.
 *   A bundle is written only when it passes every check, so a failed build leaves the previous file (if any).
 */
export function buildTools(toolsDir, options = {}) {
  return build(toolsDir, options);
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (invokedDirectly) {
  const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  // Default: the bundled tools/ and the test-only fixture packages (test/fixtures/tools).
  const dirs = process.argv[2] ? [path.resolve(process.argv[2])] : [path.join(repo, 'tools'), path.join(repo, 'test', 'fixtures', 'tools')];
  const errors = [];
  for (const dir of dirs) errors.push(...(await buildTools(dir)).errors);
  for (const error of errors) process.stderr.write(`build-tools: ERROR ${error}\n`);
  if (errors.length > 0) {
    process.stderr.write(`build-tools: ${errors.length} error(s)\n`);
    process.exitCode = 1;
  }
}
