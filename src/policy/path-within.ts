// Whether one absolute path lies at or below another, lexically (no file system access).
import {isAbsolute, relative, sep} from 'node:path';

/** True when `path` is `root` or below it. Both must be absolute and normalised. */
export function isWithin(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** True when `path` lies strictly below `dir` (not equal). Pure. */
export function isStrictlyWithin(dir: string, path: string): boolean {
  return dir !== path && isWithin(dir, path);
}
