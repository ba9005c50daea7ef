/** Assembles a runtime from the operator's directories: profiles, packages, backends, dispatcher and audit sink, with one set of defaults. */
import {resolve} from 'node:path';
import type {KeyObject} from 'node:crypto';
import {JsonlAuditSink} from './audit/audit-log.ts';
import type {AuditSink} from './audit/audit-event.ts';
import {EgressProxy, type EgressOutcome} from './egress/proxy.ts';
import type {ContainerJob} from './backends/backend.ts';
import {IsolateBackend} from './backends/isolate/isolate-backend.ts';
import {DEFAULT_DISPATCH, Dispatcher, type DispatcherOptions} from './dispatch/dispatcher.ts';
import type {Admission, ToolRuntime} from './frontend/call-tool.ts';
import {log} from './log.ts';
import {loadPackages, type LoadedPackage, type RejectedPackage} from './policy/load-packages.ts';
import {loadProfiles} from './policy/load-profiles.ts';
import {resolveAllMounts} from './policy/mounts.ts';
import type {ContainerProfile, Profile} from './policy/profile-schema.ts';
import {toJob, type ContainerGrants} from './policy/to-job.ts';
import type {ContainerBackend} from './backends/container/container-backend.ts';
import type {ToolDefinition} from './policy/tool-definition.ts';
import {containerSupport} from './container-support.ts';
import {BUNDLED_PROFILES, BUNDLED_TOOLS} from './paths.ts';
import {existingUserToolsDir} from './hosted/tools-dir.ts';
import {prepareHostedTools} from './hosted-tools.ts';
import {ServerBackend} from './backends/server/server-backend.ts';
import {prepareHostedContent} from './hosted-content-runtime.ts';
import type {HostedCatalog} from './policy/hosted-content.ts';
import {readFile} from 'node:fs/promises';
import {ConfigError} from './errors.ts';
import {registerLogSecrets} from './log.ts';
import {SecretStore} from './egress/secrets.ts';
import {openContainerInterception} from './egress/container-secrets.ts';
import {defaultStateDir} from './backends/container/provenance.ts';

/**
 * The default of every runtime option, in one place: `createRuntime` applies them, the CLI shows
 * and uses them as its flag defaults, and the README quotes them.
 * - `isolateWorkers` 1: isolate worker processes (`--isolate-workers`).
 * - `isolatePool` 4: warm isolates kept ready per memory size in each worker (`--isolate-pool`;
 *   0 turns the pool off). The one-shot commands `list` and `call` pass 0.
 * - `containerPool` 0: warm containers per (image, profile), off (`--container-pool`).
 * - `containers` true: use the Docker engine when container tools are loaded (`--no-containers`).
 * - `audit` `'stderr'`: where audit events go (`--audit-log`) for `serve --http` and the runtime.
 * - `auditStdio` `'off'`: the same for `serve` over stdio, where stderr is the desktop client's
 *   log of the server: audit events are written there only when `--audit-log` asks for them.
 * - `dispatch`: queue bounds and deadlines per backend (`DEFAULT_DISPATCH`).
 * `IsolateBackend` has fallbacks of its own (pool size 2) for code that constructs it directly;
 * the runtime always passes these values, so that library default never applies here.
 */
export const RUNTIME_DEFAULTS = Object.freeze({
  isolateWorkers: 1,
  isolatePool: 4,
  containerPool: 0,
  containers: true,
  audit: 'stderr',
  auditStdio: 'off',
  dispatch: DEFAULT_DISPATCH,
} as const);

