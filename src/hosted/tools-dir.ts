// Where `toolcell add` writes hosted server packages when --tools is not given, and where serve, list and call look for them.
import {existsSync} from 'node:fs';
import {homedir} from 'node:os';
import {join} from 'node:path';

/**
 * The user's tools directory for hosted servers: `$TOOLCELL_TOOLS_DIR`, else
 * `$XDG_DATA_HOME/toolcell/tools`, else `~/.local/share/toolcell/tools` (XDG Base Directory
 * Specification: user-specific data). `add`/`update` write there without `--tools`; `serve`,
 * `list` and `call` without `--tools` read it beside the bundled tools when it exists.
 */
export function userToolsDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TOOLCELL_TOOLS_DIR) return env.TOOLCELL_TOOLS_DIR;
  return join(env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'toolcell', 'tools');
}

/** {@link userToolsDir} when that directory exists, else nothing: for the default tool directories. */
export function existingUserToolsDir(env: NodeJS.ProcessEnv = process.env): string[] {
  const dir = userToolsDir(env);
  return existsSync(dir) ? [dir] : [];
}
