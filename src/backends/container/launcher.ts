/**
 * The warm-pool launcher: the fixed script a pool member runs before its call, how a call's
 * argv and per-call token are given to it, and the exit report it writes; nothing here knows
 * about the pool's bookkeeping (pool.ts) or the engine.
 *
 * Why the token stays out of the tool's reach (issue 11 item 3). The launcher and the tool run
 * as the same uid, so anything the launcher holds would be readable by the tool through
 * `/proc/<ppid>/mem`, `environ`, `fd/` or ptrace, unless the launcher is *non-dumpable*: a
 * process that execs a binary it may execute but not read is made non-dumpable by the kernel
 * (fs/exec.c `would_dump`, dumpable = `suid_dumpable`, 0 by default), and ptrace_may_access
 * (kernel/ptrace.c) then refuses those accesses to processes without CAP_SYS_PTRACE; its /proc
 * files also become root-owned. So the launcher is a static busybox installed by the images in
 * `sandboxes/` at {@link LAUNCHER_PATH}, root-owned, mode 0111. The script checks this at start
 * (its own `/proc/$$/mem` must not be readable to it, which holds exactly when it is
 * non-dumpable to its uid) and refuses to signal readiness otherwise, so an image without the
 * launcher, or with a readable one, never gets a warm call. Its variables carry the reserved
 * prefix {@link RESERVED_ENV_PREFIX}, which no package env may use (the manifest schema refuses
 * it; a job that names it anyway runs cold, see {@link launcherFits}), and are unset first, so
 * none of them is ever exported into the tool's environment.
 * Does NOT hold under gVisor: runsc's sentry refuses to exec a file it cannot read ("exec
 * /opt/toolcell/sh failed: Permission denied"), so runsc jobs never use the pool.
 */
import {randomBytes} from 'node:crypto';
import type {ContainerJob} from '../backend.ts';
import {FrameParser, STDERR_STREAM} from './output.ts';
import type {Sandbox} from './sandbox.ts';

/** Where the images in `sandboxes/` install the launcher (static busybox, root:root, mode 0111). */
export const LAUNCHER_PATH = '/opt/toolcell/sh';
/** Prefix of the launcher's shell variables; package env names may not start with it. */
export const RESERVED_ENV_PREFIX = 'TOOLCELL_LAUNCHER_';
/** The launcher's variables: token, argument count, current argument, exit status. */
const T = `${RESERVED_ENV_PREFIX}T`;
const N = `${RESERVED_ENV_PREFIX}N`;
const A = `${RESERVED_ENV_PREFIX}A`;
const C = `${RESERVED_ENV_PREFIX}C`;
/**
 * Variables busybox ash itself exports into its children's environment (`SHLVL`, and `PWD`,
 * `OLDPWD` after a cd); unset before the tool starts so its environment is exactly a cold
 * container's. A job whose env names one of them runs cold instead ({@link launcherFits}):
 * ash rewrites their values at start, so they could not be passed through unchanged.
 */
const SHELL_EXPORTS = ['PWD', 'OLDPWD', 'SHLVL'] as const;

/** The byte the launcher writes to stderr once it runs and waits for its input (a readiness signal, consumed by the pool). */
export const READY_BYTE = 'R';
/** How long a new member may take to signal readiness, in ms. */
const READY_TIMEOUT_MS = 15_000;

/**
 * Waits for the launcher's readiness frame on the attach socket: stderr, length 1, READY_BYTE.
 * Bytes after it (none expected: the launcher then blocks on stdin) are put back.
 * @throws Error when the first frame is anything else (e.g. init could not exec the launcher,
 *   or its self-check failed), the socket ends, or it takes longer than READY_TIMEOUT_MS.
 */
export function awaitReady(socket: Sandbox['socket']): Promise<void> {
  return new Promise((resolve, reject) => {
    let verdict: Error | null | undefined; // null: ready
    const frames = new FrameParser((stream, part, frameBytes) => {
      const ok = stream === STDERR_STREAM && frameBytes === 1 && part.toString('latin1') === READY_BYTE;
      verdict = ok ? null : new Error(`launcher did not start: ${part.subarray(0, 200).toString('utf8')}`);
      return true; // only the first frame matters
    });
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
      if (err) reject(err);
      else resolve();
    };
    const onData = (chunk: Buffer) => {
      const used = frames.push(chunk);
      if (verdict === undefined) return;
      // Stop listening first: unshift() would otherwise hand the same bytes to this handler again.
      done(verdict ?? undefined);
      if (verdict === null && used < chunk.length) socket.unshift(chunk.subarray(used));
    };
    const onEnd = () => done(new Error('launcher exited before it was ready'));
    const timer = setTimeout(() => done(new Error('launcher was not ready in time')), READY_TIMEOUT_MS);
    socket.on('data', onData);
    socket.once('end', onEnd);
  });
}

/** Bytes of the per-call token the launcher is given (as 2 hex digits each). */
const TOKEN_BYTES = 16;
/** A token of the real length, for sizing a launch header. */
export const SIZING_TOKEN = '0'.repeat(TOKEN_BYTES * 2);
/** Record separator (0x1e): brackets an exit report. */
const RS = '\x1e';
/** Longest exit report on one stream, in bytes (stderr: RS toolcell: token : code RS). */
export const EXIT_REPORT_MAX_BYTES = 64;

