// The last net under secrets: what a call with granted secrets hands back to the client (result, error text, relayed progress and log notifications) has each real value replaced by the call's placeholder.
import type {BackendEvent, ExecutionResult, Job} from '../backends/backend.ts';

/** Replaces real secret values by placeholders in what a call hands to the client. */
export interface OutputScrubber {
  /** `execution` with `stdout`, `stderr` and `error.message` scrubbed (a new object; the input is not changed). */
  execution(execution: ExecutionResult): ExecutionResult;
  /** A relayed notification of a hosted server, scrubbed (progress `message`, log `data` and `logger`). */
  event(event: BackendEvent): BackendEvent;
  /** `text` with each value, raw or JSON-escaped, replaced (the backend scrubs a notification's text with it before cutting it to its bound). */
  text(text: string): string;
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
 * Cost (calls with secrets only): one parse and serialization of a hosted server's result, then
 * one search of the whole serialized text per value (raw and escaped); only on a hit are the
 * strings walked one by one, so a result of a million tiny strings costs what its size does, not
 * its count times the number of secrets (a tool without the value cannot make it hit). The same
 * for the structured data of a log notification.
 * Keys such as `__proto__` are kept as own keys (never set as prototypes).
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
    let parsed: unknown;
    try {
      parsed = JSON.parse(s) as unknown;
    } catch {
      return text(s);
    }
    // Serialized again, every string and key is written with JSON's canonical escapes: a value in any of them appears in
    // this text as its escaped form (values are well-formed strings: they come from the environment). One search per value;
    // the walk only on a hit.
    const canonical = JSON.stringify(parsed);
    return text(canonical) === canonical ? canonical : JSON.stringify(deep(parsed, text));
  };
  const data = (value: unknown): unknown => {
    if (typeof value === 'string') return text(value);
    try {
      const serialized = JSON.stringify(value);
      if (serialized === undefined || text(serialized) === serialized) return value;
    } catch {
      // Not serializable (the backend relays text; this guards the rest): walked.
    }
    return deep(value, text);
  };
  return {
    text,
    execution: (e) => ({
      ...e,
      stdout: job.kind === 'server' ? json(e.stdout) : text(e.stdout),
      stderr: text(e.stderr),
      ...(e.error ? {error: {name: text(e.error.name), message: text(e.error.message)}} : {}),
    }),
    event: (e) => e.type === 'progress'
      ? {...e, ...(e.message === undefined ? {} : {message: text(e.message)})}
      : {...e, ...(e.logger === undefined ? {} : {logger: text(e.logger)}), data: data(e.data)},
  };
}

/**
 * `value` with every string (and object key) passed through `scrub`; depth is bounded by what the
 * backend accepted (MAX_RESULT_DEPTH). Keys are defined as own properties, so `__proto__` stays a
 * key (an assignment would set the prototype and lose it).
 */
function deep(value: unknown, scrub: (s: string) => string): unknown {
  if (typeof value === 'string') return scrub(value);
  if (Array.isArray(value)) return value.map((v) => deep(v, scrub));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) Object.defineProperty(out, scrub(k), {value: deep(v, scrub), enumerable: true, writable: true, configurable: true});
    return out;
  }
  return value;
}
