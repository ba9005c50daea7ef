/**
 * The one error class of toolcell. Every failure that reaches a client carries one of
 * these codes (ARCHITECTURE.md, "Tool results and errors"); the message is written for
 * the model that reads it: what was refused or went wrong, and what is allowed.
 * Internal details (host paths, stacks, secrets) never go into `message` or `data`;
 * they go into the log, under the `cause`.
 */
export type ErrorCode =
  | 'TIMEOUT'
  | 'MEMORY_LIMIT'
  | 'OUTPUT_LIMIT'
  | 'PIDS_LIMIT'
  | 'DENIED'
  | 'INVALID_ARGUMENTS'
  | 'RATE_LIMITED'
  | 'BUSY'
  | 'TOOL_FAILED'
  | 'CANCELLED'
  | 'BACKEND_UNAVAILABLE'
  | 'INTERNAL';

/**
 * A failure with a stable string `code`, a model-facing `message` and JSON `data` that is
 * safe to send to the client (e.g. `{profile, allowed}`); `options.cause` keeps the
 * internal error for the log only.
 */
export class ToolcellError extends Error {
  readonly code: ErrorCode;
  readonly data: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, data: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ToolcellError';
    this.code = code;
    this.data = data;
  }
}

/**
 * A configuration that cannot be loaded: a profile, a tool package or a CLI option.
 * `source` names the file (or option) and the message names the field and what is allowed.
 */
export class ConfigError extends Error {
  readonly source: string;
  constructor(source: string, message: string, options?: ErrorOptions) {
    super(`${source}: ${message}`, options);
    this.name = 'ConfigError';
    this.source = source;
  }
}
