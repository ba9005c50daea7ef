import type {Backend, ContainerJob} from './backends/backend.ts';

/** The container backend when this host can run it, or why not. */
export type ContainerSupport =
  | {backend: Backend<ContainerJob>; resolveCommands: (image: string, names: readonly string[]) => Promise<Map<string, string>>; reason?: undefined}
  | {backend: undefined; reason: string};

/**
 * Connects to the Docker engine and, when it answers, starts the container backend.
 * Never throws: an unreachable engine is a reason, so that `serve` still serves isolate tools.
 */
export async function containerSupport(options: {poolSize: number}): Promise<ContainerSupport> {
  void options;
  return {backend: undefined, reason: 'the container backend is not wired yet'};
}
