import {readFileSync} from 'node:fs';

/**
 * Host-side reads of a running container's pids cgroup, for `pidsLimited` (best effort).
 *
 * Works only where toolcell runs on the engine's host and can read /sys/fs/cgroup (root or a
 * readable hierarchy), with the `cgroupfs` driver (cgroup v1: `pids/docker/ID`) or the systemd
 * driver (cgroup v2: `system.slice/docker-ID.scope`). Elsewhere it returns undefined. The
 * cgroup disappears when the container stops, so it is read before a running container is
 * killed (timeout, output cap), never after a natural exit.
 */
const CANDIDATES = [
  (id: string) => `/sys/fs/cgroup/pids/docker/${id}`,
  (id: string) => `/sys/fs/cgroup/system.slice/docker-${id}.scope`,
  (id: string) => `/sys/fs/cgroup/docker/${id}`,
];

/** What the container's pids cgroup says: failed forks (`pids.events` max) and current count. */
export interface PidsState {
  /** Forks refused because of the pids limit since the container started. */
  refused: number;
  current?: number;
  max?: number;
}

/** Reads the pids cgroup of container `id` on this host; undefined when not readable here. */
export function readPidsState(id: string): PidsState | undefined {
  if (!/^[0-9a-f]{64}$/.test(id)) return undefined;
  for (const dir of CANDIDATES.map((f) => f(id))) {
    try {
      const events = readFileSync(`${dir}/pids.events`, 'utf8');
      const refused = Number(/^max\s+(\d+)/m.exec(events)?.[1] ?? 0);
      const read = (name: string) => {
        try {
          const v = readFileSync(`${dir}/${name}`, 'utf8').trim();
          return v === 'max' ? undefined : Number(v);
        } catch {
          return undefined;
        }
      };
      const current = read('pids.current');
      const max = read('pids.max');
      return {refused, ...(current === undefined ? {} : {current}), ...(max === undefined ? {} : {max})};
    } catch { /* next layout */ }
  }
  return undefined;
}
