// Resolves a profile's allowlisted command names to absolute paths inside its image.
import type Docker from 'dockerode';
import {ToolcellError} from '../../errors.ts';
import type {ContainerJob} from '../backend.ts';
import {ContainerBackend} from './container-backend.ts';
import {toBackendError} from './docker-errors.ts';
import {isCanonicalPath} from './mount-check.ts';

/** A command name as the profile schema allows it: a bare program name or an absolute path. */
const COMMAND_NAME = /^(\/[A-Za-z0-9._+/-]+|[A-Za-z0-9._+-]+)$/;

/**
 * The resolver, run by `/bin/sh` inside the image with the names as its arguments (data, never
 * code): for each name, an absolute path is printed back when it is an executable regular
 * file; a bare name is looked up in the container's `PATH` (the image's `ENV PATH`, the same
 * lookup Docker does for argv[0]) the way execvp does, ignoring shell builtins and functions.
 * Output: one `name<TAB>path` line per name found.
 */
const RESOLVER = [
  'set -f',
  'for n in "$@"; do',
  '  case $n in',
  '    /*) if [ -f "$n" ] && [ -x "$n" ]; then printf "%s\\t%s\\n" "$n" "$n"; fi ;;',
  '    *) IFS=:; for d in $PATH; do',
  '         [ -n "$d" ] || continue',
  '         if [ -f "$d/$n" ] && [ -x "$d/$n" ]; then printf "%s\\t%s\\n" "$n" "$d/$n"; break; fi',
  '       done; unset IFS ;;',
  '  esac',
  'done',
].join('\n');

const cache = new Map<string, Map<string, string | null>>();

/**
 * Resolves allowlisted program names to absolute paths inside `image`, for the profile
 * loader: `['python3', '/usr/bin/jq']` → `Map {python3 → /usr/bin/python3, /usr/bin/jq → /usr/bin/jq}`.
 *
 * Runs one short container from the image under the same hardened floor as tool calls
 * (no network, read-only root, no capabilities, non-root, 32 MB, 16 pids, 10 s), with
 * `/bin/sh` running a fixed resolver script. Bare names are looked up in the image's `PATH`;
 * absolute names are kept when they are executable regular files. Names not found are ABSENT
 * from the map: the caller reports them (a missing mapping is a load-time error).
 * Results are cached per image id (a rebuilt image is resolved again).
 * Does NOT resolve symlinks: `/usr/bin/python3` stays `/usr/bin/python3`.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` when the engine is unreachable, the image is missing
 *   or has no `/bin/sh`; `INTERNAL` for a name the profile schema would not allow.
 */
export async function resolveCommands(docker: Docker, image: string, names: readonly string[]): Promise<Map<string, string>> {
  for (const n of names) {
    if (!COMMAND_NAME.test(n) || n.split('/').includes('..')) {
      throw new ToolcellError('INTERNAL', 'A command name is invalid.', {}, {cause: new Error(`invalid command name ${JSON.stringify(n)}`)});
    }
  }
  let imageId: string;
  // Paths the image declares as VOLUMEs: the resolver's own short run covers each with a tiny tmpfs
  // (container sandboxes refuse engine-made volumes, mount-check.ts refuseUngrantedMounts); whether
  // the tool's profile grants something there is decided when the tool runs.
  let volumes: string[] = [];
  try {
    const info = await docker.getImage(image).inspect();
    imageId = info.Id;
    volumes = Object.keys(info.Config?.Volumes ?? {}).filter((v) => isCanonicalPath(v) && v !== '/');
  } catch (err) {
    throw toBackendError(err, {image, runtime: 'runc', phase: 'create'});
  }
  let known = cache.get(imageId);
  if (!known) {
    known = new Map();
    cache.set(imageId, known);
  }
  const unknown = [...new Set(names)].filter((n) => !known.has(n));
  if (unknown.length > 0) {
    const backend = new ContainerBackend({docker});
    try {
      const job: ContainerJob = {
        kind: 'container',
        id: `resolve-${imageId.slice(7, 19)}-${Date.now()}`,
        image,
        argv: ['/bin/sh', '-c', RESOLVER, 'toolcell-resolve', ...unknown],
        limits: {timeoutMs: 10_000, memoryMb: 32, outputBytes: 1_048_576, cpus: 0.5, pids: 16},
        network: 'none',
        readOnlyRoot: true,
        tmpfs: Object.fromEntries(volumes.map((v) => [v, '64k'])),
        mounts: [],
        runtime: 'runc',
        profile: 'toolcell-resolve-commands',
      };
      const result = await backend.run(job, {signal: AbortSignal.timeout(30_000)});
      if (result.failed) {
        throw new ToolcellError('BACKEND_UNAVAILABLE', `Commands could not be resolved in image "${image}" (it needs /bin/sh).`, {reason: 'resolve-failed', image},
          {cause: new Error(`resolver exit ${result.exitCode}, timedOut ${result.timedOut}: ${result.stderr.slice(-500)}`)});
      }
      const found = new Map<string, string>();
      for (const line of result.stdout.split('\n')) {
        const tab = line.indexOf('\t');
        if (tab > 0) found.set(line.slice(0, tab), line.slice(tab + 1));
      }
      for (const n of unknown) {
        const path = found.get(n);
        known.set(n, path !== undefined && path.startsWith('/') ? path : null);
      }
    } finally {
      await backend.close();
    }
  }
  const out = new Map<string, string>();
  for (const n of names) {
    const path = known.get(n);
    if (path) out.set(n, path);
  }
  return out;
}
