// Decides whether container tools can run on this host (engine, images, runtimes) before serving.
import type {EgressProxy} from './egress/proxy.ts';
import Docker from 'dockerode';
import type {Backend, ContainerJob} from './backends/backend.ts';
import {ContainerBackend} from './backends/container/container-backend.ts';
import {dockerMessage} from './backends/container/docker-errors.ts';
import {resolveCommands} from './backends/container/resolve-commands.ts';

/** The container backend when this host can run it, or why not. */
export type ContainerSupport =
  | {backend: ContainerBackend; resolveCommands: (image: string, names: readonly string[]) => Promise<Map<string, string>>; reason?: undefined}
  | {backend: undefined; reason: string};

/** How long start-up waits for the Docker engine to answer, in ms. */
const PING_TIMEOUT_MS = 3000;

/**
 * Connects to the Docker engine (DOCKER_HOST, else /var/run/docker.sock) and, when it answers,
 * starts the container backend (which reaps leftovers of earlier processes).
 * Never throws: an unreachable engine is a reason, so that `serve` still serves isolate tools.
 *
 * @param options.poolSize warm containers per (image, profile) pair; 0 turns the pool off.
 */
export async function containerSupport(options: {poolSize: number; egress?: EgressProxy}): Promise<ContainerSupport> {
  const docker = new Docker();
  try {
    await Promise.race([
      docker.ping(),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS).unref()),
    ]);
  } catch (err) {
    const where = process.env.DOCKER_HOST ?? '/var/run/docker.sock';
    return {backend: undefined, reason: `the Docker engine at ${where} is not reachable (${dockerMessage(err)}); run "toolcell doctor"`};
  }
  const backend = new ContainerBackend({docker, ...(options.poolSize > 0 ? {pool: {size: options.poolSize}} : {}), ...(options.egress ? {egress: options.egress} : {})});
  try {
    await backend.start();
  } catch (err) {
    await backend.close().catch(() => {});
    return {backend: undefined, reason: (err as Error).message};
  }
  return {backend, resolveCommands: (image, names) => resolveCommands(docker, image, names)};
}

