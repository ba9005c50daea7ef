import {realpath, stat} from 'node:fs/promises';
import {isAbsolute, normalize, resolve} from 'node:path';
import type {Mount} from '../backends/backend.ts';
import {ConfigError} from '../errors.ts';
import {isWithin} from './load-packages.ts';
import type {ContainerProfile} from './profile-schema.ts';

/** Where host directories may be mounted from, as the operator configured it. */
export interface MountPolicy {
  /** The directory `${workspace}` stands for (serve --workspace; default: the current directory). */
  workspace: string;
  /** Directories under which any mount source must lie (serve --mount-root; default: the workspace). */
  mountRoots: readonly string[];
}

/**
 * Turns a container profile's `filesystem.mounts` grants into canonical mounts, at load time.
 * Refused, with a ConfigError naming the profile and the source: a relative path, any `..`
 * segment, percent-encoded characters (`%2e%2e`, `%2f`: encoded traversal is never a real path
 * here), a source that does not exist, and any source whose realpath (symlinks resolved) is not
 * under the realpath of a mount root.
 *
 * Does not guarantee: that the directory's contents stay put after load; a mount is as safe as
 * what the operator keeps under the root (a symlink created inside a mounted directory later
 * points at the container's own filesystem, not the host's, since Docker binds the directory).
 */
export async function resolveMounts(profile: ContainerProfile, policy: MountPolicy): Promise<Mount[]> {
  const roots = await Promise.all(policy.mountRoots.map(async (root) => {
    try {
      return await realpath(root);
    } catch {
      throw new ConfigError(`profile ${profile.name}`, `mount root "${root}" does not exist`);
    }
  }));
  const mounts: Mount[] = [];
  for (const grant of profile.filesystem.mounts) {
    const where = `profile ${profile.name}`;
    const raw = grant.source.replace(/^\$\{workspace\}(?=\/|$)/, policy.workspace);
    if (/%[0-9a-f]{2}/i.test(raw)) throw new ConfigError(where, `mount source "${grant.source}" contains percent-encoding; give a plain path`);
    if (!isAbsolute(raw)) throw new ConfigError(where, `mount source "${grant.source}" must be an absolute path or start with \${workspace}`);
    if (raw.split(/[\\/]/).includes('..')) throw new ConfigError(where, `mount source "${grant.source}" contains "..", which is not allowed`);
    if (normalize(grant.target).split('/').includes('..')) throw new ConfigError(where, `mount target "${grant.target}" contains ".."`);
    let source: string;
    try {
      source = await realpath(resolve(raw));
      if (!(await stat(source)).isDirectory() && !(await stat(source)).isFile()) throw new Error('not a file or directory');
    } catch {
      throw new ConfigError(where, `mount source "${grant.source}" does not exist`);
    }
    if (!roots.some((root) => isWithin(root, source))) {
      throw new ConfigError(where, `mount source "${grant.source}" resolves outside the allowed mount roots (${policy.mountRoots.join(', ')})`);
    }
    mounts.push({source, target: normalize(grant.target), readOnly: grant.readOnly});
  }
  return mounts;
}
