// Creates, attaches and starts one container: the steps every sandbox goes through before its input.
import type {Duplex} from 'node:stream';
import type Docker from 'dockerode';
import {toBackendError} from './docker-errors.ts';
import {POOL_LABEL, PROFILE_LABEL} from './host-config.ts';
import {bindMounts, checkBindSources, refuseUngrantedMounts, verifyMountedInodes, verifyReportedMounts, type InspectedMounts} from './mount-check.ts';
import {stageBinds, stagingAvailable, type StagedBinds} from './mount-staging.ts';
import {uidLeases, type UidLeases} from './uid-leases.ts';

/** A created, attached and started container, waiting for its input on stdin. */
export interface Sandbox {
  container: Docker.Container;
  id: string;
  /** The hijacked attach connection: write side = the container's stdin, read side = multiplexed stdout/stderr. */
  socket: Duplex;
  /** Resolves with the exit status once the container stops (or undefined when waiting failed, e.g. it was removed). */
  exited: Promise<number | undefined>;
  /**
   * Drops this process's connections to the container (the attach socket and the pending
   * `wait` request), so that nothing keeps the event loop alive once the container is being
   * removed. Does not remove the container. Idempotent.
   */
  release(): void;
}

/** Longest wait for the engine to create a container, in ms (the create request is not cancelled by the caller's signal). */
export const CREATE_TIMEOUT_MS = 30_000;

/** Longest wait for an inspect that checks mounts, in ms. */
const INSPECT_TIMEOUT_MS = 10_000;

/**
 * Creates a container, attaches to its stdio (before start, so no output is lost) and starts it.
 *
 * Bind mounts (`HostConfig.Mounts` of type bind) are re-checked at every create (see
 * mount-check.ts): each source right before create (no symlink on its path, same object at
 * that path), the engine's reported mounts after create and the sources again before start,
 * and under runc, right after start, the container's mount table and the inode at each
 * target. When toolcell runs as root the engine is given root-only staging paths bound to the
 * checked objects (mount-staging.ts), detached once the container has started or failed.
 * Under runc a cold container with binds is held (`withHold`: its tool starts only once one line
 * is written to its stdin, after the check after start passed), so no tool runs with a mount
 * that check refuses; warm-pool members are held by their launcher. A failure
 * rejects with `BACKEND_UNAVAILABLE` (`reason: 'mount-changed'`, the target, never the host
 * path); a container already created is left to the caller to remove, like any other failure.
 * Jobs without bind mounts pay nothing for this.
 *
 * User: the container runs as a uid and gid leased for it alone (uid-leases.ts), replacing
 * `options.User`, so that no two live sandboxes share a host uid (one cannot read another's
 * `/proc/<pid>/root` or `environ` even with a path to it). The lease is bound to the container
 * and released by whoever removes it: `uidLeases.releaseContainer(id)`; when the create itself
 * fails (no container), it is released here.
 *
 * The socket stays paused until a reader attaches, so output written before that is kept by
 * the socket and the engine (backpressure), not dropped. `onCreated` is called with the
 * container as soon as it exists, so that the caller can destroy it if a later step fails or
 * the call was stopped meanwhile. The create request itself is not aborted by `signal` (an
 * aborted request may still create a container whose id nobody learns); `signal` aborts the
 * attach and start requests, and is checked right after the create.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` (engine unreachable, image missing, unknown
 *   runtime, start refused); the container, if created, is NOT removed here.
 * @throws the reason of `signal` when it was aborted.
 */
