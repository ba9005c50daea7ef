/**
 * Host-side reads of a container's pids and memory cgroups: the evidence behind `pidsLimited`
 * and `outOfMemory` (see exit-reason.ts), read while the container still exists.
 *
 * Works only where toolcell runs on the engine's host and can read /sys/fs/cgroup (root or a
 * readable hierarchy), with the `cgroupfs` driver (cgroup v1: `pids/docker/ID`,
 * `memory/docker/ID`) or the systemd driver / cgroup v2 (`system.slice/docker-ID.scope`).
 * Elsewhere every read answers undefined. A container's cgroups disappear when it stops, so
 * they are read before a running container is killed (deadline, output cap), when a warm-pool
 * launcher reports its tool's exit (the container is still running), and sampled while a cold
 * container runs ({@link CgroupSampler}), since after a natural exit there is nothing to read.
 * Sources: kernel Documentation/admin-guide/cgroup-v1/{pids,memory}.rst, cgroup-v2.rst.
 */
import {readFileSync} from 'node:fs';

const PIDS_DIRS = [
  (id: string) => `/sys/fs/cgroup/pids/docker/${id}`,
  (id: string) => `/sys/fs/cgroup/system.slice/docker-${id}.scope`,
  (id: string) => `/sys/fs/cgroup/docker/${id}`,
];
const MEMORY_V1 = (id: string) => `/sys/fs/cgroup/memory/docker/${id}`;
const MEMORY_V2 = [(id: string) => `/sys/fs/cgroup/system.slice/docker-${id}.scope`, (id: string) => `/sys/fs/cgroup/docker/${id}`];
const CONTAINER_ID = /^[0-9a-f]{64}$/;

/** What the container's pids cgroup says: failed forks (`pids.events` max) and current count. */
export interface PidsState {
  /** Forks refused because of the pids limit since the container started. */
  refused: number;
  current?: number;
  max?: number;
}

/** What the container's memory cgroup says (each field only where the kernel provides it). */
export interface MemoryState {
  /** Processes the OOM killer killed in this cgroup (v1 `memory.oom_control` oom_kill, v2 `memory.events` oom_kill). */
  oomKills?: number;
  /** Times usage hit the limit (v1 `memory.failcnt`, v2 `memory.events` max). */
  failcnt?: number;
  /** Highest usage seen, in bytes (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`). */
  maxUsageBytes?: number;
  /** The limit, in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`). */
  limitBytes?: number;
}

/** Both cgroups' evidence; a field is absent when that cgroup could not be read. */
export interface CgroupEvidence {
  pids?: PidsState;
  memory?: MemoryState;
}

function readNumber(path: string): number | undefined {
  try {
    const v = readFileSync(path, 'utf8').trim();
    return v === 'max' || !/^\d+$/.test(v) ? undefined : Number(v);
  } catch {
    return undefined;
  }
}