/** How to assemble a runtime. Every option is optional; absent ones take `RUNTIME_DEFAULTS`. */
export interface RuntimeOptions {
  /**
   * Tool directories, loaded in this order (the first package with a name keeps it); default:
   * the bundled `tools/` alone; `[]` loads none. The CLI passes the bundled directory first,
   * then each `--tools DIR` (`withBundled` in paths.ts).
   */
  toolDirs?: readonly string[];
  /** Profile directories, the same way (default: the bundled `profiles/` alone; `[]` loads none). */
  profileDirs?: readonly string[];
  /**
   * Directory `${workspace}` means in mount grants. No default: without it, tools whose profile
   * mounts `${workspace}` are left out (least privilege: the current directory of whoever
   * launched the server may be `/` or a home directory).
   */
  workspace?: string;
  /** Roots under which mounts may lie; default: `[workspace]`, or none without a workspace. */
  mountRoots?: readonly string[];
  /** Audit target: a file path, `stderr`, or `off` (default: `RUNTIME_DEFAULTS.audit`). */
  audit?: string;
  /** Ed25519 private key that signs every audit line (`audit.signingKey`, `loadAuditSigningKey`); none by default. */
  auditSigningKey?: KeyObject;
  /** Queue bounds and deadlines (default: `RUNTIME_DEFAULTS.dispatch`). */
  dispatch?: DispatcherOptions;
  /** Packages served under their bare tool names (serve --unprefixed). */
  unprefixed?: readonly string[];
  /** Whether to try the container backend (default: `RUNTIME_DEFAULTS.containers`, true); false leaves container tools out. */
  containers?: boolean;
  /** Isolate worker processes (default: `RUNTIME_DEFAULTS.isolateWorkers`). */
  isolateWorkers?: number;
  /** Warm isolates kept ready per memory size in each worker; 0 is off (default: `RUNTIME_DEFAULTS.isolatePool`). */
  isolatePool?: number;
  /** Warm containers kept ready per (image, profile); 0 is off (default: `RUNTIME_DEFAULTS.containerPool`). */
  containerPool?: number;
  /**
   * Whether the runtime logs each rejected package and each tool it leaves out, one log line
   * each (default true: `serve`). `list` passes false: it prints them itself, so that each one
   * is shown once.
   */
  logProblems?: boolean;
  admission?: Admission;
  onCallFinished?: ToolRuntime['onCallFinished'];
  /** Counts each egress decision (`ServiceMetrics.egress`: `toolcell_egress_total{tool, outcome}`). */
  onEgress?: (tool: string, outcome: EgressOutcome) => void;
  /**
   * The operator's secrets file (`--secrets FILE`, egress/secrets.ts). Without it, tools whose
   * profile grants secrets are left out (skipped); with it, a profile that grants a secret the
   * file does not declare stops the load (ConfigError naming both).
   */
  secretsFile?: string;
  /** Extra CA certificates (PEM file) trusted for upstream HTTPS servers, besides Node's default roots (`--upstream-ca FILE`). */
  upstreamCaFile?: string;
}

/**
 * Asks the warm pool to keep containers ready for `tool`. A template needs no real arguments
 * (pool members wait for their argv); when the command's argv[0] is itself a placeholder the
 * pool warms on first use instead.
 */
function prewarm(backend: ContainerBackend, tool: ToolDefinition, grants: ContainerGrants): void {
  try {
    backend.prewarm(toJob(tool, {}, `prewarm-${tool.name}`, grants) as ContainerJob);
  } catch {
    log.debug({tool: tool.name}, 'no prewarm template: argv[0] comes from the arguments');
  }
}

/**
 * A tool that loaded but is not served, and why. `skipped` marks a tool left out on purpose by
 * how the server was started (`--no-containers`, or a profile that mounts `${workspace}` without
 * `--workspace`): `/readyz` and `doctor` report it without failing. Without `skipped` it was left
 * out for a fault (no Docker engine while containers were wanted, a missing image or command, a
 * refused mount), which fails both.
 */
export interface UnavailableTool {
  tool: string;
  reason: string;
  skipped?: true;
}

/** A running runtime: what the call spine needs plus what `list`, `doctor` and shutdown need. */
export interface Runtime extends ToolRuntime {
  readonly profiles: ReadonlyMap<string, Profile>;
  readonly packages: readonly LoadedPackage[];
  readonly rejected: readonly RejectedPackage[];
  readonly unavailable: readonly UnavailableTool[];
  /** Every loaded tool, served or not. */
  readonly allTools: ReadonlyMap<string, ToolDefinition>;
  /** Warm sandboxes ready now, by backend (for metrics). */
  poolSizes(): Record<string, number>;
  /** Isolate worker processes replaced so far (for metrics). */
  workerRestarts(): number;
  /** Whether the container backend, when tools need it, answers now (a Docker ping, at most 2 s). */
  containersReachable(): Promise<boolean>;
  /** Stops the backends (sandboxes are destroyed and reaped) and flushes the audit log. */
  close(): Promise<void>;
}

/**
 * Loads profiles and packages, starts the backends, and resolves container grants.
 * @throws ConfigError when a profile is invalid (a policy is never half-applied). Invalid
 *   packages do not throw: they are listed in `rejected` and logged, one line each.
 */
