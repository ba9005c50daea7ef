// The last net under secrets: what a call with granted secrets hands back to the client (result, error text, relayed progress and log notifications) has each real value replaced by the call's placeholder.
import type {BackendEvent, ExecutionResult, Job} from '../backends/backend.ts';

/** Replaces real secret values by placeholders in what a call hands to the client. */
export interface OutputScrubber {
  /** `execution` with `stdout`, `stderr` and `error.message` scrubbed (a new object; the input is not changed). */
  execution(execution: ExecutionResult): ExecutionResult;
  /** A relayed notification of a hosted server, scrubbed (progress `message`, log `data` and `logger`). */
  event(event: BackendEvent): BackendEvent;
}

/**
 * The scrubber of a container or hosted-server job whose sandbox was given secrets
 * (`job.egress.secrets`, `job.sandbox.egress.secrets`: egress/container-secrets.ts), or undefined
 * for any other job. Each real value of the call's secrets, as it is or JSON-escaped, becomes
 * that call's placeholder (`CallSecrets.outputScrubber`; the proxy already scrubs the responses
 * the sandbox receives: this catches a value the sandbox reassembled, e.g. one an upstream sent
 * encoded).
 * A hosted server's `stdout` is the JSON text of its result (server-backend.ts): it is scrubbed
 * as JSON (parsed, every string and key scrubbed, serialized again: a value is found whatever
 * escapes its JSON text has, and no escape is cut apart); other `stdout` is scrubbed as text.
 * Cost: one parse and serialization of a hosted server's result, for calls with secrets only.
 * Pure apart from the scrubber it builds.
 * Does NOT guarantee: that a value the sandbox sends transformed (encoded, split, reversed) is
 * found; the log has its own net (log.ts `registerLogSecrets`).
 */
export function outputScrubber(job: Job): OutputScrubber | undefined {
  const secrets = job.kind === 'container' ? job.egress?.secrets : job.kind === 'server' ? job.sandbox.egress?.secrets : undefined;
  const text = secrets?.outputScrubber?.();
  if (text === undefined) return undefined;
  const json = (s: string): string => {
    if (s === '') return s;
    try {
      return JSON.stringify(deep(JSON.parse(s) as unknown, text));
    } catch {
      return text(s);
    }
  };
  return {
    execution: (e) => ({
      ...e,
      stdout: job.kind === 'server' ? json(e.stdout) : text(e.stdout),
      stderr: text(e.stderr),
      ...(e.error ? {error: {name: text(e.error.name), message: text(e.error.message)}} : {}),
    }),
    event: (e) => e.type === 'progress'
      ? {...e, ...(e.message === undefined ? {} : {message: text(e.message)})}
      : {...e, ...(e.logger === undefined ? {} : {logger: text(e.logger)}), data: deep(e.data, text)},
  };
}

/** `value` with every string (and object key) passed through `scrub`; depth is bounded by what the backend accepted (MAX_RESULT_DEPTH). */
function deep(value: unknown, scrub: (s: string) => string): unknown {
  if (typeof value === 'string') return scrub(value);
  if (Array.isArray(value)) return value.map((v) => deep(v, scrub));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[scrub(k)] = deep(v, scrub);
    return out;
  }
  return value;
}
