// Rewrites large tool modules (wrapToolModule) on a thread of its own, so the isolate worker's main thread stays free for other calls.
import {fileURLToPath} from 'node:url';
import {isMainThread, parentPort, Worker} from 'node:worker_threads';
import {THREAD_WRAP_BUDGET, wrapToolModule, type NotWrapped, type WrapRefusal, type WrappedModule} from './module-wrap.ts';

/** This file, run as the thread's entry (`.ts` from src/, `.js` from dist/). */
const THREAD_PATH = fileURLToPath(import.meta.url);

/**
 * Heap of the rewrite thread, in MB: the parse keeps the tree of one top-level statement
 * at a time (module-wrap.ts), and stops at `THREAD_WRAP_BUDGET`, well below this heap (the
 * module then runs unwrapped, as before the rewrite). The limit is a second line only:
 * Node ends a thread at its heap limit on a best-effort basis, and an allocation of the
 * wrong shape there aborts the whole worker process instead (nodejs/node#47224).
 */
const THREAD_HEAP_MB = 256;

interface Job {
  resolve: (result: WrappedModule | WrapRefusal | NotWrapped) => void;
}

/**
 * One lazily started thread that runs `wrapToolModule` for the worker, jobs in order.
 * Does NOT bound the time of a parse (V8 cannot be interrupted in it, and the parse ends by
 * itself in time linear in the source: about 0.2-0.5 s per MB here); a call waiting for it
 * is ended by its backstop or a cancel, the parse going on.
 */
class WrapThread {
  #thread: Worker | undefined;
  readonly #jobs = new Map<number, Job>();
  #next = 0;

  /** The rewrite of `source`; a refusal (syntax, imports); `{unwrapped: true}` when its parse went over `THREAD_WRAP_BUDGET` or the thread ended. */
  wrap(source: string, filename: string): Promise<WrappedModule | WrapRefusal | NotWrapped> {
    const thread = this.#thread ?? this.#start();
    const id = this.#next++;
    return new Promise((resolve) => {
      this.#jobs.set(id, {resolve});
      thread.ref();
      thread.postMessage({id, source, filename});
    });
  }

  #start(): Worker {
    const thread = new Worker(THREAD_PATH, {resourceLimits: {maxOldGenerationSizeMb: THREAD_HEAP_MB}});
    thread.unref();
    thread.on('message', (message: {id: number; result: WrappedModule | WrapRefusal}) => {
      const job = this.#jobs.get(message.id);
      this.#jobs.delete(message.id);
      if (this.#jobs.size === 0) thread.unref();
      job?.resolve(message.result);
    });
    const fail = (): void => {
      if (this.#thread === thread) this.#thread = undefined;
      const jobs = [...this.#jobs.values()];
      this.#jobs.clear();
      for (const job of jobs) {
        job.resolve({unwrapped: true});
      }
    };
    thread.on('error', fail);
    thread.on('exit', fail);
    this.#thread = thread;
    return thread;
  }
}

/** The worker process's rewrite thread. */
export const wrapThread = new WrapThread();

if (!isMainThread && parentPort) {
  const port = parentPort;
  port.on('message', (message: {id: number; source: string; filename: string}) => {
    port.postMessage({id: message.id, result: wrapToolModule(message.source, message.filename, THREAD_WRAP_BUDGET)});
  });
}
