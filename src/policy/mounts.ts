// Mount grants → canonical host paths at load time, each profile on its own; no source and no mount point that a tool could move.
import {realpath, stat} from 'node:fs/promises';
import {dirname, isAbsolute, join, normalize, relative, resolve} from 'node:path';
import type {Mount} from '../backends/backend.ts';
import {ConfigError} from '../errors.ts';
import {isStrictlyWithin, isWithin} from './path-within.ts';
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
 * That the source itself stays put is re-checked by the container backend at every create
 * (`backends/container/mount-check.ts`); {@link resolveAllMounts} refuses sources a tool could move.
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
    // Canonical (no `.`, `//`, trailing `/`): targets are compared with each other and with the container's mount table.
    const target = normalize(grant.target).replace(/\/+$/, '');
    if (!target.startsWith('/')) throw new ConfigError(where, `mount target "${grant.target}" must be an absolute path other than /`);
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
    mounts.push({source, target, readOnly: grant.readOnly});
  }
  return mounts;
}

/** Every container profile's mounts as {@link resolveMounts} resolved them, and the profiles left out with the reason. */
export interface ResolvedMounts {
  /** Profile name → its canonical mounts; only profiles with no problem. */
  mounts: Map<string, Mount[]>;
  /** Profile name → why its tools cannot be served (names the profile and the grant, never hides the cause). */
  problems: Map<string, string>;
}

/** A writable grant of some profile, with the config text of its source, for messages. */
interface WritableGrant {
  name: string;
  mount: Mount;
  grant: string;
}

/**
 * Why `profile`'s mount targets would let a tool of some profile move a mount point, or
 * undefined. Refused (in this order, first problem only): two grants at one target; a target at
 * or under a tmpfs of the profile (always writable); a target under a read-write grant's target
 * of the profile; a target under a read-only grant's target when the host directory that would
 * hold the mount point (`outer source` + the rest of the target) lies inside a writable grant of
 * any profile (`writable`). Pure.
 *
 * Does NOT cover: symlinks the operator placed inside a read-only grant or in the image that
 * lead a target into a writable place (the path is followed in the container); someone on the
 * host who can write a read-only grant's directory (the post-start check under runc sees a mount
 * that landed elsewhere: `backends/container/mount-check.ts`).
 */
export function targetProblem(profile: Pick<ContainerProfile, 'name' | 'filesystem'>, list: readonly Mount[], grants: readonly string[], writable: readonly WritableGrant[]): string | undefined {
  const name = profile.name;
  const tmpfs = Object.keys(profile.filesystem.tmpfs ?? {}).map((t) => normalize(t));
  const fix = 'Give every grant a target outside the others (e.g. /out and /scratch, not /out/scratch), or make the outer grant read-only and not writable through any other grant.';
  for (const [i, m] of list.entries()) {
    const what = `mount "${grants[i]}" (at ${m.target})`;
    for (const [j, o] of list.entries()) {
      if (j !== i && o.target === m.target) return `profile ${name}: ${what} and mount "${grants[j]}" have the same target. ${fix}`;
    }
    const t = tmpfs.find((p) => isWithin(p, m.target));
    if (t !== undefined) return `profile ${name}: ${what} lies inside its writable tmpfs at ${t}; a tool could replace the mount point with a symlink. ${fix}`;
    for (const [j, o] of list.entries()) {
      if (j === i || !isStrictlyWithin(o.target, m.target)) continue;
      if (!o.readOnly) {
        return `profile ${name}: the target of ${what} lies inside its own writable mount "${grants[j]}" (at ${o.target}); a tool could replace the mount point with a symlink and redirect this mount in a later call. ${fix}`;
      }
      // The host directory that holds the mount point, seen through the read-only grant.
      const holder = dirname(join(o.source, relative(o.target, m.target)));
      const w = writable.find((g) => isWithin(g.mount.source, holder));
      if (w !== undefined) {
        const whose = w.name === name ? 'its own' : `profile ${w.name}'s`;
        return `profile ${name}: the target of ${what} lies inside read-only mount "${grants[j]}" (at ${o.target}), whose directory there is writable through ${whose} mount "${w.grant}" (at ${w.mount.target}); a tool could replace the mount point with a symlink. ${fix}`;
      }
    }
  }
  return undefined;
}

/**
 * Resolves the mounts of every container profile, each on its own: a profile whose grant cannot
 * be resolved (a symlink planted under the workspace, a missing source, a path out of the roots)
 * is left out with the reason, and the others are served, so a planted symlink cannot stop a
 * server from starting. Then refuses, across all profiles, every grant whose canonical source
 * lies strictly inside another grant's **writable** mount source (its own profile's or
 * another's): a tool with that writable mount could rename the source away and put a symlink
 * (to `/proc`, to `/etc`, out of the root) in its place between two calls. Such a profile is
 * left out too, with a reason naming both grants. A source equal to a writable source, or
 * containing one, is allowed: a tool cannot replace its own mount point or anything above it.
 *
 * Targets too (see {@link targetProblem}): the engine creates and follows a mount's target path
 * *inside the container*, after mounting the grants above it; a tool that can write the
 * directory holding a mount point could put a symlink there (`x -> ../usr`) and have the next
 * call's grant mounted over `/usr/bin`. So a profile is left out when one of its targets lies at
 * or under another of its targets that is writable (a read-write grant or a tmpfs), or under a
 * read-only grant whose host directory holding the mount point lies inside any profile's
 * writable grant; two grants at one target are refused as well.
 *
 * @param profiles the container profiles, in load order
 * @returns the mounts of the usable profiles and the problems of the others; never throws for a
 *   single profile's grant (a mount root that does not exist is reported per profile as well).
 * Does NOT guarantee: that a source stays what it was on the host after load (someone with
 * write access to its parent can swap it); the container backend re-checks it at every create.
 */
export async function resolveAllMounts(profiles: Iterable<ContainerProfile>, policy: MountPolicy): Promise<ResolvedMounts> {
  profiles = [...profiles];
  const mounts = new Map<string, Mount[]>();
  const problems = new Map<string, string>();
  /** Profile → its grants' config text, same order as its resolved mounts, for messages. */
  const grants = new Map<string, string[]>();
  for (const profile of profiles) {
    try {
      mounts.set(profile.name, await resolveMounts(profile, policy));
      grants.set(profile.name, profile.filesystem.mounts.map((m) => m.source));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.set(profile.name, err.message);
    }
  }
  const writable: WritableGrant[] = [...mounts].flatMap(([name, list]) => list.flatMap((m, i) => (m.readOnly ? [] : [{name, mount: m, grant: grants.get(name)![i]!}])));
  for (const [name, list] of mounts) {
    for (const [i, m] of list.entries()) {
      const outer = writable.find((w) => isStrictlyWithin(w.mount.source, m.source));
      if (outer === undefined) continue;
      const whose = outer.name === name ? 'its own' : `profile ${outer.name}'s`;
      problems.set(name, `profile ${name}: mount source "${grants.get(name)![i]}" (at ${m.target}) lies inside ${whose} writable mount "${outer.grant}" (at ${outer.mount.target}); a tool with that mount could replace it with a symlink. Mount it from outside every writable grant, or make that grant read-only.`);
      break;
    }
  }
  for (const profile of profiles) {
    const list = mounts.get(profile.name);
    if (list === undefined || problems.has(profile.name)) continue;
    const problem = targetProblem(profile, list, grants.get(profile.name)!, writable);
    if (problem !== undefined) problems.set(profile.name, problem);
  }
  for (const name of problems.keys()) mounts.delete(name);
  return {mounts, problems};
}
