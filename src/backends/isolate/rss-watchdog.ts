// The isolate worker's hard memory ceiling: watches its resident set size and reports when it is over.
import {readProcFile} from './proc-file.ts';

/**
 * Resident set size of process `pid`, in bytes, from `/proc/<pid>/status` (`VmRSS`,
 * which the kernel reports in kB; proc(5)). Undefined when it cannot be read: the
 * process is gone, or the OS has no procfs (e.g. macOS).
 */
export function readRssBytes(pid: number): number | undefined {
  const status = readProcFile(pid, 'status');
  if (status === undefined) return undefined;
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  return match?.[1] === undefined ? undefined : Number(match[1]) * 1024;
}

/** Options of `watchRss`. */
export interface RssWatchOptions {
  /** RSS above which `onExceeded` is called, in bytes. */
  ceilingBytes: number;
  /** Poll interval in ms (e.g. 50). */
  intervalMs: number;
  /** Called once, with the RSS seen in bytes; the watch stops after it. */
  onExceeded: (rssBytes: number) => void;
}

/**
 * Polls the RSS of `pid` and calls `onExceeded` once it is above the ceiling. The timer
 * is unref'd. Returns a function that stops the watch.
 *
 * Does NOT guarantee: that RSS never exceeds the ceiling. Memory allocated between two
 * polls counts only at the next poll (a process can allocate hundreds of MB in 50 ms);
 * size the ceiling with that headroom below the machine's memory. Without procfs the
 * watch does nothing (`readRssBytes` returns undefined).
 */
export function watchRss(pid: number, options: RssWatchOptions): () => void {
  const timer = setInterval(() => {
    const rss = readRssBytes(pid);
    if (rss !== undefined && rss > options.ceilingBytes) {
      clearInterval(timer);
      options.onExceeded(rss);
    }
  }, options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
