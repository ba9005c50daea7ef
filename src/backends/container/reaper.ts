/**
 * Reaping leftover containers: removing the containers this installation can prove it created
 * (provenance.ts) whose owner is gone, or of one owner or job. Orphaned runtime shims: shims.ts.
 */
import {hostname} from 'node:os';
import type Docker from 'dockerode';
import {log as rootLog} from '../../log.ts';
import {dockerMessage, isNoSuchContainer} from './docker-errors.ts';
import {JOB_LABEL, MANAGED_LABEL, OWNER_LABEL} from './host-config.ts';
import {Provenance} from './provenance.ts';

const log = rootLog.child({component: 'container-reaper'});

/** Time allowed for one forced removal, in ms; a removal that takes longer is left for the next reap. */
export const REMOVE_TIMEOUT_MS = 10_000;
/** Time allowed for listing containers, in ms. */
const LIST_TIMEOUT_MS = 10_000;

/**
 * Force-removes a container (killed first, volumes too), within `timeoutMs`. When another
 * removal of it is already in progress (the engine answers 409), waits for that one to finish
 * (`wait?condition=removed`), so that "removed" means gone, not "going".
 * @throws the engine's error (404 included: callers treat it as gone), or an abort at `timeoutMs`.
 */
export async function forceRemove(container: Docker.Container, timeoutMs: number): Promise<void> {
  const abortSignal = AbortSignal.timeout(timeoutMs);
  try {
    await container.remove({force: true, v: true, abortSignal} as Docker.ContainerRemoveOptions);
  } catch (err) {
    if (!/already in progress/i.test(dockerMessage(err))) throw err;
    try {
      await container.wait({condition: 'removed', abortSignal} as object);
    } catch (waitErr) {
      if (!isNoSuchContainer(waitErr) || /already in progress/i.test(dockerMessage(waitErr))) throw waitErr;
    }
  }
}

const leftBehind = {orphans: 0, 'remove-failed': 0};

/**
 * Running totals, for this process, of containers `reapContainers` found that their owner should
 * have removed: `orphans` removed by an orphans-only reap (left by an earlier process of this
 * installation on this host, e.g. before a crash or a container restart in the same pod), and
 * `remove-failed`, removals that failed in any reap. Read by the service's metrics.
 */
export function containersLeftBehind(): Readonly<typeof leftBehind> {
  return {...leftBehind};
}

/** What a reap did. */
export interface ReapResult {
  /** Ids of containers removed. */
  removed: string[];
  /** Ids of containers that could not be removed (logged at WARN). */
  failed: string[];
}

/**
 * Removes (forced: killed first) the containers this installation can prove it created
 * (provenance.ts: a valid `toolcell.proof` for the container's name and owner label) among those
 * labelled `toolcell.managed=true`, or only those of one backend instance (`owner`), one job
 * (`job`), or whose owner process is gone (`orphansOnly`, see {@link isOrphan}).
 *
 * Call it at start-up (`orphansOnly`, so that several toolcell servers can share one engine)
 * and at shutdown (`owner` of the closing backend). Never touches unlabelled containers, nor
 * look-alikes that carry toolcell's labels without a proof made with this installation's key.
 * @param scope.provenance the installation's key (default `Provenance.of()`, the default state directory).
 * @throws the engine's error when the list itself fails (e.g. engine unreachable).
 */
export async function reapContainers(docker: Docker, scope: {owner?: string; job?: string; orphansOnly?: boolean; provenance?: Provenance} = {}): Promise<ReapResult> {
  const provenance = scope.provenance ?? Provenance.of();
  const label = [`${MANAGED_LABEL}=true`];
  if (scope.owner !== undefined) label.push(`${OWNER_LABEL}=${scope.owner}`);
  if (scope.job !== undefined) label.push(`${JOB_LABEL}=${scope.job}`);
  const all = (await docker.listContainers({all: true, filters: {label}, abortSignal: AbortSignal.timeout(LIST_TIMEOUT_MS)})).filter((c) => provenance.proves(c));
  const list = scope.orphansOnly ? all.filter((c) => isOrphan(c.Labels?.[OWNER_LABEL])) : all;
  const result: ReapResult = {removed: [], failed: []};
  await Promise.all(list.map(async ({Id}) => {
    try {
      await forceRemove(docker.getContainer(Id), REMOVE_TIMEOUT_MS);
      result.removed.push(Id);
    } catch (err) {
      if (isNoSuchContainer(err)) {
        result.removed.push(Id);
        return;
      }
      result.failed.push(Id);
      log.warn({err, containerId: Id}, 'container remove failed; the next reap will retry');
    }
  }));
  if (result.removed.length > 0) log.debug({count: result.removed.length, owner: scope.owner, job: scope.job}, 'reaped containers');
  if (scope.orphansOnly) leftBehind.orphans += result.removed.length;
  leftBehind['remove-failed'] += result.failed.length;
  return result;
}

/**
 * Whether a container's owner (label `toolcell.owner` = `HOST/PID/UUID`) is gone: it was created
 * on this host by a process that no longer exists, or it carries no owner at all. Containers of
 * live processes, and of other hosts sharing the engine, are not orphans. A reused pid makes a
 * dead owner look alive: the container is then left for a later reap, never removed early.
 */
export function isOrphan(owner: string | undefined, host: string = hostname()): boolean {
  if (owner === undefined || owner === '') return true;
  const [ownerHost, pidText] = owner.split('/');
  if (ownerHost !== host) return false;
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
