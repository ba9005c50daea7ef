// The debug log: pino to stderr (on stdio, stdout is the protocol), as JSON lines or one human-readable line per entry.
import {pino, type Logger} from 'pino';
import {escapeForTerminal} from './terminal-text.ts';

/** The levels `TOOLCELL_LOG_LEVEL` accepts (pino's, docs/api.md "level"), most severe first. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** The formats `--log-format` accepts: `json` (one JSON object per line) or `pretty` (one text line per entry). */
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * Why a `TOOLCELL_LOG_LEVEL` value cannot be used, or undefined when it can (unset or empty
 * means `info`). The CLI turns a problem into a usage error (exit 2).
 */
export function logLevelProblem(value: string | undefined = process.env.TOOLCELL_LOG_LEVEL): string | undefined {
  if (value === undefined || value === '' || (LOG_LEVELS as readonly string[]).includes(value)) return undefined;
  return `TOOLCELL_LOG_LEVEL=${JSON.stringify(value)} is not a log level; allowed: ${LOG_LEVELS.join(', ')}`;
}

/**
 * The default format: `pretty` when stderr is a terminal (a person reads it), `json` otherwise
 * (a file, a pipe, a log collector).
 */
export const defaultLogFormat = (): LogFormat => (process.stderr.isTTY ? 'pretty' : 'json');

let format: LogFormat = defaultLogFormat();

/** Chooses the log format from now on (the CLI's `--log-format`). */
export function setLogFormat(value: LogFormat): void {
  format = value;
}

const LEVEL_NAMES: Record<number, string> = {10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL'};
/** Keys of a pino line that the pretty line shows in its own place, or not at all. */
const OWN_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg']);
function showValue(value: unknown): string {
  if (typeof value === 'string') return /^[\w./:@+-]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/**
 * One pino JSON line as one human-readable line: `HH:MM:SS.mmm LEVEL message key=value ...`
 * (UTC time), newline-terminated. An `err` shows its type and message (its stack stays in the
 * JSON format). Every character that could act on a terminal (escape sequences, newlines,
 * bidi overrides) in a message or value, which may come from a client or a tool, is written as
 * an escape, so one entry is always one line and cannot restyle or rewrite the operator's
 * terminal. A line that is not JSON is passed through escaped.
 */
export function prettyLine(jsonLine: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(jsonLine) as Record<string, unknown>;
  } catch {
    return `${escapeForTerminal(jsonLine.replace(/\n$/, ''))}\n`;
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString().slice(11, 23) : '';
  const level = (LEVEL_NAMES[entry.level as number] ?? String(entry.level)).padEnd(5);
  const fields: string[] = [];
  for (const [key, value] of Object.entries(entry)) {
    if (OWN_KEYS.has(key)) continue;
    if (key === 'err' && value !== null && typeof value === 'object') {
      const e = value as {type?: unknown; message?: unknown};
      fields.push(`err=${showValue(`${String(e.type ?? 'Error')}: ${String(e.message ?? '')}`)}`);
      continue;
    }
    fields.push(`${key}=${showValue(value)}`);
  }
  const text = [time, level, typeof entry.msg === 'string' ? entry.msg : '', ...fields].filter((s) => s !== '').join(' ');
  return `${escapeForTerminal(text)}\n`;
}

/** Operator secret values (serve --secrets), as they may appear in a JSON line: raw and JSON-escaped. */
const secretForms: string[] = [];

/**
 * Registers secret values that must never reach the log: every log line has each of them
 * replaced by `[secret]` before it is written (after pino's path redaction, as a net under it).
 * Values shorter than 8 characters are not registered (they would censor ordinary words).
 * Not guaranteed: a value that a log line carries transformed (encoded, split) is not found.
 */
export function registerLogSecrets(values: readonly string[]): void {
  for (const value of values) {
    if (value.length < 8) continue;
    for (const form of new Set([value, JSON.stringify(value).slice(1, -1)])) if (!secretForms.includes(form)) secretForms.push(form);
  }
}

function scrubSecrets(line: string): string {
  let out = line;
  for (const form of secretForms) if (out.includes(form)) out = out.split(form).join('[secret]');
  return out;
}

const destination = pino.destination({fd: 2, sync: false});
// pino flushes its own destination at exit only when it is handed one directly; this wrapper is not.
process.once('exit', () => {
  try {
    destination.flushSync();
  } catch {
    // Not ready or already closed: nothing left to write.
  }
});

/**
 * The debug log: pino, to **stderr only** (fd 2). On stdio, stdout is the MCP protocol and
 * nothing else may be written there (MCP spec, Transports §stdio).
 * Level from `TOOLCELL_LOG_LEVEL` (default `info`; an unknown value is `info` here and a usage
 * error in the CLI, see `logLevelProblem`). Format: `json` lines, or `pretty` lines
 * (`prettyLine`) when stderr is a terminal or `setLogFormat('pretty')` was called.
 * Credentials are redacted by path (pino docs/redaction.md) before either format sees them;
 * untrusted data goes under namespaced keys, never spread. Audit events are not log entries:
 * they go where `--audit-log` says (src/audit/audit-log.ts).
 */
export const log: Logger = pino(
  {
    name: 'toolcell',
    level: logLevelProblem() === undefined && process.env.TOOLCELL_LOG_LEVEL ? process.env.TOOLCELL_LOG_LEVEL : 'info',
    redact: {
      paths: ['headers.authorization', 'req.headers.authorization', 'req.headers.cookie', '*.token', '*.apiKey', 'input.env'],
      censor: '[redacted]',
    },
  },
  {write: (line: string) => destination.write(format === 'json' ? scrubSecrets(line) : prettyLine(scrubSecrets(line)))},
);

export type {Logger};
