// Secrets for container tools: the runtime's egress CA and TLS interceptor (only when a container profile grants secrets), and each call's placeholders, CA mounts and trust variables.
import {join} from 'node:path';
import type {ContainerJob} from '../backends/backend.ts';
import {log as rootLog} from '../log.ts';
import type {Profile} from '../policy/profile-schema.ts';
import {EgressCa} from './ca.ts';
import {containerSecretSetup} from './container-trust.ts';
import type {SecretStore} from './secrets.ts';
import {TlsInterceptor} from './tls-intercept.ts';

const log = rootLog.child({component: 'egress-secrets'});

/** Sub-directory of the state directory that holds the egress CA (ca.ts: key 0600 in a 0700 directory). */
export const EGRESS_CA_DIR = 'egress-ca';

/** What the runtime holds to intercept the secret hosts of container calls. */
export interface ContainerInterception {
  ca: EgressCa;
  interceptor: TlsInterceptor;
}

/**
 * Opens the per-installation egress CA in `<stateDir>/egress-ca` and a `TlsInterceptor` on it,
 * only when some container profile grants a secret (and secrets are loaded); otherwise nothing is
 * created on disk. `upstreamCa`: extra PEM roots for upstream servers (`--upstream-ca`).
 * Returns `{problem}` when the CA cannot be used (a symlinked or open key file or directory,
 * another owner, an unwritable state directory): the caller leaves those profiles' tools out.
 * The message names no host path (that goes to the log).
 * Does NOT guarantee: that the key stays private from root or toolcell's own uid.
 */
export async function openContainerInterception(profiles: Iterable<Profile>, secrets: SecretStore, stateDir: string, upstreamCa?: string):
  Promise<ContainerInterception | {problem: string} | undefined> {
  const wanted = [...profiles].some((p) => p.backend === 'container' && (p.secrets?.length ?? 0) > 0);
  if (!wanted || secrets.names().length === 0) return undefined;
  const dir = join(stateDir, EGRESS_CA_DIR);
  try {
    const ca = await EgressCa.open(dir);
    return {ca, interceptor: new TlsInterceptor({ca, ...(upstreamCa ? {upstreamCa} : {})})};
  } catch (err) {
    log.error({err, dir}, 'the egress CA cannot be used: container tools whose profile grants secrets are left out');
    return {problem: 'the egress CA in the state directory cannot be used (see the server log); its secrets cannot be given to a container'};
  }
}

/**
 * Gives one container call its secrets: fresh placeholders for `names` (the profile's grant) as
 * `job.egress.secrets` (the proxy intercepts their hosts and refuses them elsewhere), and the
 * environment and read-only CA mounts of `containerSecretSetup` merged into the job (the
 * placeholders and trust variables override the package's own `env` of the same name; the
 * proxy variables are added by the backend after them). Returns the function that ends the
 * placeholders; call it when the call ends (idempotent).
 * Needs `job.egress` (a profile with secrets always has an egress grant: profile-schema.ts).
 * @throws ConfigError for a name the store does not declare (checked at load, so a programming error).
 */
export function giveContainerSecrets(job: ContainerJob, names: readonly string[], secrets: SecretStore, ca: EgressCa): () => void {
  if (job.egress === undefined || names.length === 0) return () => undefined;
  const call = secrets.forCall(names);
  job.egress.secrets = call;
  const setup = containerSecretSetup(ca, call);
  job.env = {...job.env, ...setup.env};
  job.mounts = [...job.mounts, ...setup.mounts];
  return () => call.close();
}
