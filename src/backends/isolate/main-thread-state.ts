// Whether a worker process's main thread is waiting for a CPU (starved) rather than stopped or blocked, from procfs.
import {readProcFile} from './proc-file.ts';

/**
 * True when the main thread of process `pid` is runnable: state `R` in `/proc/<pid>/stat`
 * (the thread-group leader's state; proc(5), field 3, read after the last `)` since the
 * command name may contain spaces and parentheses). A worker that did not answer a ping
 * but is runnable is waiting for a CPU on an overloaded host (or spinning), not frozen:
 * a stopped process is `T`, one blocked on a lock `S` or `D`. Undefined when it cannot be
 * read (the process is gone, or the OS has no procfs, e.g. macOS).
 *
 * Does NOT tell a starved thread from one that spins for ever in native code; callers
 * bound how long they believe it (see `WorkerProcess`, MAX_LATE_PROBES).
 */
export function isMainThreadRunnable(pid: number): boolean | undefined {
  const stat = readProcFile(pid, 'stat');
  if (stat === undefined) return undefined;
  const end = stat.lastIndexOf(')');
  if (end < 0) return undefined;
  const state = stat.slice(end + 2, end + 3);
  return state === '' ? undefined : state === 'R';
}