function field(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** The first of `dirs` whose `file` can be read, with that file's text. */
function firstReadable(dirs: string[], file: string): {dir: string; text: string} | undefined {
  for (const dir of dirs) {
    try {
      return {dir, text: readFileSync(`${dir}/${file}`, 'utf8')};
    } catch { /* next layout */ }
  }
  return undefined;
}

/** Reads the pids cgroup of container `id` on this host; undefined when not readable here. */
export function readPidsState(id: string): PidsState | undefined {
  if (!CONTAINER_ID.test(id)) return undefined;
  const found = firstReadable(PIDS_DIRS.map((f) => f(id)), 'pids.events');
  if (!found) return undefined;
  const {dir, text} = found;
  return defined({refused: field(text, 'max') ?? 0, current: readNumber(`${dir}/pids.current`), max: readNumber(`${dir}/pids.max`)});
}

/** Reads the memory cgroup of container `id` on this host; undefined when not readable here. */
export function readMemoryState(id: string): MemoryState | undefined {
  if (!CONTAINER_ID.test(id)) return undefined;
  const v1 = MEMORY_V1(id);
  try {
    const control = readFileSync(`${v1}/memory.oom_control`, 'utf8');
    return defined({
      oomKills: field(control, 'oom_kill'),
      failcnt: readNumber(`${v1}/memory.failcnt`),
      maxUsageBytes: readNumber(`${v1}/memory.max_usage_in_bytes`),
      limitBytes: readNumber(`${v1}/memory.limit_in_bytes`),
    });
  } catch { /* not v1 */ }
  const found = firstReadable(MEMORY_V2.map((f) => f(id)), 'memory.events');
  if (!found) return undefined;
  const {dir, text} = found;
  return defined({oomKills: field(text, 'oom_kill'), failcnt: field(text, 'max'), maxUsageBytes: readNumber(`${dir}/memory.peak`), limitBytes: readNumber(`${dir}/memory.max`)});
}

/** Both cgroups of container `id`, read now. */
export function readCgroupEvidence(id: string): CgroupEvidence {
  const pids = readPidsState(id);
  const memory = readMemoryState(id);
  return defined({pids, memory});
}

function maxOf(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.max(a, b);
}

/** Merges two readings of the same cgroups: counters and peaks only grow, so the larger wins. */
export function mergeEvidence(a: CgroupEvidence, b: CgroupEvidence): CgroupEvidence {
  const pids = a.pids && b.pids
    ? defined({refused: Math.max(a.pids.refused, b.pids.refused), current: b.pids.current ?? a.pids.current, max: b.pids.max ?? a.pids.max})
    : (b.pids ?? a.pids);
  const memory = a.memory && b.memory
    ? defined({oomKills: maxOf(a.memory.oomKills, b.memory.oomKills), failcnt: maxOf(a.memory.failcnt, b.memory.failcnt),
      maxUsageBytes: maxOf(a.memory.maxUsageBytes, b.memory.maxUsageBytes), limitBytes: b.memory.limitBytes ?? a.memory.limitBytes})
    : (b.memory ?? a.memory);
  return defined({pids, memory});
}

/** How often a running container's cgroups are sampled, in ms. */
const SAMPLE_MS = 200;

/**
 * Samples a running container's cgroups every 200 ms, so that the evidence of a container that
 * exits by itself (its cgroups then vanish) is its last reading. Best effort: a refused fork or
 * an OOM kill in the last 200 ms before the exit can be missed (the engine's OOM witnesses and
 * the kernel log cover OOM; see exit-reason.ts). Stops itself once nothing can be read. The
 * timer is unref'd.
 */
export class CgroupSampler {
  readonly #id: string;
  #evidence: CgroupEvidence = {};
  #timer: NodeJS.Timeout | undefined;

  constructor(id: string) {
    this.#id = id;
    this.sample();
    if (this.#evidence.pids || this.#evidence.memory) {
      this.#timer = setInterval(() => this.sample(), SAMPLE_MS);
      this.#timer.unref();
    }
  }

  /** Reads the cgroups now (while they exist) and merges the reading in; returns the evidence so far. */
  sample(): CgroupEvidence {
    const now = readCgroupEvidence(this.#id);
    if (!now.pids && !now.memory) this.stop();
    this.#evidence = mergeEvidence(this.#evidence, now);
    return this.#evidence;
  }

  /**
   * Reads only the pids cgroup now (`pids.events`, `pids.current`, `pids.max`) and merges it in;
   * returns the pids evidence so far. For a check on a call's path that needs no memory figures
   * (a refused fork): three small reads instead of seven.
   */
  samplePids(): PidsState | undefined {
    const pids = readPidsState(this.#id);
    if (pids) this.#evidence = mergeEvidence(this.#evidence, {pids});
    return this.#evidence.pids;
  }

  /** Evidence gathered so far (without a new reading). */
  get evidence(): CgroupEvidence {
    return this.#evidence;
  }

  /** Stops sampling. Idempotent. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
