/** `toolcell serve --http`: parses the address, loads the service config, wires quotas and metrics into the runtime, serves until a signal. */
import {loadAuditSigningKey} from '../../audit/signing-key.ts';
import {ConfigError} from '../../errors.ts';
import {log} from '../../log.ts';
import {QuotaAdmission, quotaQueueProblems, type QuotaStore} from '../../policy/quota.ts';
import {redactRedisUrl, RedisQuotaStore} from '../../policy/redis-quota.ts';
import {RedisSessionRecords} from '../../policy/session-records.ts';
import {grantCoverage} from '../../policy/grant-coverage.ts';
import {assertMayListen, defaultServiceConfig, loadServiceConfig} from '../../policy/service-config.ts';
import {assertSomethingServed, emptyToolDirs} from '../../serve-preflight.ts';
import {DEFAULT_WEIGHT} from '../../dispatch/fair-queue.ts';
import {createRuntime, RUNTIME_DEFAULTS, type RuntimeOptions} from '../../runtime.ts';
import {ServiceMetrics} from '../metrics.ts';
import {holdHangups, onHangup as deliverHangups} from './early-hangup.ts';
import {startHttpService, type HttpService} from './serve-http.ts';

/** Address bound when `--http` names only a port. */
export const DEFAULT_HOST = '127.0.0.1';

/**
 * Parses `HOST:PORT` (`[::1]:8080` for IPv6), or `PORT` / `:PORT`, which bind 127.0.0.1.
 * Port 0 asks for any free port.
 * @throws ConfigError on anything else
 */
export function parseListenAddress(hostPort: string): {host: string; port: number} {
  const text = hostPort.trim();
  const match = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+))?:)?(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65_535) throw new ConfigError('--http', `"${hostPort}" is not HOST:PORT or PORT (e.g. 127.0.0.1:8080, [::1]:8080, 8080)`);
  return {host: match[1] ?? match[2] ?? DEFAULT_HOST, port};
}

/**
 * `toolcell serve --http HOST:PORT [--config FILE]`: loads the service configuration, builds
 * the runtime with per-principal quotas and metrics, serves until SIGTERM or SIGINT, then shuts
 * down gracefully (see `HttpService.shutdown`; a second signal exits at once). Prints the
 * endpoint URL on stderr. SIGHUP re-reads `tls.cert`/`tls.key` (`HttpService.reloadTls`: new
 * connections get the new pair, a bad pair is refused and the old one kept; one line on stderr
 * either way); without a certificate configured it is ignored, never fatal. A SIGHUP during
 * start-up is queued and delivered once the service exists (`early-hangup.ts`).
 *
 * Refuses to serve nothing (exit 2): no tool served at all (`assertSomethingServed`), or
 * authentication configured while no principal can call a served tool (`grantCoverage`); warns
 * in one line for each principal that can call nothing, and for each `--tools` directory
 * (`userToolDirs`) that held no package.
 *
 * @returns the exit code: 0 after a graceful shutdown, 2 for a configuration or address error
 *   (message on stderr)
 */
