import type {Duplex} from 'node:stream';
import type Docker from 'dockerode';
import {toBackendError} from './docker-errors.ts';

/** A created, attached and started container, waiting for its input on stdin. */
export interface Sandbox {
  container: Docker.Container;
  id: string;
  /** The hijacked attach connection: write side = the container's stdin, read side = multiplexed stdout/stderr. */
  socket: Duplex;
  /** Resolves with the exit status once the container stops (or undefined when waiting failed, e.g. it was removed). */
  exited: Promise<number | undefined>;
  /** performance.now() when the container was started. */
  startedAt: number;
}

/**
 * Creates a container, attaches to its stdio (before start, so no output is lost) and starts it.
 *
 * The socket stays paused until a reader attaches, so output written before that is kept by
 * the socket and the engine (backpressure), not dropped. `onCreated` is called with the id as
 * soon as the container exists, so that the caller can destroy it if a later step fails.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` (engine unreachable, image missing, unknown
 *   runtime, start refused); the container, if created, is NOT removed here.
 * @throws the AbortError of `signal` when it aborted a request.
 */
export async function prepareSandbox(
  docker: Docker,
  options: Docker.ContainerCreateOptions,
  context: {image: string; runtime: string; signal: AbortSignal; onCreated: (container: Docker.Container) => void},
): Promise<Sandbox> {
  const {signal} = context;
  let phase: 'create' | 'attach' | 'start' = 'create';
  try {
    const container = await docker.createContainer({...options, abortSignal: signal});
    context.onCreated(container);
    phase = 'attach';
    const socket = (await container.attach({
      stream: true, stdin: true, stdout: true, stderr: true, hijack: true, abortSignal: signal,
    })) as unknown as Duplex;
    socket.on('error', () => { /* EPIPE/ECONNRESET after the container ended: the result says why */ });
    phase = 'start';
    await container.start({abortSignal: signal});
    const startedAt = performance.now();
    const exited = container.wait().then((r: {StatusCode?: number}) => r?.StatusCode, () => undefined);
    return {container, id: container.id, socket, exited, startedAt};
  } catch (err) {
    if (signal.aborted) throw signal.reason ?? err;
    throw toBackendError(err, {image: context.image, runtime: context.runtime, phase});
  }
}
