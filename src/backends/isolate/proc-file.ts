// Reads one file of a process's procfs directory, for the worker supervisor's checks.
import {readFileSync} from 'node:fs';

/**
 * The text of `/proc/<pid>/<name>` (proc(5)), or undefined when it cannot be read: the
 * process is gone, or the OS has no procfs (e.g. macOS). Reads the file whole, synchronously:
 * only for the small status files (`stat`, `status`), never a large one.
 */
export function readProcFile(pid: number, name: 'stat' | 'status'): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${name}`, 'utf8');
  } catch {
    return undefined;
  }
}
