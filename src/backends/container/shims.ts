/**
 * Orphaned runtime processes: finding containerd shims (and runsc/runc processes) of containers
 * the engine no longer lists, and ending them; only for ids this installation can prove it
 * created (provenance.ts records). Reads /proc of the engine's host.
 */
import {execFile} from 'node:child_process';
import {readdir, readFile} from 'node:fs/promises';
import {promisify} from 'node:util';
import type Docker from 'dockerode';
import {log as rootLog} from '../../log.ts';
import {Provenance} from './provenance.ts';

const log = rootLog.child({component: 'container-shims'});
const execFileP = promisify(execFile);

/** Time allowed for listing containers, in ms. */
const LIST_TIMEOUT_MS = 10_000;

/** An orphaned runtime process tree: a containerd shim whose container the engine no longer knows. */
export interface OrphanShim {
  /** Container id (64 hex) the shim was started for. */
  id: string;
  /** PID of the shim. */
  pid: number;
  /** PIDs of other processes whose command line names the id (runsc gofer/sandbox, runtime wrappers). */
  children: number[];
  /** `--root` of a runsc process for the id, when one was found (for `runsc delete -force`). */
  runscRoot?: string;
}

const SHIM_ID = /(?:^|\0)-id\0([0-9a-f]{64})(?:\0|$)/;
/** argv[0] or argv[1] (a runtime wrapper script run by /bin/sh) names a container runtime. */
const RUNTIME_PROCESS = /^(?:[^\0]*\0)?[^\0]*(runsc|runc|containerd)/;
const ROOT_ARG = /(?:^|\0)--root(?:=|\0)([^\0]+)/;

/** Age in ms of a process, from /proc/PID/stat (start time in clock ticks since boot). */
async function processAgeMs(pid: number, proc: string): Promise<number> {
  const [stat, uptime] = await Promise.all([readFile(`${proc}/${pid}/stat`, 'utf8'), readFile(`${proc}/uptime`, 'utf8')]);
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTicks = Number(fields[19]);
  const ticksPerSecond = 100; // USER_HZ on Linux x86-64 and arm64
  return (Number(uptime.split(' ')[0]) - startTicks / ticksPerSecond) * 1000;
}

/**
 * Finds containerd shims (`containerd-shim* -namespace moby -id ID`) on this host whose ID the
 * engine does not list, with the processes that belong to them. Reads /proc: it finds
 * nothing when toolcell does not run on the engine's host (remote engine, Docker Desktop)
 * or cannot read other users' /proc entries.
 *
 * Why: a runsc start that fails (design/MACHINE.md: the network-namespace refusal) leaves its
 * shim and the runsc gofer/sandbox processes running although `docker ps -a` lists nothing.
 * @param options.ids only these container ids (e.g. those this process created and failed to remove).
 * @param options.minAgeMs ignore shims younger than this (default 30 000, and not checked for
 *   `ids` unless given): a container that is being created or removed right now may briefly
 *   have a shim the list does not show.
 * @param options.procRoot the proc filesystem to read (default /proc; tests pass a fake tree).
 */
export async function findOrphanShims(docker: Pick<Docker, 'listContainers'>, options: {ids?: Iterable<string>; minAgeMs?: number; procRoot?: string} = {}): Promise<OrphanShim[]> {
  const proc = options.procRoot ?? '/proc';
  if (process.platform !== 'linux' && options.procRoot === undefined) return [];
  const only = options.ids ? new Set(options.ids) : undefined;
  if (only && only.size === 0) return [];
  const minAgeMs = options.minAgeMs ?? 30_000;
  let entries: string[];
  try {
    entries = (await readdir(proc)).filter((e) => /^\d+$/.test(e));
  } catch {
    return [];
  }
  const procs: Array<{pid: number; cmdline: string}> = [];
  await Promise.all(entries.map(async (e) => {
    try {
      const cmdline = await readFile(`${proc}/${e}/cmdline`, 'latin1');
      if (cmdline.length > 0) procs.push({pid: Number(e), cmdline});
    } catch { /* process ended or not readable */ }
  }));
  procs.sort((a, b) => a.pid - b.pid);
  const shims = procs.filter((p) => /(^|\/)containerd-shim[^\0]*\0/.test(p.cmdline) && p.cmdline.includes('\0-namespace\0moby\0'));
  if (shims.length === 0) return [];
  const known = new Set((await docker.listContainers({all: true, abortSignal: AbortSignal.timeout(LIST_TIMEOUT_MS)})).map((c) => c.Id));
  const orphans: OrphanShim[] = [];
  for (const shim of shims) {
    const id = SHIM_ID.exec(shim.cmdline)?.[1];
    if (!id || known.has(id) || (only && !only.has(id))) continue;
    try {
      if ((!only || options.minAgeMs !== undefined) && (await processAgeMs(shim.pid, proc)) < minAgeMs) continue;
    } catch {
      continue;
    }
    const related = procs.filter((p) => p.pid !== shim.pid && p.cmdline.includes(id) && RUNTIME_PROCESS.test(p.cmdline) && !/(^|\/)containerd-shim/.test(p.cmdline));
    const runsc = related.find((p) => /runsc/.test(p.cmdline) && ROOT_ARG.test(p.cmdline));
    const runscRoot = runsc ? ROOT_ARG.exec(runsc.cmdline)?.[1] : undefined;
    orphans.push({id, pid: shim.pid, children: related.map((p) => p.pid), runscRoot});
  }
  return orphans;
}

