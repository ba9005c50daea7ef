/**
 * Gate for tests that need a Docker engine (and images, and runsc).
 *
 * - With an engine (and what was asked for): resolves `true`.
 * - Without, when `CI` is set: throws, so the test FAILS with a message saying what is missing
 *   and how to get it (`.ci/setup-docker.sh`, `toolcell images build`).
 * - Without, locally: resolves `false`, and prints ONE loud line to stderr per test run (not
 *   per file) saying why container tests are skipped.
 *
 * Usage:
 *   const ok = await dockerAvailable({images: ['toolcell/python']});
 *   describe('…', {skip: !ok && 'no Docker engine'}, () => { … });
 */
import {closeSync, openSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, before} from 'node:test';
import Docker from 'dockerode';
import {ContainerBackend, type ContainerBackendOptions} from '../../src/backends/container/container-backend.ts';
import type {ContainerJob} from '../../src/backends/backend.ts';

export interface DockerRequirements {
  /** Image references that must be present, e.g. `toolcell/python`. */
  images?: string[];
  /** The engine must offer the gVisor runtime `runsc`. */
  runsc?: boolean;
}

/** A client for the engine the tests use (DOCKER_HOST or /var/run/docker.sock). */
export const docker = new Docker();

async function missing(req: DockerRequirements): Promise<string | undefined> {
  let info: {Runtimes?: Record<string, unknown>};
  try {
    await (docker.ping as (o: object) => Promise<unknown>).call(docker, {abortSignal: AbortSignal.timeout(3_000)});
    info = await docker.info();
  } catch (err) {
    return `no Docker engine answers (${(err as Error).message.split('\n')[0]}); run .ci/setup-docker.sh as root`;
  }
  if (req.runsc && !Object.hasOwn(info.Runtimes ?? {}, 'runsc')) {
    return 'the Docker engine has no "runsc" runtime; run .ci/setup-docker.sh as root to register gVisor';
  }
  const absent: string[] = [];
  for (const image of req.images ?? []) {
    try {
      await docker.getImage(image).inspect();
    } catch {
      absent.push(image);
    }
  }
  if (absent.length > 0) {
    return `image(s) ${absent.join(', ')} missing; build them with \`node dist/cli.js images build\` (or sandboxes/base/build.sh, then docker build -f sandboxes/<name>/Dockerfile sandboxes)`;
  }
  return undefined;
}

/** See the module comment. @throws Error in CI when the requirements are not met. */
export async function dockerAvailable(req: DockerRequirements = {}): Promise<boolean> {
  const why = await missing(req);
  if (why === undefined) return true;
  if (process.env.CI) {
    throw new Error(`container tests cannot run in CI: ${why}`);
  }
  announceOnce(`container tests SKIPPED: ${why}`);
  return false;
}

/** Prints `line` once per test run: the first test process of this runner (same parent pid) to claim a marker file prints. */
function announceOnce(line: string): void {
  const marker = join(tmpdir(), `toolcell-docker-skip-${process.ppid}`);
  try {
    closeSync(openSync(marker, 'wx'));
  } catch {
    return;
  }
  process.stderr.write(`\n*** ${line} ***\n\n`);
}


const TEST_LIMITS: ContainerJob['limits'] = {timeoutMs: 5_000, memoryMb: 64, outputBytes: 65_536, cpus: 0.5, pids: 32};
let seq = 0;
/** A small container job for tests: python image, 64 MB, 32 pids, 5 s, 64 KiB output, /tmp 8m. */
export function containerJob(argv: string[], overrides: Partial<ContainerJob> = {}): ContainerJob {
  return {
    kind: 'container',
    id: `test-${process.pid}-${++seq}`,
    image: 'toolcell/python',
    argv,
    network: 'none',
    readOnlyRoot: true,
    tmpfs: {'/tmp': '8m'},
    mounts: [],
    runtime: 'runc',
    profile: 'test',
    ...overrides,
    limits: {...TEST_LIMITS, ...overrides.limits},
  };
}

/** `python3 -c CODE` with extra argv. */
export function python(code: string, extraArgs: string[] = [], overrides: Partial<ContainerJob> = {}): ContainerJob {
  return containerJob(['/usr/bin/python3', '-c', code, ...extraArgs], overrides);
}

