/**
 * Engine errors → what toolcell says: classifying docker-modem errors (unreachable, no such
 * container) and turning them into ToolcellErrors that never carry host details to the client.
 */
import {ToolcellError} from '../../errors.ts';

/** The fields docker-modem puts on the errors it raises (HTTP status, JSON body, socket error code). */
export interface DockerError extends Error {
  statusCode?: number;
  json?: {message?: string} | null;
  code?: string;
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'EPERM', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND']);

/** The engine's own message of a docker-modem error (`json.message`), or the error message. */
export function dockerMessage(err: unknown): string {
  const e = err as DockerError;
  return String(e?.json?.message ?? e?.message ?? err);
}

/** True when `err` means the engine could not be reached at all (socket missing, refused, no permission). */
export function isUnreachable(err: unknown): boolean {
  const code = (err as DockerError)?.code;
  return typeof code === 'string' && UNREACHABLE_CODES.has(code);
}

/** True when the engine answered 404 for a container (already gone), or 409 because its removal is already in progress. */
export function isNoSuchContainer(err: unknown): boolean {
  const e = err as DockerError;
  return e?.statusCode === 404 || /no such container|removal of container .* is already in progress/i.test(dockerMessage(err));
}

/** True when the engine answered 409 because the container's removal is already in progress: it still exists (and may still run). */
export function isRemovalInProgress(err: unknown): boolean {
  return /removal of container .* is already in progress/i.test(dockerMessage(err));
}

/** The `toolcell images build` name of a toolcell image reference, e.g. `toolcell/python:latest` → `python`. */
function buildHint(image: string): string {
  const m = /^toolcell\/([a-z0-9-]+)(:latest)?$/.exec(image);
  return m ? ` Build it with \`toolcell images build ${m[1]}\`.` : '';
}

/** What failed, in the model-facing message: attaching to a created container is not starting it. */
const PHASE_VERB = {create: 'created', attach: 'attached to', start: 'started'} as const;

/**
 * Maps an engine error raised while creating or starting a container to the model-facing
 * `ToolcellError('BACKEND_UNAVAILABLE')`. The message names the image or the runtime, never a
 * host path; the engine's own text stays in `cause` for the log.
 */
export function toBackendError(err: unknown, context: {image: string; runtime: string; phase: 'create' | 'attach' | 'start'}): ToolcellError {
  if (err instanceof ToolcellError) return err;
  const message = dockerMessage(err);
  const status = (err as DockerError)?.statusCode;
  if (isUnreachable(err)) {
    return new ToolcellError('BACKEND_UNAVAILABLE', 'The Docker engine is unreachable, so container tools cannot run on this host now.', {reason: 'engine-unreachable'}, {cause: err});
  }
  if (/unknown runtime/i.test(message)) {
    return new ToolcellError('BACKEND_UNAVAILABLE', `The Docker engine has no "${context.runtime}" runtime; this tool's profile requires it and is not run under another runtime.`, {reason: 'runtime-missing', runtime: context.runtime}, {cause: err});
  }
  if (context.phase === 'create' && (status === 404 || /no such image/i.test(message))) {
    return new ToolcellError('BACKEND_UNAVAILABLE', `The container image "${context.image}" is not present on this host.${buildHint(context.image)}`, {reason: 'image-missing', image: context.image}, {cause: err});
  }
  return new ToolcellError('BACKEND_UNAVAILABLE', `The sandbox container could not be ${PHASE_VERB[context.phase]} (runtime ${context.runtime}).`, {reason: `container-${context.phase}-failed`, runtime: context.runtime}, {cause: err});
}
