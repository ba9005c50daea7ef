// A real MCP server from npm, hosted for a test file the way an operator does it: `toolcell add npm:<pkg>@<version> --yes` under a profile of the test's own.
import {execFile} from 'node:child_process';
import {readFileSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {promisify} from 'node:util';
import {HostedPackageManifest} from '../../src/policy/manifest-schema.ts';
import {docker, dockerAvailable, managedContainers} from './docker.ts';
import {CLI} from './mcp-stdio.ts';
import {tempDir} from './temp.ts';

/** Resolve + `npm ci` in the image build + probe, on a slow shared host with a cold cache. */
export const ADD_TIMEOUT_MS = 600_000;

/** The bundled `server-offline` profile (profiles/server-offline.json) under another name, so the test's containers carry their own `toolcell.profile` label. */
export function serverProfile(name: string, mounts: unknown[] = []): Record<string, unknown> {
  const bundled = JSON.parse(readFileSync(new URL('../../profiles/server-offline.json', import.meta.url), 'utf8')) as Record<string, unknown> & {filesystem: Record<string, unknown>};
  delete bundled.$schema;
  return {...bundled, name, filesystem: {...bundled.filesystem, mounts}};
}

/**
 * Why a real-server test cannot run here (no Docker engine or toolcell/node, or the npm registry
 * does not answer for `spec`), or false. Under CI an unreachable registry throws: never a silent skip there.
 */
export async function realServerSkip(spec: string): Promise<string | false> {
  if (!await dockerAvailable({images: ['toolcell/node']})) return 'no Docker engine or toolcell/node';
  try {
    await promisify(execFile)('npm', ['view', spec, 'version'], {timeout: 60_000});
    return false;
  } catch (err) {
    const why = `the npm registry is not reachable (${(err as Error).message.split('\n')[0]})`;
    if (process.env.CI === 'true' || process.env.CI === '1') throw new Error(`${spec}: cannot run in CI: ${why}`);
    process.stderr.write(`\n*** ${spec}: test SKIPPED: ${why} ***\n\n`);
    return why;
  }
}

/** A hosted server added by {@link addNpmServer}. */
export interface RealServer {
  /** Package name, tools are `<name>__<tool>`. */
  name: string;
  profile: string;
  toolsDir: string;
  profilesDir: string;
  /** `<toolsDir>/<name>/toolcell.json`. */
  manifestPath: string;
  manifest: HostedPackageManifest;
  /** Ids of this test's containers (label `toolcell.profile=<profile>`), left or running. */
  containers: () => Promise<string[]>;
  /** Removes the temp dir and the image `add` built (its cached layers stay for the next run). */
  dispose: () => Promise<void>;
}

/**
 * Runs `toolcell add npm:<pkg>@<version> --name <name> --profile <profile> --tools <tmp> --profiles <tmp> --yes [-- serverArgs]`
 * (the built CLI) and reads the manifest it wrote. Throws with the tail of add's stderr when add fails.
 * @param mounts the profile's `filesystem.mounts` (e.g. the workspace read-only)
 * @param network the profile's `network` (e.g. `{egress: {allow: [...]}}`); default the bundled profile's (`none`)
 */
export async function addNpmServer(options: {spec: string; name: string; mounts?: unknown[]; serverArgs?: string[]; network?: unknown}): Promise<RealServer> {
  const dir = await tempDir('toolcell-real-server-');
  const profile = `${options.name}-profile`;
  await dir.write(`profiles/${profile}.json`, {...serverProfile(profile, options.mounts), ...(options.network === undefined ? {} : {network: options.network})});
  const toolsDir = join(dir.path, 'tools');
  const profilesDir = join(dir.path, 'profiles');
  const argv = ['--no-node-snapshot', CLI, 'add', `npm:${options.spec}`, '--name', options.name, '--profile', profile,
    '--tools', toolsDir, '--profiles', profilesDir, '--yes', ...(options.serverArgs?.length ? ['--', ...options.serverArgs] : [])];
  const image = () => `toolcell/srv-${options.name}:${options.spec.split('@').pop()}`;
  const dispose = async () => {
    await dir.dispose();
    await docker.getImage(image()).remove().catch(() => undefined);
  };
  try {
    await promisify(execFile)(process.execPath, argv, {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, timeout: ADD_TIMEOUT_MS, maxBuffer: 64 * 2 ** 20});
  } catch (e) {
    await dispose();
    throw new Error(`toolcell add ${options.spec} failed (${(e as {code?: unknown}).code}): ${String((e as {stderr?: string}).stderr ?? e).slice(-4000)}`);
  }
  const manifestPath = join(toolsDir, options.name, 'toolcell.json');
  const manifest = HostedPackageManifest.parse(JSON.parse(readFileSync(manifestPath, 'utf8')));
  return {name: options.name, profile, toolsDir, profilesDir, manifestPath, manifest,
    containers: () => managedContainers(`toolcell.profile=${profile}`), dispose};
}

/** Edits a hosted package's `server` section as an operator would (e.g. `lifetime`), leaving its pins as `add` wrote them. */
export function editServer(server: RealServer, patch: Record<string, unknown>): void {
  const json = JSON.parse(readFileSync(server.manifestPath, 'utf8')) as {server: Record<string, unknown>};
  json.server = {...json.server, ...patch};
  writeFileSync(server.manifestPath, JSON.stringify(json, null, 2));
}
