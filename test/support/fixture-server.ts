// Builds the test-only image of the fixture MCP servers (test/fixtures/servers) FROM toolcell/node, and removes it.
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before} from 'node:test';
import {fileURLToPath} from 'node:url';
import type {ContainerJob} from '../../src/backends/backend.ts';
import {pinnedDefinition} from '../../src/hosted/hosted-package.ts';
import {definitionSha256} from '../../src/policy/pins.ts';
import {docker} from './docker.ts';

/** Folder of the fixture servers and their Dockerfile. */
export const FIXTURE_SERVERS_DIR = fileURLToPath(new URL('../fixtures/servers/', import.meta.url));

/**
 * The names of the tools the fixture server lists, in its order, read from its tools() table
 * (one `  {name: '…'` line each), so that a tool added to the fixture does not break tests that
 * check a whole listing.
 */
export const FIXTURE_TOOL_NAMES: readonly string[] = [...readFileSync(join(FIXTURE_SERVERS_DIR, 'fixture-server.mjs'), 'utf8')
  .matchAll(/^ {2}\{name: '([a-z_-]+)'/gm)].map((m) => m[1]!);
/** Longest wait for the fixture image build, in ms (two COPY/RUN steps on a busy host). */
const BUILD_TIMEOUT_MS = 120_000;

/**
 * Builds the test image `toolcell-test/<name>:<pid>` from `files` of folder `context` in `before`
 * (deadline {@link BUILD_TIMEOUT_MS}, label `toolcell.test=<name>`) and removes it in `after`,
 * whatever the tests asserted. Returns its tag and a getter of its image ID (valid inside tests).
 * @throws in `before` when the engine refuses the build or a step fails (the message names the tag)
 */
export function useTestImage(name: string, context: string, files: readonly string[]): {tag: string; imageId: () => string} {
  const tag = `toolcell-test/${name}:${process.pid}`;
  let id: string | undefined;
  before(async () => {
    const stream = await docker.buildImage({context, src: [...files]},
      {t: tag, rm: true, forcerm: true, labels: {'toolcell.test': name}, abortSignal: AbortSignal.timeout(BUILD_TIMEOUT_MS)} as object);
    let failure: string | undefined;
    await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve()),
      (e: {error?: string}) => { if (e.error) failure = e.error; }));
    if (failure) throw new Error(`building ${tag} failed: ${failure}`);
    id = (await docker.getImage(tag).inspect()).Id;
  }, {timeout: BUILD_TIMEOUT_MS + 5_000});
  after(async () => {
    await docker.getImage(tag).remove({force: true}).catch(() => undefined);
  });
  return {tag, imageId: () => {
    if (id === undefined) throw new Error(`the image ${tag} is built in before()`);
    return id;
  }};
}

/** `toolcell-test/fixture-server:<pid>`, built and removed around the enclosing tests ({@link useTestImage}). */
export function useFixtureServerImage(): {tag: string; imageId: () => string} {
  return useTestImage('fixture-server', FIXTURE_SERVERS_DIR, ['Dockerfile', 'fixture-server.mjs']);
}

/** Sandbox settings of a fixture server: small limits, no network, read-only root, /tmp 8m. */
export function fixtureSandbox(imageId: string, mode: string, extraArgs: string[] = [], overrides: Partial<ContainerJob> = {}): ContainerJob {
  return {
    kind: 'container',
    id: `fixture-${process.pid}-${mode}`,
    image: imageId,
    argv: ['/usr/local/bin/node', '/srv/fixture-server.mjs', mode, ...extraArgs],
    network: 'none',
    readOnlyRoot: true,
    tmpfs: {'/tmp': '8m'},
    mounts: [],
    runtime: 'runc',
    profile: 'test-server',
    ...overrides,
    limits: {timeoutMs: 5_000, memoryMb: 128, cpus: 0.5, pids: 32, outputBytes: 1_048_576, ...overrides.limits},
  };
}

/**
 * The `tools` section of a hosted package pinning `listed` as a server listed them (what
 * `toolcell add` writes): per tool its pinned fields (pins.ts PINNED_FIELDS) and their SHA-256.
 */
export function toolPins(listed: readonly Record<string, unknown>[]): Array<{name: string; sha256: string; definition: Record<string, unknown>}> {
  return listed.map((t) => {
    const definition = pinnedDefinition(t);
    return {name: definition.name, sha256: definitionSha256(definition), definition};
  });
}