export async function prepareSandbox(
  docker: Docker,
  options: Docker.ContainerCreateOptions,
  context: {
    image: string; runtime: string; signal: AbortSignal; onCreated: (container: Docker.Container) => void; leases?: UidLeases;
    /** Stage bind sources (mount-staging.ts); default: when toolcell runs as root. */
    staging?: boolean;
    /** Parent of the staging paths (tests); default mount-staging.ts `STAGING_DIR`. */
    stagingDir?: string;
    /**
     * Runs after start and before the tool does (the container is held, runc only): gets the
     * container's init pid and its leased uid/gid (egress: starts the relay in its network
     * namespace). A throw fails the call like a start failure.
     */
    afterStart?: (started: {pid: number; uid: number; gid: number}) => Promise<void>;
  },
): Promise<Sandbox> {
  const {signal} = context;
  let phase: 'create' | 'attach' | 'start' = 'create';
  let socket: Duplex | undefined;
  const binds = bindMounts((options.HostConfig as {Mounts?: Parameters<typeof bindMounts>[0]} | undefined)?.Mounts);
  const profile = options.Labels?.[PROFILE_LABEL];
  let staged: StagedBinds | undefined;
  try {
    // Mount sources as they are now, right before the engine sees them.
    const checked = binds.length > 0 ? await checkBindSources(binds, profile) : [];
    // As root: the engine is given root-only staging paths bound to the checked objects themselves.
    if (binds.length > 0 && (context.staging ?? stagingAvailable())) staged = await stageBinds(checked, profile, context.stagingDir);
    const sources = staged?.sources;
    const given = sources === undefined ? binds : binds.map((b, i) => ({...b, Source: sources[i]!}));
    // A cold container with binds under runc holds its tool until the check after start passed.
    const hold = (binds.length > 0 || context.afterStart !== undefined) && context.runtime === 'runc' && options.Labels?.[POOL_LABEL] === undefined;
    const createOptions = withHold(sources === undefined ? options : withBindSources(options, sources), hold);
    const container = await createAsLeasedUser(docker, createOptions, context.leases ?? uidLeases);
    context.onCreated(container);
    signal.throwIfAborted();
    // What the engine will mount, by its own account: no image VOLUME, the granted binds exactly; then the sources again, unchanged.
    const reported = await container.inspect({abortSignal: AbortSignal.timeout(INSPECT_TIMEOUT_MS)}) as InspectedMounts;
    refuseUngrantedMounts(reported, profile);
    if (binds.length > 0) {
      verifyReportedMounts(reported, given, profile);
      await checkBindSources(binds, profile, checked);
    }
    phase = 'attach';
    socket = (await container.attach({
      stream: true, stdin: true, stdout: true, stderr: true, hijack: true, abortSignal: signal,
    })) as unknown as Duplex;
    socket.on('error', () => { /* EPIPE/ECONNRESET after the container ended: the result says why */ });
    // An engine reached over TCP (DOCKER_HOST=tcp://): small stdin writes (a JSON-RPC line) go out
    // at once, not after Nagle's wait for an ACK. A unix socket has no Nagle (no-op there).
    (socket as Duplex & {setNoDelay?: (noDelay?: boolean) => unknown}).setNoDelay?.(true);
    phase = 'start';
    await container.start({abortSignal: signal});
    // The container has its own copy of each mount now: the staging mounts can go.
    await staged?.release();
    if (binds.length > 0 && context.runtime === 'runc') await verifyStarted(container, checked, profile);
    if (context.afterStart) {
      const info = await container.inspect({abortSignal: AbortSignal.timeout(INSPECT_TIMEOUT_MS)});
      const [uid, gid] = String(info.Config.User ?? '').split(':').map(Number);
      if (!info.State.Running || !(info.State.Pid > 0) || !Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('the container is not running as a leased uid after start');
      await context.afterStart({pid: info.State.Pid, uid: uid!, gid: gid!});
    }
    if (hold) socket.write(HOLD_RELEASE);
    const waiting = new AbortController();
    const exited = container.wait({abortSignal: waiting.signal}).then((r: {StatusCode?: number}) => r?.StatusCode, () => undefined);
    const attached = socket;
    const release = () => {
      attached.destroy();
      waiting.abort();
    };
    return {container, id: container.id, socket, exited, release};
  } catch (err) {
    await staged?.release();
    socket?.destroy(); // an open attach connection would keep the process alive
    if (signal.aborted) throw signal.reason ?? err;
    throw toBackendError(err, {image: context.image, runtime: context.runtime, phase});
  }
}

/**
 * After start (runc): the mounts at the targets are the checked ones (mount-check.ts
 * `verifyMountedInodes`). A mismatch is always refused, even if the container has exited or its
 * pid was reused meanwhile (a false refusal costs one call; a pass would run a redirected
 * mount). A container that has already exited before its mount table could be read is not
 * checked: under staging (mount-staging.ts, toolcell as root) nothing could be swapped anyway;
 * without it, see the module comment of mount-check.ts.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` `mount-changed` on a mismatch.
 */
async function verifyStarted(container: Docker.Container, checked: Parameters<typeof verifyMountedInodes>[1], profile: string | undefined): Promise<void> {
  const state = (await container.inspect({abortSignal: AbortSignal.timeout(INSPECT_TIMEOUT_MS)})).State;
  if (!state.Running || !(state.Pid > 0)) return;
  await verifyMountedInodes(state.Pid, checked, profile);
}

/** The line a held cold container waits for on stdin before it runs its tool (see {@link withHold}). */
const HOLD_RELEASE = 'go\n';

/**
 * `options` with its process wrapped, when `hold`, in `/bin/sh -c` that reads one line from stdin,
 * exits 126 unless it is {@link HOLD_RELEASE}, unsets the `PWD`/`OLDPWD` dash exports on its own
 * (unless the job sets them) and `exec`s the original entrypoint and command: the tool starts
 * only after prepareSandbox wrote that line, i.e. after the check after start passed, and then
 * reads the job's stdin untouched (dash's `read` takes one byte at a time from a pipe). Needs
 * `/bin/sh` in the image (as the warm pool's launcher does). Pure.
 */
function withHold(options: Docker.ContainerCreateOptions, hold: boolean): Docker.ContainerCreateOptions {
  if (!hold) return options;
  const entry = Array.isArray(options.Entrypoint) ? options.Entrypoint : options.Entrypoint === undefined ? [] : [options.Entrypoint];
  const cmd = Array.isArray(options.Cmd) ? options.Cmd : options.Cmd === undefined ? [] : [options.Cmd];
  const keep = new Set((options.Env ?? []).map((e) => e.slice(0, e.indexOf('='))));
  const unset = ['PWD', 'OLDPWD'].filter((v) => !keep.has(v));
  const script = `IFS= read -r g || exit 126\n[ "$g" = ${HOLD_RELEASE.trim()} ] || exit 126\n${unset.length > 0 ? `unset ${unset.join(' ')}\n` : ''}exec "$@"`;
  return {...options, Entrypoint: ['/bin/sh'], Cmd: ['-c', script, 'toolcell-hold', ...entry, ...cmd]};
}

/** `options` with the bind mounts' sources replaced, in order, by `sources` (the staging paths). Pure. */
function withBindSources(options: Docker.ContainerCreateOptions, sources: readonly string[]): Docker.ContainerCreateOptions {
  let i = 0;
  const host = options.HostConfig as {Mounts?: Array<{Type?: string; Source?: string}>} | undefined;
  const mounts = host?.Mounts?.map((m) => (m.Type === 'bind' ? {...m, Source: sources[i++]} : m));
  return {...options, HostConfig: {...options.HostConfig, Mounts: mounts} as Docker.HostConfig};
}

/**
 * Creates the container as a freshly leased uid:gid. The lease is bound to the container (its
 * remover releases it) or, when no container was created, released at once. A create request
 * that timed out may still create a container nobody learns of: it was never started, so no
 * process of it runs as that uid, and the reaper removes it.
 */
async function createAsLeasedUser(docker: Docker, options: Docker.ContainerCreateOptions, leases: UidLeases): Promise<Docker.Container> {
  const isGone = (id: string) => docker.getContainer(id).inspect({abortSignal: AbortSignal.timeout(INSPECT_TIMEOUT_MS)}).then(() => false, (err: unknown) => (err as {statusCode?: number})?.statusCode === 404);
  const lease = await leases.acquire(isGone);
  try {
    const container = await docker.createContainer({...options, User: `${lease.uid}:${lease.gid}`, abortSignal: AbortSignal.timeout(CREATE_TIMEOUT_MS)});
    lease.bind(container.id);
    return container;
  } catch (err) {
    lease.release();
    throw err;
  }
}
