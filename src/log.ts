// The debug log: pino to stderr (on stdio, stdout is the protocol).
import {pino, type Logger} from 'pino';

/**
 * The debug log: pino, JSON lines, to **stderr only** (fd 2). On stdio, stdout is the MCP
 * protocol and nothing else may be written there (MCP spec, Transports §stdio).
 * Level from `TOOLCELL_LOG_LEVEL` (default `info`). Credentials are redacted by path
 * (pino docs/redaction.md); untrusted data goes under namespaced keys, never spread.
 */
export const log: Logger = pino(
  {
    name: 'toolcell',
    level: process.env.TOOLCELL_LOG_LEVEL ?? 'info',
    redact: {
      paths: ['headers.authorization', 'req.headers.authorization', 'req.headers.cookie', '*.token', '*.apiKey', 'input.env'],
      censor: '[redacted]',
    },
  },
  pino.destination({fd: 2, sync: false}),
);

export type {Logger};
