// The profile format as a strict zod schema, and its generated JSON Schema.
import * as z from 'zod';
import {EgressGrantSchema} from '../egress/policy.ts';
import {SECRET_NAME} from '../egress/secrets.ts';

/**
 * The profile format (ARCHITECTURE.md, "Profile"): a least-privilege set of grants and
 * limits, one JSON file per profile, validated strictly. Unknown keys and fields that do
 * not belong to the profile's backend are errors; absent grants are denied; there is no
 * inheritance. The JSON Schema shipped as `profiles/profile.schema.json` is generated from
 * this zod schema (`npm run schema`), so the two never drift.
 */

const MB = 'MB (2^20 bytes)';

/** Profile names are kebab-case and equal the file name without `.json`. */
export const PROFILE_NAME = /^[a-z][a-z0-9-]*$/;

const Common = {
  $schema: z.string().optional().describe('Path or URL of profile.schema.json, for editors.'),
  name: z.string().regex(PROFILE_NAME, 'must be kebab-case: a lower-case letter, then a-z, 0-9 or -'),
  description: z.string().max(500).optional(),
};

const timeoutMs = z.number().int().min(1).max(300_000)
  .describe('Wall-clock limit of one call in ms (1 to 300000).');
const outputBytes = z.number().int().min(1).max(16 * 2 ** 20)
  .describe('Cap on the result and on the captured console/stderr, each, in bytes (at most 16 MiB). Over it: OUTPUT_LIMIT.');

/** Limits of an isolate profile. */
export const IsolateLimits = z.strictObject({
  timeoutMs,
  cpuTimeMs: z.number().int().min(1).max(300_000).optional()
    .describe('CPU time of one call in ms; defaults to timeoutMs.'),
  memoryMb: z.number().int().min(8).max(2048)
    .describe(`V8 heap limit of the isolate in ${MB} (isolated-vm memoryLimit: a guideline, not a hard cap).`),
  outputBytes,
});

/** Limits of a container profile. */
export const ContainerLimits = z.strictObject({
  timeoutMs,
  memoryMb: z.number().int().min(6).max(16_384)
    .describe(`Memory of the container in ${MB}; swap is set equal, so no swap is granted.`),
  cpus: z.number().min(0.01).max(64).describe('CPU quota in cores, e.g. 0.5.'),
  pids: z.number().int().min(1).max(4096).describe('Maximum processes and threads in the container.'),
  outputBytes,
});

/** A host directory granted to containers. The source must lie under an operator-configured mount root. */
export const MountGrant = z.strictObject({
  source: z.string().min(1)
    .describe('Host path, absolute, or "${workspace}" / "${workspace}/sub" for the directory given to serve --workspace.'),
  target: z.string().regex(/^\/[^\0]*$/, 'must be an absolute path inside the container'),
  readOnly: z.boolean().default(true).describe('Read-only unless explicitly set to false.'),
});

/** Filesystem grants of a container profile. */
export const FilesystemGrant = z.strictObject({
  readOnlyRoot: z.boolean().default(true).describe('Root filesystem read-only (default true).'),
  tmpfs: z.record(z.string().regex(/^\/[A-Za-z0-9._/-]*$/, 'must be an absolute path'),
    z.string().regex(/^[1-9][0-9]*[kmg]$/, 'must be a size such as 64m'))
    .default({}).describe('Writable in-memory mounts: container path → size (k, m or g). Mounted noexec,nosuid,nodev.'),
  mounts: z.array(MountGrant).max(16).default([]),
});

/** A command allowlist entry: a bare program name (resolved in the image at load time) or an absolute path. */
const CommandName = z.string().regex(/^(\/[A-Za-z0-9._+/-]+|[A-Za-z0-9._+-]+)$/,
  'must be a program name such as "grep" or an absolute path such as "/usr/bin/grep"');

/**
 * The network grant: `"none"` (the default: no interface but loopback, no fetch) or
 * `{"egress": EgressGrant}`: only the allowlisted host:port, through toolcell's egress proxy
 * (containers) or the host-performed `fetch` (isolates), under the grant's per-call limits.
 */
export const NetworkGrant = z.union([
  z.literal('none'),
  z.strictObject({egress: EgressGrantSchema}),
], {error: 'expected "none" or {"egress": {"allow": [...], ...}}'}).describe('"none" (default), or {"egress": {"allow": [...], "maxRequests", "maxBytesOut", "maxBytesIn", "requestTimeoutMs"}}.');

/**
 * Secrets a profile grants, by name (declared by the operator's `serve --secrets FILE`; an
 * undeclared name is a load error). The sandbox sees only a per-call placeholder; the value is
 * put in at the egress boundary, toward the secret's own hosts (egress/secrets.ts).
 */
const SecretGrants = z.array(z.string().regex(SECRET_NAME, 'secret names are upper case: A-Z, then A-Z, 0-9 or _ (at most 64)')).max(32)
  .describe('Secret names granted (the operator declares them with serve --secrets FILE); needs an egress grant.');

/** A profile's network grant (see `NetworkGrant`). */
export type NetworkGrant = z.infer<typeof NetworkGrant>;

export const IsolateProfile = z.strictObject({
  ...Common,
  backend: z.literal('isolate'),
  limits: IsolateLimits,
  network: NetworkGrant.default('none'),
  secrets: SecretGrants.optional(),
}).refine((p) => !p.secrets?.length || p.network !== 'none', {path: ['secrets'], message: 'secrets need an egress grant ("network": {"egress": {...}}): a secret is only ever sent to its hosts over the network'});

export const ContainerProfile = z.strictObject({
  ...Common,
  backend: z.literal('container'),
  limits: ContainerLimits,
  network: NetworkGrant.default('none'),
  filesystem: FilesystemGrant.default({readOnlyRoot: true, tmpfs: {}, mounts: []}),
  commands: z.array(CommandName).min(1).describe('Allowlist for argv[0]; nothing else may run as the tool command.'),
  runtime: z.enum(['runc', 'runsc']).default('runc').describe('OCI runtime; runsc is gVisor. Never silently downgraded.'),
  secrets: SecretGrants.optional(),
}).refine((p) => !p.secrets?.length || p.network !== 'none', {path: ['secrets'], message: 'secrets need an egress grant ("network": {"egress": {...}}): a secret is only ever sent to its hosts over the network'});

/** A profile: isolate or container, discriminated by `backend`. */
export const Profile = z.discriminatedUnion('backend', [IsolateProfile, ContainerProfile]);

export type IsolateProfile = z.infer<typeof IsolateProfile>;
export type ContainerProfile = z.infer<typeof ContainerProfile>;
export type Profile = z.infer<typeof Profile>;

/** JSON Schema (draft 2020-12) of a profile file, generated from the zod schema. */
export function profileJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(Profile, {target: 'draft-2020-12', io: 'input'}),
    $id: 'https://toolcell.dev/schemas/profile.schema.json',
    title: 'toolcell profile',
  };
}
