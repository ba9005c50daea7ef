// `toolcell build [DIR]`: bundles a tool package's isolate entries the way the bundled tools are built.
import {existsSync, statSync} from 'node:fs';
import path from 'node:path';
import {escapeForTerminal} from './terminal-text.ts';

/**
 * `toolcell build [DIR]` (default: the current directory). DIR is a package (it has
 * `toolcell.json`) or a folder of packages. For every tool with `"isolate": {"entry":
 * "dist/<name>.js"}`, `src/<name>.ts` (or `.js`, `.mjs`) of the same package is bundled with
 * esbuild into that entry, with the settings of `npm run build` (src/tool-bundle.ts: ESM,
 * platform neutral, `mainFields` module then main so CommonJS libraries resolve, every
 * dependency inlined). Writes a bundle only when it imports nothing and has a default export;
 * `dist/THIRD_PARTY_LICENSES.txt` lists the npm packages bundled.
 *
 * Output: one summary line per package and one `ERROR` line per failure on stderr.
 * Does NOT check what fails at call time only (globals an isolate lacks): `toolcell check` does.
 * Needs esbuild at run time (a dependency of toolcell).
 * @returns exit code: 0 built, 1 a tool failed to build, 2 DIR is missing or holds no package
 */
export async function buildCommand(dir = '.'): Promise<number> {
  const target = path.resolve(dir);
  // Lines quote package and tool names, import specifiers and esbuild messages: escaped, one line each.
  const say = (line: string) => process.stderr.write(`${escapeForTerminal(line)}\n`);
  const err = (line: string) => say(`toolcell build: ${line}`);
  if (!existsSync(target) || !statSync(target).isDirectory()) {
    err(`${dir} is not a directory; give a tool package directory (with toolcell.json) or a folder of packages`);
    return 2;
  }
  const {buildPackage, buildTools, summarize} = await import('./tool-bundle.ts');
  const errors: string[] = [];
  let count: number;
  if (existsSync(path.join(target, 'toolcell.json'))) {
    const built = await buildPackage(target, path.basename(target), path.dirname(target), errors, 'toolcell build');
    for (const line of summarize(built ? [built] : [], errors, 'toolcell build')) say(line);
    count = 1;
  } else {
    const result = await buildTools(target, {generator: 'toolcell build', label: 'toolcell build', log: say});
    count = result.packages.length;
    errors.push(...result.errors);
  }
  if (count === 0) {
    err(`no tool package in ${dir}: expected ${path.join(dir, 'toolcell.json')} or <package>/toolcell.json below it`);
    return 2;
  }
  for (const e of errors.sort()) err(`ERROR ${e}`);
  return errors.length > 0 ? 1 : 0;
}
