// Probes what isolation the Docker engine offers (runtimes, cgroups, seccomp) for `toolcell doctor`.
import Docker from 'dockerode';
import type {ContainerJob} from '../backend.ts';
import {ContainerBackend} from './container-backend.ts';
import {dockerMessage, isUnreachable} from './docker-errors.ts';
import {IMAGES} from './images.ts';

/** What `toolcell doctor` learns about the Docker engine. Every field is observed, none assumed. */
export interface DockerProbe {
  /** The engine answered `GET /info`. */
  reachable: boolean;
  /** Why not, or why a check below could not run; for people, not for parsing. */
  reason?: string;
  /** Engine version, e.g. `20.10.24+dfsg1`. */
  version?: string;
  apiVersion?: string;
  /** OCI runtimes the engine offers (`runc`, `runsc`, …). */
  runtimes: string[];
  /** runsc (gVisor) is registered. */
  runsc: boolean;
  /** A container actually ran under runsc (undefined when not tried: no runsc or no image). */
  runscWorks?: boolean;
  cgroupVersion?: '1' | '2';
  cgroupDriver?: string;
  /** What the engine itself says it supports (docker info MemoryLimit, SwapLimit, PidsLimit, CpuCfsQuota). */
  engineLimits?: {memory: boolean; swap: boolean; pids: boolean; cpuQuota: boolean};
  /** Each sandbox image (IMAGES tags, plus any asked for) → present on this engine. */
  images: Record<string, boolean>;
  /**
   * A tiny container was started with memory 32 MB (swap equal), pids 16 and 0.25 CPU, and read
   * its own cgroup files: true when the kernel shows exactly those limits. Undefined when no
   * image was present to try it with.
   */
  limitsEffective?: boolean;
  /** The values read inside the probe container (bytes, count, quota/period µs). */
  limitsSeen?: {memoryBytes?: number; memorySwapBytes?: number; pidsMax?: number; cpuQuotaUs?: number; cpuPeriodUs?: number};
}

const PROBE_MEMORY_MB = 32;
const PROBE_PIDS = 16;
const PROBE_CPUS = 0.25;

/** Reads the cgroup limit files seen from inside a container with a private cgroup namespace (v1 and v2 paths). */
const CGROUP_FILES = [
  '/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.swap.max', '/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/cpu.max',
  '/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes',
  '/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us', '/sys/fs/cgroup/cpu/cpu.cfs_period_us',
];
const READER = 'for f in "$@"; do if [ -r "$f" ]; then printf "%s=" "$f"; head -n 1 "$f"; fi; done';

function probeJob(image: string, runtime: 'runc' | 'runsc', argv: string[]): ContainerJob {
  return {
    kind: 'container', id: `probe-${runtime}-${Date.now()}`, image, argv,
    limits: {timeoutMs: 15_000, memoryMb: PROBE_MEMORY_MB, outputBytes: 65_536, cpus: PROBE_CPUS, pids: PROBE_PIDS},
    network: 'none', readOnlyRoot: true, tmpfs: {}, mounts: [], runtime, profile: 'toolcell-doctor',
  };
}

/**
 * Probes the Docker engine for `toolcell doctor`. Never throws: an unreachable engine is
 * `{reachable: false, reason}`.
 *
 * Beyond `docker info` (version, runtimes, cgroup version and driver, the engine's own limit
 * support flags), it checks images (`IMAGES` tags plus `options.images`), and — when an image
 * is present and `options.runContainers` is not false — starts two tiny hardened containers:
 * one under runc that reads its own cgroup limit files (`limitsEffective`), and one under
 * runsc when registered (`runscWorks`). Takes about 1 s with containers, 50 ms without.
 * Does NOT check: that the host kernel enforces seccomp/AppArmor (Docker reports only that it
 * applies its profiles), or per-image command availability (see resolveCommands).
 */