/** A new random per-call token for the launcher's exit report (hex). */
export function newLaunchToken(): string {
  return randomBytes(TOKEN_BYTES).toString('hex');
}

/**
 * The exit report the launcher writes once its child (the tool) has exited: `stdout` is
 * appended to the container's stdout, and `stderrPrefix` + the exit status (decimal) + RS to
 * its stderr. Each pipe is a FIFO, so a report arrives after everything the tool wrote to that
 * stream before it exited.
 *
 * The token is out of the tool's reach only until the launcher writes it: the report goes
 * into the stdout/stderr pipes the tool also holds, and a tool can open a second read end of
 * them (`/proc/self/fd/1`), read the token as it passes, stop its launcher (same uid: signals)
 * and write a report of its own (shown by the red team of issue 11). So the backend uses the
 * report only to keep these bytes out of the tool's output, never as the call's status: the
 * status is the engine's, the exit status of the container's init, which exits with its child,
 * the launcher, which exits with the tool's real status.
 */
export function exitMarkers(token: string): {stdout: Buffer; stderrPrefix: Buffer} {
  return {stdout: Buffer.from(`${RS}toolcell:${token}${RS}`, 'latin1'), stderrPrefix: Buffer.from(`${RS}toolcell:${token}:`, 'latin1')};
}

/**
 * The launcher script (busybox ash): checks that it is non-dumpable, signals readiness on
 * stderr, reads the token line, the argc line, then one escaped line per argument, runs them as
 * its child (argv[0] must be an absolute path: busybox runs a bare name that is also one of its
 * applets in-process, not the image's program), then writes the exit report (see
 * {@link exitMarkers}) to stdout and stderr and exits with the child's status.
 */
export function launcherScript(): string {
  return [
    `unset ${T} ${N} ${A} ${C}`,
    // Non-dumpable processes' /proc files are root-owned: readable to us only if we are dumpable.
    'if [ -r /proc/$$/mem ]; then echo "launcher is dumpable: install it mode 0111 root:root" >&2; exit 125; fi',
    `printf ${READY_BYTE} >&2`,
    `IFS= read -r ${T} || exit 126`,
    `case $${T} in ""|*[!0-9a-f]*) exit 126;; esac`,
    `IFS= read -r ${N} || exit 126`,
    `case $${N} in ""|*[!0-9]*) exit 126;; esac`,
    'set --',
    `while [ "$${N}" -gt 0 ]; do`,
    `  IFS= read -r ${A} || exit 126`,
    `  ${A}=$(printf '%bx' "$${A}")`,
    `  set -- "$@" "\${${A}%x}"`,
    `  ${N}=$((${N}-1))`,
    'done',
    `unset ${N} ${A} ${SHELL_EXPORTS.join(' ')}`,
    'case $1 in /*) ;; *) exit 126;; esac',
    '"$@"',
    `${C}=$?`,
    `printf '\\036toolcell:%s\\036' "$${T}"`,
    `printf '\\036toolcell:%s:%s\\036' "$${T}" "$${C}" >&2`,
    `exit "$${C}"`,
  ].join('\n');
}

/** Command of a warm-pool member (`/opt/toolcell/sh -c LAUNCHER toolcell-launcher`); the same for every job. */
export function launcherArgv(): string[] {
  return [LAUNCHER_PATH, '-c', launcherScript(), 'toolcell-launcher'];
}

/**
 * Whether a job can run under the launcher exactly as it would run cold: runc (see the file
 * comment for runsc), an absolute argv[0], no env name the shell rewrites, and a header of at
 * most `maxHeaderBytes` (busybox reads it byte by byte).
 */
export function launcherFits(job: ContainerJob, maxHeaderBytes: number): boolean {
  if (job.runtime !== 'runc') return false;
  if (!job.argv[0]?.startsWith('/')) return false;
  if (SHELL_EXPORTS.some((v) => Object.hasOwn(job.env ?? {}, v))) return false;
  if (Object.keys(job.env ?? {}).some((k) => k.startsWith(RESERVED_ENV_PREFIX))) return false;
  return encodeLaunch(SIZING_TOKEN, job.argv).length <= maxHeaderBytes;
}

/** Escapes one argv element for the launcher: `\` → `\\`, newline → `\n` (decoded by `printf %b`). */
export function escapeArg(arg: string): string {
  return arg.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
}

/** The bytes a launcher reads: `token\n`, `argc\n`, one escaped line per argument, then `stdin` verbatim. */
export function encodeLaunch(token: string, argv: readonly string[], stdin?: string): Buffer {
  const header = `${token}\n${argv.length}\n${argv.map((a) => `${escapeArg(a)}\n`).join('')}`;
  return stdin === undefined ? Buffer.from(header, 'utf8') : Buffer.concat([Buffer.from(header, 'utf8'), Buffer.from(stdin, 'utf8')]);
}
