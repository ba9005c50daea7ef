// `serve` refuses to start serving nothing: a --tools directory that is not there, or no tool served at all.
import {stat} from 'node:fs/promises';
import {dirname, resolve} from 'node:path';
import {ConfigError} from './errors.ts';
import type {Runtime} from './runtime.ts';

/**
 * Refuses a `--tools DIR` that is not a readable directory: a typo must not start a server that
 * quietly serves only the bundled tools.
 * @throws ConfigError (source `--tools`) naming the directory and the errno code
 */
export async function assertToolDirs(dirs: readonly string[] = []): Promise<void> {
  for (const dir of dirs) {
    let isDirectory: boolean;
    try {
      isDirectory = (await stat(dir)).isDirectory();
    } catch (err) {
      throw new ConfigError('--tools', `"${dir}" cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}): give a tool package directory or a directory of packages`, {cause: err});
    }
    if (!isDirectory) throw new ConfigError('--tools', `"${dir}" is not a directory: give a tool package directory or a directory of packages`);
  }
}

/**
 * The operator's `--tools` directories in which no package was found (neither loaded nor
 * rejected), one line each, for a warning: such a directory adds nothing.
 */
export function emptyToolDirs(runtime: Pick<Runtime, 'packages' | 'rejected'>, dirs: readonly string[] = []): string[] {
  const seen = [...runtime.packages.map((p) => p.dir), ...runtime.rejected.map((r) => r.dir)];
  return dirs.filter((dir) => {
    const abs = resolve(dir);
    return !seen.some((d) => d === abs || dirname(d) === abs);
  }).map((dir) => `--tools ${dir} holds no tool package (no toolcell.json in it or in its sub-directories)`);
}

/**
 * Refuses to serve when nothing at all is served: no tool (every package rejected, none found,
 * or every loaded tool left out: its backend unavailable, or turned off) and no hosted server's
 * prompts or resources either.
 * @throws ConfigError (source `serve`) saying why, with the rejections and omissions counted
 *   (their one-line reasons are printed before, by the caller and by `createRuntime`)
 */
export function assertSomethingServed(runtime: Pick<Runtime, 'tools' | 'allTools' | 'packages' | 'rejected' | 'unavailable' | 'hostedContent'>): void {
  if (runtime.tools.size > 0 || (runtime.hostedContent?.packages.length ?? 0) > 0) return;
  const rejected = runtime.rejected.length > 0 ? `; ${runtime.rejected.length} package(s) rejected (see above)` : '';
  if (runtime.allTools.size === 0) {
    throw new ConfigError('serve', `nothing to serve: no tool loaded${rejected}${runtime.packages.length === 0 && rejected === '' ? ' (no tool package found in the tool directories)' : ''}`);
  }
  const reasons = [...new Set(runtime.unavailable.map((u) => u.reason))].join('; ');
  throw new ConfigError('serve', `nothing to serve: every loaded tool (${runtime.allTools.size}) is left out: ${reasons}${rejected}`);
}
