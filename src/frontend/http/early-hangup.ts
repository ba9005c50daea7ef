/** SIGHUP held from the first line of `serve --http` until the service exists: a hangup during start-up is queued, never fatal. */

let installed = false;
let queued = false;
let deliver: (() => void) | undefined;

/**
 * Installs the process's SIGHUP handler (idempotent). Until `onHangup` names what a hangup does,
 * hangups are queued (several count as one: a reload reads the files as they are then); after
 * it, each is delivered. Node's default for SIGHUP is to exit (status 129), so `serve --http`
 * calls this from the entry (`cli.ts`) before loading anything slow.
 * Not guaranteed: a SIGHUP that arrives before this runs (while Node itself starts, a few tens
 * of ms) still ends the process.
 */
export function holdHangups(): void {
  if (installed) return;
  installed = true;
  process.on('SIGHUP', () => {
    if (deliver === undefined) queued = true;
    else deliver();
  });
}

/**
 * Makes `handler` what a SIGHUP does from now on, and runs it once at once if a hangup was
 * queued meanwhile. Installs the handler first when `holdHangups` was not called.
 * @returns a function that stops delivering (later hangups are queued again, never fatal)
 */
export function onHangup(handler: () => void): () => void {
  holdHangups();
  deliver = handler;
  if (queued) {
    queued = false;
    handler();
  }
  return () => {
    if (deliver === handler) deliver = undefined;
  };
}