export async function serveHttpCommand(hostPort: string, options: RuntimeOptions, configPath?: string, userToolDirs: readonly string[] = []): Promise<number> {
  // Before anything slow: a SIGHUP from here on is queued until the service exists (cli.ts installs it earlier still).
  holdHangups();
  const say = (text: string) => process.stderr.write(`toolcell: ${text}\n`);
  let service: HttpService;
  let close: (() => Promise<void>) | undefined;
  let shared: RedisQuotaStore | undefined;
  try {
    const {host, port} = parseListenAddress(hostPort);
    const config = configPath === undefined ? defaultServiceConfig() : await loadServiceConfig(configPath);
    // Checked again by startHttpService; here it fails before any backend starts.
    assertMayListen(host, config);
    const metrics = new ServiceMetrics();
    const quotaOptions = {
      defaults: {ratePerSec: config.quotas.ratePerSec, burst: config.quotas.burst, maxInFlight: config.quotas.maxInFlight},
      principals: config.quotas.principals,
      onLimited: (_principal: unknown, limit: 'rate' | 'in-flight') => metrics.rateLimited(limit),
    };
    // With `redis`, quotas are shared by every replica (redis-quota.ts); without, per process as before.
    const store = config.redis === undefined ? undefined
      : new RedisQuotaStore({...quotaOptions, url: config.redis.url, failMode: config.redis.failMode, leaseMs: config.redis.leaseMs, keyPrefix: config.redis.keyPrefix});
    shared = store;
    const quota: QuotaStore = store ?? new QuotaAdmission(quotaOptions);
    if (store !== undefined) {
      say(`quotas shared through Redis at ${redactRedisUrl(config.redis!.url)} (failMode ${config.redis!.failMode}, lease ${config.redis!.leaseMs} ms)`);
      close = () => store.close();
      metrics.watchSharedState(() => store.report().reachable);
    }
    const weights = new Map(Object.entries(config.fairShare.weights));
    const dispatch = {...(options.dispatch ?? RUNTIME_DEFAULTS.dispatch), weightOf: (principal: string) => weights.get(principal) ?? DEFAULT_WEIGHT};
    const problems = quotaQueueProblems(quota, Object.keys(config.quotas.principals), {isolate: dispatch.isolate, container: dispatch.container});
    if (problems.length > 0) throw new ConfigError(configPath ?? '(defaults)', `quotas: ${problems.join('; ')}`);
    const auditSigningKey = config.audit?.signingKey === undefined ? undefined : loadAuditSigningKey(config.audit.signingKey, `${configPath}: audit.signingKey`);
    const runtime = await createRuntime({...options, dispatch, ...(auditSigningKey ? {auditSigningKey} : {}), admission: quota, onCallFinished: metrics.onCallFinished, onEgress: metrics.egress});
    close = store === undefined ? () => runtime.close() : async () => {
      await runtime.close();
      await store.close();
    };
    for (const line of emptyToolDirs(runtime, userToolDirs)) say(line);
    assertSomethingServed(runtime);
    const coverage = grantCoverage(config, [...new Set([...[...runtime.tools.values()].map((t) => t.packageName), ...(runtime.hostedContent?.packages.map((p) => p.packageName) ?? [])])]);
    for (const line of coverage.warnings) say(`warning: ${line}`);
    if (coverage.nobody) throw new ConfigError(configPath ?? '(defaults)', 'grants: no principal can call any served tool (see the warnings above); grant packages in "grants"');
    metrics.watchPools(() => runtime.poolSizes());
    metrics.watchWorkerRestarts(() => runtime.workerRestarts());
    service = await startHttpService({runtime, config, host, port, metrics, readinessCheck: () => runtime.containersReachable(), sharedState: store && (() => store.report()),
      sessionRecords: store && new RedisSessionRecords(store.client, config.redis?.keyPrefix)});
  } catch (err) {
    await close?.().catch(() => {});
    if (err instanceof ConfigError) {
      say(err.message);
      return 2;
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL' || code === 'EACCES') {
      say(`cannot listen on ${hostPort}: ${code}`);
      return 2;
    }
    throw err;
  }
  say(`serving MCP over Streamable HTTP at ${service.url}`);
  const onHangup = () => {
    void service.reloadTls().then((outcome) => say(outcome.reloaded
      ? `SIGHUP: TLS certificate reloaded (sha256 ${outcome.fingerprint256})`
      : `SIGHUP: TLS certificate not reloaded: ${outcome.reason}`));
  };
  // A SIGHUP during start-up was queued (early-hangup.ts, installed by cli.ts); it is delivered now.
  const stopHangups = deliverHangups(onHangup);
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      say(`${signal}: shutting down (in-flight calls may take up to the drain deadline)`);
      process.once('SIGTERM', forceExit);
      process.once('SIGINT', forceExit);
      void service.shutdown().then(resolve, (err: unknown) => {
        log.error({err}, 'shutdown failed');
        resolve();
      });
    };
    const forceExit = () => {
      say('second signal: exiting now');
      process.exit(1);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  stopHangups();
  await shared?.close().catch(() => {});
  say('stopped');
  // Anything still holding the event loop (a stray socket) must not keep a stopped server alive.
  setTimeout(() => process.exit(0), 3000).unref();
  return 0;
}