/** Ids of containers carrying `toolcell.managed=true` (and these extra labels, e.g. `toolcell.owner=…`). */
export async function managedContainers(...labels: string[]): Promise<string[]> {
  const list = await docker.listContainers({all: true, filters: {label: ['toolcell.managed=true', ...labels]}});
  return list.map((c) => c.Id);
}

/**
 * Ids `list()` returns that are not in `before`, polled every 250 ms until there are none or
 * `deadlineMs` passed (then the ones still there). Hosted servers' containers are removed after
 * their call's result returned, so a count right after a call must wait for them.
 */
export async function leftAfter(list: () => Promise<string[]>, before: ReadonlySet<string> = new Set(), deadlineMs = 20_000): Promise<string[]> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const left = (await list()).filter((id) => !before.has(id));
    if (left.length === 0 || Date.now() >= end) return left;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A never-aborted signal. */
export const noSignal = (): AbortSignal => new AbortController().signal;

/** Asserts that `backend` still runs a normal call correctly (after a hazard). */
export async function assertHealthy(backend: {run(job: ContainerJob, o: {signal: AbortSignal}): Promise<{failed: boolean; stdout: string; exitCode?: number}>}, overrides: Partial<ContainerJob> = {}): Promise<void> {
  const r = await backend.run(python('print(6 * 7)', [], overrides), {signal: noSignal()});
  if (r.failed || r.stdout !== '42\n' || r.exitCode !== 0) {
    throw new Error(`a normal call after the hazard did not work: ${JSON.stringify(r)}`);
  }
}

/** Arguments that a shell would interpret: each must arrive as one literal argv element. */
export const HOSTILE_ARGS = [
  '; rm -rf /', '$(id)', '`id`', 'a\nb', 'line\n', '\n', '"double"', "'single'", '&& echo pwned', '| cat /etc/passwd',
  '> /tmp/x', '*', '~', '$HOME', '${PATH}', '\\', '\\n', '%s%n', 'ünïcödé ✓', '--help', '-c', '', ' ', '\t', 'a b  c',
];

/**
 * Watches the engine's event stream (GET /events) for containers created with `label`
 * (e.g. `toolcell.owner=…`) from now on. The engine keeps only its last 256 events, so a
 * live subscription is the only way to see every container of a long run.
 */
export async function watchCreated(label: string): Promise<{ids: () => string[]; stop: () => void}> {
  const ids = new Set<string>();
  const stream = (await docker.getEvents({filters: {type: ['container'], event: ['create'], label: [label]}})) as NodeJS.ReadableStream & {destroy(): void};
  let rest = '';
  stream.on('data', (chunk: Buffer) => {
    const lines = (rest + chunk.toString('utf8')).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) ids.add((JSON.parse(line) as {id: string}).id);
  });
  stream.on('error', () => undefined);
  return {ids: () => [...ids], stop: () => stream.destroy()};
}

/**
 * One {@link ContainerBackend} for the enclosing `describe`: created in `before`, closed in
 * `after` (whatever the tests asserted), which then checks that no container with its owner
 * label is left. Returns a stand-in that forwards every property and method to that backend
 * (methods bound to it, so its private fields work), usable as a `ContainerBackend` in the
 * tests' bodies; touching it outside a test (before `before` ran) throws.
 * @param options the backend's options, or a function returning them (evaluated in `before`).
 */
export function useContainerBackend(options: ContainerBackendOptions | (() => ContainerBackendOptions) = {}): ContainerBackend {
  let backend: ContainerBackend | undefined;
  before(() => {
    backend = new ContainerBackend(typeof options === 'function' ? options() : options);
  });
  after(async () => {
    if (!backend) return;
    await backend.close();
    const left = await managedContainers(`toolcell.owner=${backend.owner}`);
    if (left.length > 0) throw new Error(`containers left after close(): ${left.join(', ')}`);
  });
  return new Proxy({} as ContainerBackend, {
    get(_target, property) {
      if (!backend) throw new Error('useContainerBackend(): the backend exists only inside tests (after `before`)');
      const value: unknown = Reflect.get(backend, property, backend);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(backend) : value;
    },
  });
}