/**
 * Ends orphaned shims found by {@link findOrphanShims}, of `options.ids` or else of the
 * containers this installation recorded creating (`provenance.recorded()`; shims 30 s old at least): `runsc --root ROOT delete -force ID`
 * when a runsc process belongs to it, SIGKILL to the remaining processes naming the id, then
 * SIGTERM to the shim. Needs to run as root on the engine's host; otherwise it logs and does
 * nothing. A shim ended this way may stay a zombie until its parent (containerd or PID 1) reaps it.
 * Only processes whose program name contains runsc, runc or containerd are signalled.
 * @returns the container ids whose shims were signalled.
 */
export async function reapOrphanShims(docker: Docker, options: {ids?: Iterable<string>; minAgeMs?: number; provenance?: Provenance} = {}): Promise<string[]> {
  let orphans: OrphanShim[];
  try {
    // Only shims of containers this installation recorded creating (provenance.ts), never others'.
    const ids = options.ids ?? (options.provenance ?? Provenance.of()).recorded();
    const minAgeMs = options.minAgeMs ?? (options.ids ? undefined : 30_000);
    orphans = await findOrphanShims(docker, minAgeMs === undefined ? {ids} : {ids, minAgeMs});
  } catch (err) {
    log.debug({err}, 'orphan shim scan failed');
    return [];
  }
  const done: string[] = [];
  for (const o of orphans) {
    log.warn({containerId: o.id, shimPid: o.pid}, 'ending orphaned runtime processes of a removed container');
    if (o.runscRoot) {
      await execFileP('runsc', [`--root=${o.runscRoot}`, 'delete', '-force', o.id], {timeout: 5_000}).catch((err: unknown) => log.debug({err, containerId: o.id}, 'runsc delete failed'));
    }
    for (const pid of o.children) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    try {
      process.kill(o.pid, 'SIGTERM');
      done.push(o.id);
    } catch (err) {
      log.debug({err, containerId: o.id}, 'could not signal shim');
    }
  }
  return done;
}

/**
 * Kills (SIGKILL) the runtime processes of container `id` other than its containerd shim:
 * runsc gofer/sandbox/start processes and runtime wrappers whose command line names the id.
 * For a container whose start or removal hangs (seen with runsc: a start that never returns
 * keeps `docker rm -f` waiting); once they are gone the engine can finish the removal.
 * Reads /proc and needs root on the engine's host; elsewhere it does nothing. With
 * `procRoot` (tests) it only reports what it would signal.
 * @returns the PIDs signalled.
 */
export async function killStuckRuntime(id: string, options: {procRoot?: string} = {}): Promise<number[]> {
  if (!/^[0-9a-f]{64}$/.test(id)) return [];
  const proc = options.procRoot ?? '/proc';
  let entries: string[];
  try {
    entries = (await readdir(proc)).filter((e) => /^\d+$/.test(e));
  } catch {
    return [];
  }
  const killed: number[] = [];
  for (const e of entries.sort((a, b) => Number(a) - Number(b))) {
    try {
      const cmdline = await readFile(`${proc}/${e}/cmdline`, 'latin1');
      if (!cmdline.includes(id) || !RUNTIME_PROCESS.test(cmdline) || /(^|\/)containerd-shim/.test(cmdline)) continue;
      if (options.procRoot === undefined) process.kill(Number(e), 'SIGKILL');
      killed.push(Number(e));
    } catch { /* gone or not ours to signal */ }
  }
  if (killed.length > 0 && options.procRoot === undefined) log.warn({containerId: id, pids: killed}, 'killed stuck runtime processes of a container that could not be removed');
  return killed;
}
