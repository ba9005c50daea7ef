import {readFileSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {Ajv2020} from 'ajv/dist/2020.js';
import type {ExecutionResult} from '../../../src/backends/backend.ts';
import type {IsolateBackend} from '../../../src/backends/isolate/isolate-backend.ts';
import {IsolateProfile} from '../../../src/policy/profile-schema.ts';
import {errorOfResult, runModule, useIsolateBackend, valueOfResult} from '../../support/isolate-backend.ts';

/**
 * Shared helpers of the bundled-tool tests: build the bundles once per test process, read
 * manifests and profiles, call a tool in the real isolate backend under its profile's
 * limits, and compile a tool's schemas with ajv (draft 2020-12).
 */

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const TOOLS_DIR = path.join(REPO, 'tools');
/** Test-only packages (the conformance fixtures), built like the bundled ones but never served by default. */
export const FIXTURE_TOOLS_DIR = path.join(REPO, 'test', 'fixtures', 'tools');
/** The folder of a package: bundled, or a test fixture. */
export const packageDir = (pkg: string): string => path.join(pkg === 'conformance' ? FIXTURE_TOOLS_DIR : TOOLS_DIR, pkg);

/** The parts of a manifest tool these tests use. */
export interface ManifestTool {
  name: string;
  title?: string;
  description: string;
  inputSchema: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
  profile: string;
  isolate?: {entry: string};
  container?: unknown;
}

export interface Manifest {
  name: string;
  version: string;
  description: string;
  tools: ManifestTool[];
}

let built: Promise<void> | undefined;

/**
 * Runs scripts/build-tools.mjs's `buildTools` over tools/ once per process (bundles are
 * written atomically, so parallel test files may build at the same time).
 * @throws Error listing the build errors
 */
export function ensureBuilt(): Promise<void> {
  built ??= (async () => {
    const script = path.join(REPO, 'scripts/build-tools.mjs');
    const {buildTools} = await import(script) as {buildTools: (dir: string, o: {log: (l: string) => void}) => Promise<{errors: string[]}>};
    const errors = [...(await buildTools(TOOLS_DIR, {log: () => {}})).errors, ...(await buildTools(FIXTURE_TOOLS_DIR, {log: () => {}})).errors];
    if (errors.length > 0) throw new Error(`build-tools failed:\n${errors.join('\n')}`);
  })();
  return built;
}

/** Parses tools/<pkg>/toolcell.json. */
export function manifest(pkg: string): Manifest {
  return JSON.parse(readFileSync(path.join(packageDir(pkg), 'toolcell.json'), 'utf8')) as Manifest;
}

/** The manifest entry of one tool. @throws Error when the package has no such tool */
export function toolOf(pkg: string, tool: string): ManifestTool {
  const found = manifest(pkg).tools.find((t) => t.name === tool);
  if (!found) throw new Error(`tools/${pkg} has no tool ${tool}`);
  return found;
}

/** Parses and validates profiles/<name>.json as an isolate profile (zod, strict). */
export function isolateProfile(name: string): IsolateProfile {
  return IsolateProfile.parse(JSON.parse(readFileSync(path.join(REPO, 'profiles', `${name}.json`), 'utf8')));
}

/** The built bundle of one isolate tool, as text. */
export async function bundle(pkg: string, tool: string): Promise<string> {
  await ensureBuilt();
  const entry = toolOf(pkg, tool).isolate?.entry;
  if (!entry) throw new Error(`${pkg}/${tool} is not an isolate tool`);
  return readFileSync(path.join(packageDir(pkg), entry), 'utf8');
}

/** Calls of bundled tools in one real isolate backend (see `useToolBackend`). */
export interface ToolCaller {
  /** The backend, for calls of other sources (e.g. with other limits). */
  backend: IsolateBackend;
  /**
   * Calls `pkg`/`tool` with `args` under its profile's limits (timeoutMs, memoryMb,
   * outputBytes, cpuTimeMs), as the runtime would; resolves with the backend's result
   * (`stdout`: the value's JSON text, `stderr`: the console text, `error` when it threw).
   */
  callTool(pkg: string, tool: string, args: unknown): Promise<ExecutionResult>;
  /** Like `callTool`, returning the parsed value after asserting that the call did not fail. */
  valueOf(pkg: string, tool: string, args: unknown): Promise<unknown>;
  /**
   * Like `callTool`, for a call the tool ends by throwing: asserts that it failed with an
   * `error` (and not by a limit), and returns that error as `Name: message`.
   */
  thrownBy(pkg: string, tool: string, args: unknown): Promise<string>;
}

/**
 * One `IsolateBackend` for the calling test file (started in `before`, closed in `after`,
 * see test/support/isolate-backend.ts) and the calls of bundled tools in it.
 */
export function useToolBackend(): ToolCaller {
  const backend = useIsolateBackend();
  const callTool = async (pkg: string, tool: string, args: unknown): Promise<ExecutionResult> => {
    const {limits} = isolateProfile(toolOf(pkg, tool).profile);
    return runModule(backend, await bundle(pkg, tool), args,
      {timeoutMs: limits.timeoutMs, memoryMb: limits.memoryMb, outputBytes: limits.outputBytes, cpuTimeMs: limits.cpuTimeMs ?? limits.timeoutMs},
      `${pkg}/${tool}.js`);
  };
  return {
    backend, callTool,
    valueOf: async (pkg, tool, args) => valueOfResult(await callTool(pkg, tool, args)),
    thrownBy: async (pkg, tool, args) => errorOfResult(await callTool(pkg, tool, args)),
  };
}

const ajv = new Ajv2020({strict: true, allErrors: true});
const validators = new Map<string, ReturnType<typeof ajv.compile>>();

/** An ajv (2020-12, strict) validator of a tool's input or output schema; compiled once. */
export function validator(pkg: string, tool: string, which: 'inputSchema' | 'outputSchema' = 'inputSchema'): (value: unknown) => boolean {
  const key = `${pkg}/${tool}/${which}`;
  let validate = validators.get(key);
  if (!validate) {
    const schema = toolOf(pkg, tool)[which];
    if (!schema) throw new Error(`${key} is not declared`);
    validate = ajv.compile(schema);
    validators.set(key, validate);
  }
  return (value) => validate(value) as boolean;
}
