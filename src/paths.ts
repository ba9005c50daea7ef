// Where the installation's bundled tools and profiles are, from src/ or dist/.
import {dirname, join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';

/** The installation root (where `tools/`, `profiles/` and `sandboxes/` live), from src/ or dist/. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Bundled tool packages. */
export const BUNDLED_TOOLS = join(PACKAGE_ROOT, 'tools');
/** Bundled profiles. */
export const BUNDLED_PROFILES = join(PACKAGE_ROOT, 'profiles');

/**
 * The directories a command loads, in order: the bundled one first (unless `includeBundled` is
 * false), then the operator's, each directory once (compared after `path.resolve`, so naming the
 * bundled directory again is harmless). Loading in this order makes the operator's directories
 * add to the bundled ones: a later package or profile whose name is already taken is refused by
 * name (`loadPackages`, `loadProfiles`), so an operator's directory can never shadow a bundled
 * tool or profile. Not guaranteed: that two different paths (a symlink and its target) are
 * recognised as one directory.
 * @param bundled `BUNDLED_TOOLS` or `BUNDLED_PROFILES`
 * @param extra the operator's directories (`--tools DIR`, `--profiles DIR`), absolute or relative to the cwd
 * @param includeBundled false for `--no-bundled-tools` / `--no-bundled-profiles`
 */
export function withBundled(bundled: string, extra: readonly string[] = [], includeBundled = true): string[] {
  const seen = new Set<string>();
  return [...(includeBundled ? [bundled] : []), ...extra].filter((dir) => {
    const key = resolve(dir);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
