// Whether a process (by pid) still exists, for tests that wait for a worker or server to be gone.

/**
 * True when signal 0 can be sent to `pid` (kill(2) with sig 0: existence and permission
 * check, nothing delivered). Does NOT tell apart a zombie (exited, not yet reaped by its
 * parent; counted alive) or a pid the kernel has since given to another process of ours.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