export async function probeDocker(options: {docker?: Docker; images?: string[]; runContainers?: boolean} = {}): Promise<DockerProbe> {
  const docker = options.docker ?? new Docker();
  const probe: DockerProbe = {reachable: false, runtimes: [], runsc: false, images: {}};
  let info: Record<string, unknown>;
  try {
    info = await (docker.info as (o: object) => Promise<Record<string, unknown>>).call(docker, {abortSignal: AbortSignal.timeout(5_000)});
  } catch (err) {
    probe.reason = isUnreachable(err)
      ? `no Docker engine answers (${(err as {code?: string}).code}${(err as {address?: string}).address ? ` at ${(err as {address?: string}).address}` : ''})`
      : `the Docker engine did not answer: ${dockerMessage(err).slice(0, 200)}`;
    for (const tag of [...IMAGES.map((i) => i.tag), ...(options.images ?? [])]) probe.images[tag] = false;
    return probe;
  }
  probe.reachable = true;
  probe.version = String(info.ServerVersion ?? '');
  try {
    probe.apiVersion = String((await docker.version()).ApiVersion);
  } catch { /* optional */ }
  probe.runtimes = Object.keys((info.Runtimes as Record<string, unknown>) ?? {}).sort();
  probe.runsc = probe.runtimes.includes('runsc');
  if (info.CgroupVersion === '1' || info.CgroupVersion === '2') probe.cgroupVersion = info.CgroupVersion;
  if (typeof info.CgroupDriver === 'string') probe.cgroupDriver = info.CgroupDriver;
  probe.engineLimits = {memory: info.MemoryLimit === true, swap: info.SwapLimit === true, pids: info.PidsLimit === true, cpuQuota: info.CpuCfsQuota === true};

  for (const tag of [...IMAGES.map((i) => i.tag), ...(options.images ?? [])]) {
    try {
      await docker.getImage(tag).inspect();
      probe.images[tag] = true;
    } catch {
      probe.images[tag] = false;
    }
  }
  if (options.runContainers === false) return probe;
  const image = Object.keys(probe.images).find((t) => probe.images[t]);
  if (!image) {
    probe.reason = 'no sandbox image is present, so limits were not tried in a container (toolcell images build)';
    return probe;
  }

  const backend = new ContainerBackend({docker});
  try {
    const r = await backend.run(probeJob(image, 'runc', ['/bin/sh', '-c', READER, 'toolcell-probe', ...CGROUP_FILES]), {signal: AbortSignal.timeout(30_000)});
    const values = new Map<string, string>();
    for (const line of r.stdout.split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) values.set(line.slice(0, eq), line.slice(eq + 1).trim());
    }
    const num = (...files: string[]) => {
      for (const f of files) {
        const v = values.get(f);
        if (v !== undefined) return Number(v.split(' ')[0]);
      }
      return undefined;
    };
    const memoryBytes = num('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes');
    // v1 memsw = memory + swap; v2 memory.swap.max = swap alone (0 when swap = memory).
    const memsw = num('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes');
    const swapOnly = num('/sys/fs/cgroup/memory.swap.max');
    const memorySwapBytes = memsw ?? (swapOnly !== undefined && memoryBytes !== undefined ? memoryBytes + swapOnly : undefined);
    const pidsMax = num('/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/pids/pids.max');
    const cpuMax = values.get('/sys/fs/cgroup/cpu.max')?.split(' ');
    const cpuQuotaUs = cpuMax ? Number(cpuMax[0]) : num('/sys/fs/cgroup/cpu/cpu.cfs_quota_us');
    const cpuPeriodUs = cpuMax ? Number(cpuMax[1]) : num('/sys/fs/cgroup/cpu/cpu.cfs_period_us');
    probe.limitsSeen = {memoryBytes, memorySwapBytes, pidsMax, cpuQuotaUs, cpuPeriodUs};
    const want = PROBE_MEMORY_MB * 2 ** 20;
    probe.limitsEffective = !r.failed && memoryBytes === want && pidsMax === PROBE_PIDS
      && (memorySwapBytes === undefined || memorySwapBytes === want)
      && cpuQuotaUs !== undefined && cpuPeriodUs !== undefined && Math.abs(cpuQuotaUs / cpuPeriodUs - PROBE_CPUS) < 0.01;
    if (!probe.limitsEffective && r.failed) probe.reason = `the limits probe container failed (exit ${r.exitCode ?? 'none'})`;
  } catch (err) {
    probe.limitsEffective = false;
    probe.reason = `the limits probe container could not run: ${(err as Error).message}`;
  }
  if (probe.runsc) {
    try {
      const r = await backend.run(probeJob(image, 'runsc', ['/bin/sh', '-c', 'echo ok']), {signal: AbortSignal.timeout(30_000)});
      probe.runscWorks = !r.failed && r.stdout.trim() === 'ok';
    } catch (err) {
      probe.runscWorks = false;
      probe.reason = `runsc is registered but a container could not run under it: ${(err as Error).message}`;
    }
  }
  await backend.close();
  return probe;
}