export async function createRuntime(options: RuntimeOptions = {}): Promise<Runtime> {
  const profileDirs = options.profileDirs ?? [BUNDLED_PROFILES];
  // The user's hosted servers (toolcell add without --tools) are served beside the bundled tools.
  const toolDirs = options.toolDirs ?? [BUNDLED_TOOLS, ...existingUserToolsDir()];
  const workspace = options.workspace === undefined ? undefined : resolve(options.workspace);
  const containerPool = options.containerPool ?? RUNTIME_DEFAULTS.containerPool;
  const profiles = await loadProfiles(profileDirs);
  const mountsByProfile = new Map<string, ContainerGrants['mounts']>();
  /** Container profiles that cannot be used as started, with the reason. */
  const profileProblems = new Map<string, string>();
  const secrets = options.secretsFile === undefined ? SecretStore.empty() : await SecretStore.load(options.secretsFile);
  registerLogSecrets(secrets.values());
  let upstreamCa: string | undefined;
  if (options.upstreamCaFile !== undefined) {
    upstreamCa = await readFile(options.upstreamCaFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new ConfigError(options.upstreamCaFile!, `cannot read the upstream CA file (${err.code ?? err.message})`);
    });
    if (!upstreamCa.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(options.upstreamCaFile, 'not a PEM certificate file');
  }
  /** Profiles left out because they grant secrets and serve has no --secrets. */
  const secretless = new Map<string, string>();
  for (const profile of profiles.values()) {
    const granted = profile.secrets ?? [];
    if (granted.length === 0) continue;
    if (options.secretsFile === undefined) {
      secretless.set(profile.name, `its profile "${profile.name}" grants secrets (${granted.join(', ')}), and serve was started without --secrets FILE`);
      if (profile.backend === 'container') profileProblems.set(profile.name, secretless.get(profile.name)!);
    } else secrets.checkGranted(profile.name, granted);
  }
  // Container secrets need TLS interception: the installation's egress CA, opened only when a container profile grants a secret.
  const interception = await openContainerInterception(profiles.values(), secrets, defaultStateDir(), upstreamCa);
  if (interception !== undefined && 'problem' in interception) {
    for (const profile of profiles.values()) {
      if (profile.backend === 'container' && (profile.secrets?.length ?? 0) > 0) profileProblems.set(profile.name, `its profile "${profile.name}" grants secrets, and ${interception.problem}`);
    }
  }
  const containerCa = interception !== undefined && !('problem' in interception) ? interception : undefined;
  const mountable: ContainerProfile[] = [];
  /** Container profiles left out on purpose: they mount `${workspace}` and none was given. */
  const workspaceLess = new Set<string>();
  for (const profile of profiles.values()) {
    if (profile.backend !== 'container') continue;
    if (workspace === undefined && profile.filesystem.mounts.some((m) => m.source.startsWith('${workspace}'))) {
      workspaceLess.add(profile.name);
      profileProblems.set(profile.name, `its profile "${profile.name}" mounts \${workspace}, and serve was started without --workspace DIR`);
      continue;
    }
    mountable.push(profile);
  }
  // One profile's bad or planted mount leaves out that profile's tools, not the server.
  const mountRoots = options.mountRoots?.length ? options.mountRoots : workspace === undefined ? [] : [workspace];
  const resolved = await resolveAllMounts(mountable, {workspace: workspace ?? '', mountRoots});
  for (const [name, list] of resolved.mounts) mountsByProfile.set(name, list);
  for (const [name, problem] of resolved.problems) profileProblems.set(name, problem);
  const loaded = await loadPackages(toolDirs, profiles, {unprefixed: options.unprefixed ?? []});
  const logProblems = options.logProblems ?? true;
  if (logProblems) for (const r of loaded.rejected) log.warn({dir: r.dir, package: r.name}, `package rejected: ${r.reason}`);

  const served = new Map<string, ToolDefinition>();
  const unavailable: UnavailableTool[] = [];
  const containerGrants = new Map<string, ContainerGrants>();
  const containerTools = [...loaded.tools.values()].filter((t) => t.container !== undefined);
  const hostedTools = [...loaded.tools.values()].filter((t) => t.server !== undefined);
  let hostedContent: HostedCatalog | undefined;
  for (const tool of loaded.tools.values()) {
    if (!tool.isolate) continue;
    const reason = secretless.get(tool.profile.name);
    if (reason === undefined) served.set(tool.name, tool);
    else {
      unavailable.push({tool: tool.name, reason, skipped: true});
      if (logProblems) log.warn({tool: tool.name}, `tool left out: ${reason}`);
    }
  }

  let container: ContainerBackend | undefined;
  let server: ServerBackend | undefined;
  // The egress proxy of container tools with an egress grant; its audit events go to the audit sink made below.
  let auditSink: AuditSink | undefined;
  const egressProxy = new EgressProxy({audit: (event) => auditSink?.write(event), ...(options.onEgress ? {count: options.onEgress} : {}), ...(containerCa ? {intercept: containerCa.interceptor.proxyHook()} : {})});
  const contentPackages = loaded.hostedContent.packages;
  if (containerTools.length > 0 || hostedTools.length > 0 || contentPackages.length > 0) {
    const support = !(options.containers ?? RUNTIME_DEFAULTS.containers)
      ? {backend: undefined, reason: 'container tools are turned off (--no-containers)'}
      : await containerSupport({poolSize: containerPool, egress: egressProxy});
    if (support.backend === undefined) {
      const skipped = options.containers === false;
      const left = [...containerTools, ...hostedTools];
      for (const tool of left) unavailable.push({tool: tool.name, reason: support.reason, ...(skipped ? {skipped} : {})});
      for (const c of contentPackages) unavailable.push({tool: `${c.packageName} (prompts, resources)`, reason: support.reason, ...(skipped ? {skipped} : {})});
      if (logProblems) log.warn({tools: left.map((t) => t.name)}, `container tools left out: ${support.reason}`);
    } else {
      if (hostedTools.length > 0) {
        const hosted = await prepareHostedTools(hostedTools, {docker: support.backend.docker, resolveCommands: support.resolveCommands, mountsByProfile, profileProblems, poolSize: containerPool, egress: egressProxy, skippedProfiles: new Set(secretless.keys())});
        server = hosted.backend;
        unavailable.push(...hosted.unavailable);
        if (logProblems) for (const u of hosted.unavailable) log.warn({tool: u.tool}, `tool left out: ${u.reason}`);
        for (const tool of hosted.served) served.set(tool.name, tool);
        for (const [name, grants] of hosted.grants) containerGrants.set(name, grants);
      }
      if (contentPackages.length > 0) {
        const prepared = await prepareHostedContent(loaded.hostedContent, {docker: support.backend.docker, resolveCommands: support.resolveCommands, mountsByProfile, profileProblems});
        unavailable.push(...prepared.unavailable);
        if (logProblems) for (const u of prepared.unavailable) log.warn({tool: u.tool}, `left out: ${u.reason}`);
        for (const [key, grants] of prepared.grants) containerGrants.set(key, grants);
        if (prepared.catalog.packages.length > 0) {
          hostedContent = prepared.catalog;
          server ??= new ServerBackend({docker: support.backend.docker, egress: egressProxy});
        }
      }
      container = support.backend;
      for (const tool of containerTools) {
        const profile = tool.profile;
        if (profile.backend !== 'container') continue;
        const problem = profileProblems.get(profile.name);
        if (problem !== undefined) {
          unavailable.push({tool: tool.name, reason: problem, ...(workspaceLess.has(profile.name) || secretless.has(profile.name) ? {skipped: true as const} : {})});
          if (logProblems) log.warn({tool: tool.name}, `tool left out: ${problem}`);
          continue;
        }
        try {
          const commands = await support.resolveCommands(tool.container!.image, profile.commands);
          const grants = {commands, mounts: mountsByProfile.get(profile.name) ?? []};
          containerGrants.set(tool.name, grants);
          served.set(tool.name, tool);
          if (containerPool > 0) prewarm(support.backend, tool, grants);
        } catch (err) {
          const reason = (err as Error).message;
          unavailable.push({tool: tool.name, reason});
          if (logProblems) log.warn({tool: tool.name}, `tool left out: ${reason}`);
        }
      }
    }
  }

  const isolate = new IsolateBackend({
    workers: options.isolateWorkers ?? RUNTIME_DEFAULTS.isolateWorkers,
    poolSize: options.isolatePool ?? RUNTIME_DEFAULTS.isolatePool,
  });
  const dispatcher = new Dispatcher({isolate, container, server}, options.dispatch ?? RUNTIME_DEFAULTS.dispatch);
  const audit: AuditSink = new JsonlAuditSink(options.audit ?? RUNTIME_DEFAULTS.audit, options.auditSigningKey ? {signingKey: options.auditSigningKey} : {});
  auditSink = audit;
  let closing: Promise<void> | undefined;
  return {
    tools: served,
    allTools: loaded.tools,
    profiles,
    packages: loaded.packages,
    rejected: loaded.rejected,
    unavailable,
    dispatcher,
    audit,
    containerGrants,
    admission: options.admission,
    hostedContent,
    onCallFinished: options.onCallFinished,
    egress: {secrets, ...(upstreamCa ? {upstreamCa} : {}), ...(containerCa ? {ca: containerCa.ca} : {}), audit: (event) => audit.write(event), ...(options.onEgress ? {count: options.onEgress} : {})},
    // Kept conditional: every key is a pool gauge (metrics.watchPools), so no key without a pool.
    poolSizes: () => ({isolate: isolate.stats().pooled, ...(container ? {container: container.poolStats().ready} : {}), ...(server ? {server: server.poolStats().ready} : {})}),
    workerRestarts: () => isolate.stats().restarts,
    containersReachable: async () => {
      if (container === undefined) return !(options.containers ?? RUNTIME_DEFAULTS.containers) || (containerTools.length === 0 && hostedTools.length === 0);
      try {
        await (container.docker.ping as (options: object) => Promise<unknown>).call(container.docker, {abortSignal: AbortSignal.timeout(2000)});
        return true;
      } catch {
        return false;
      }
    },
    close: () => (closing ??= (async () => {
      await dispatcher.close();
      await egressProxy.close();
      containerCa?.interceptor.close();
      await audit.close();
    })()),
  };
}
