/**
 * Why a container's tool ended, as a pure function of the evidence gathered (no I/O), so that
 * every attribution (out of memory, pids limit, killed by a signal, plain exit) is
 * table-tested (test/unit/backends/container/exit-reason.test.ts), like host-config.ts.
 *
 * Rules (issue 11 item 6):
 * - `outOfMemory` only with evidence that the memory limit killed something: the engine's
 *   `OOMKilled`, its `oom` event, a kernel `oom-kill:` record naming the container's cgroup, or
 *   the memory cgroup's own OOM-kill count (on kernels without one: usage at the limit, failed
 *   charges, and exit 137). An exit 137 alone is not evidence: a tool that
 *   SIGKILLs itself, a killed launcher or a gVisor sandbox ended by a fork bomb also exit 137.
 * - `pidsLimited` from the pids cgroup's refused-fork count when it was read; only when it
 *   could not be read at all, from a fork-failure message at the end of stderr (which the tool
 *   can fake: it changes the reported reason, never a limit).
 * - An exit status 129-192 (128 + signal, as init and shells report a child killed by a signal)
 *   without OOM evidence is a failure "killed by signal N".
 * - Exit 0 is success whatever else was seen (a child of the tool may have been OOM-killed and
 *   handled); a memory bomb that is killed never exits 0.
 */
import type {CgroupEvidence} from './cgroup.ts';

/** Stderr texts of a failed fork (glibc/EAGAIN in Python, dash, bash, busybox). */
const FORK_FAILED = /Resource temporarily unavailable|can't fork|Cannot fork|fork: retry/i;

/** Everything known about how a container's tool ended. */
export interface ExitEvidence {
  /** Exit status (the launcher's report or the engine's), undefined when unknown. */
  status: number | undefined;
  /** `State.OOMKilled` from the engine's inspect. */
  engineOomKilled?: boolean;
  /** The engine emitted an `oom` event for the container. */
  oomEvent?: boolean;
  /** The kernel log holds an `oom-kill:` record naming the container (oom-watch.ts `kernelLoggedOom`). */
  kernelOomLogged?: boolean;
  /** The container's cgroups, read while it existed (cgroup.ts). */
  cgroup?: CgroupEvidence;
  /** The last part of the tool's stderr (for the fork-failure fallback). */
  stderrTail?: string;
}

/** What the backend reports for a tool that ended by itself. */
export interface ExitAttribution {
  failed: boolean;
  outOfMemory: boolean;
  pidsLimited: boolean;
  /** The exit status, when the tool was not OOM-killed. */
  exitCode?: number;
  /** The signal that killed the tool (status − 128), when the status says so and it was not OOM. */
  signal?: number;
  /** Names of the witnesses that decided `outOfMemory`/`pidsLimited` (for the log). */
  witnesses: string[];
}

/** The memory witnesses present in `e`, by name. */
export function memoryWitnesses(e: ExitEvidence): string[] {
  const w: string[] = [];
  if (e.engineOomKilled) w.push('engine:OOMKilled');
  if (e.oomEvent) w.push('engine:oom-event');
  if (e.kernelOomLogged) w.push('kernel:oom-kill');
  const m = e.cgroup?.memory;
  if ((m?.oomKills ?? 0) > 0) w.push('cgroup:oom_kill');
  // Kernels without an oom_kill count: usage reached the limit, charges failed, and the tool got SIGKILL.
  else if (m && m.oomKills === undefined && (m.failcnt ?? 0) > 0 && m.maxUsageBytes !== undefined && m.limitBytes !== undefined
    && m.maxUsageBytes >= m.limitBytes && e.status === 137) w.push('cgroup:limit-reached');
  return w;
}

/** Decides the attribution of a tool's own end; see the file comment for the rules. */
export function attributeExit(e: ExitEvidence): ExitAttribution {
  const status = e.status;
  if (status === 0) return {failed: false, outOfMemory: false, pidsLimited: false, exitCode: 0, witnesses: []};
  const memory = memoryWitnesses(e);
  if (memory.length > 0) return {failed: true, outOfMemory: true, pidsLimited: false, witnesses: memory};
  const pids = e.cgroup?.pids;
  const pidsWitness = pids ? (pids.refused > 0 ? 'cgroup:pids.events' : undefined) : FORK_FAILED.test((e.stderrTail ?? '').slice(-4096)) ? 'stderr:fork-failed' : undefined;
  const result: ExitAttribution = {failed: true, outOfMemory: false, pidsLimited: pidsWitness !== undefined, witnesses: pidsWitness ? [pidsWitness] : []};
  if (status !== undefined) {
    result.exitCode = status;
    if (status > 128 && status <= 128 + 64) result.signal = status - 128;
  }
  return result;
}
