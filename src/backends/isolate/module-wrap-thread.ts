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
  source: string;
  filename: string;
  resolve: (result: WrappedModule | WrapRefusal | NotWrapped) => void;
}

/**
 * One lazily started thread that runs `wrapToolModule` for the worker, jobs in order, one
 * posted at a time: a job's source is copied to the thread only when the thread is free, so
 * the thread holds one source (and its parse) at most, however many calls queue (16 queued
 * 15 MB sources could otherwise wait as about 250 MB of copies in the thread's message port).
 * Does NOT bound the time of a parse (V8 cannot be interrupted in it, and the parse ends by
 * itself, mostly in time linear in the source, about 0.2-0.5 s per MB here, but pairwise in
 * a regex's same-named capture groups: 14 000 of them took 0.5 s); a call waiting for it
 * is ended by its backstop or a cancel, the parse going on. Does NOT bound the queue's
 * length: the worker already holds each queued source (its source cache), this adds none.
 */
class WrapThread {
  #thread: Worker | undefined;
  /** The job on the thread, if any. */
  #running: Job | undefined;
  readonly #queue: Job[] = [];

  /** The rewrite of `source`; a refusal (syntax, imports); `{unwrapped: true}` when its parse went over `THREAD_WRAP_BUDGET` or the thread ended. */
  wrap(source: string, filename: string): Promise<WrappedModule | WrapRefusal | NotWrapped> {
    return new Promise((resolve) => {
      this.#queue.push({source, filename, resolve});
      this.#next();
    });
  }

  /** Posts the next queued job when none runs. */
  #next(): void {
    if (this.#running !== undefined) return;
    const job = this.#queue.shift();
    if (job === undefined) {
      this.#thread?.unref();
      return;
    }
    const thread = this.#thread ?? this.#start();
    this.#running = job;
    thread.ref();
    thread.postMessage({source: job.source, filename: job.filename});
  }

  #start(): Worker {
    const thread = new Worker(THREAD_PATH, {resourceLimits: {maxOldGenerationSizeMb: THREAD_HEAP_MB}});
    thread.unref();
    thread.on('message', (message: {result: WrappedModule | WrapRefusal}) => {
      const job = this.#running;
      this.#running = undefined;
      job?.resolve(message.result);
      this.#next();
    });
    const fail = (): void => {
      if (this.#thread !== thread) return;
      this.#thread = undefined;
      // The job it was parsing runs unwrapped (as documented); the queued ones go to a new thread.
      const job = this.#running;
      this.#running = undefined;
      job?.resolve({unwrapped: true});
      this.#next();
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
  port.on('message', (message: {source: string; filename: string}) => {
    port.postMessage({result: wrapToolModule(message.source, message.filename, THREAD_WRAP_BUDGET)});
  });
}
