// Where the installation's bundled tools and profiles are, from src/ or dist/.
import {dirname, join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';

/** The installation root (where `tools/`, `profiles/` and `sandboxes/` live), from src/ or dist/. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Bundled tool packages. */
export const BUNDLED_TOOLS = join(PACKAGE_ROOT, 'tools');
/** Bundled profiles. */
export const BUNDLED_PROFILES = join(PACKAGE_ROOT, 'profiles');
