/**
 * The deadline keeper process: a detached host process that removes containers at their
 * deadline even when the toolcell server that started them is gone (issue 11 item 4).
 *
 * Run by {@link DeadlineKeeper} (deadline-keeper.ts) as `node keeper.js`, in its own session
 * (detached), with stdin a pipe from the server and nothing else. Input: lines
 * `watch ID DEADLINE` (64-hex container id; deadline in ms since the epoch) and `release ID`.
 * At a watched container's deadline it force-removes it (Docker Engine API `DELETE
 * /containers/ID?force=1&v=1`), retrying a few times. When stdin ends (the server closed it, or
 * died: SIGKILL included), it keeps enforcing the deadlines it holds and exits once none is
 * left; it never outlives the last deadline by more than {@link LINGER_MS}. It talks only to
 * the engine the server used (`DOCKER_HOST` inherited) and only about ids the server gave it.
 * Does NOT survive a host reboot or a SIGKILL of its own (the server starts a new keeper for
 * later calls; the reaper removes leftovers at the next start-up).
 */
import Docker from 'dockerode';

/** Longest time the keeper stays after its last deadline once stdin has ended, in ms. */
const LINGER_MS = 60_000;
/** One removal attempt may take this long, in ms. */
const REMOVE_TIMEOUT_MS = 10_000;
const ID = /^[0-9a-f]{64}$/;

// The server's engine when it passed one (deadline-keeper.ts), else the environment's (DOCKER_HOST).
const docker = process.env.TOOLCELL_KEEPER_SOCKET
  ? new Docker({socketPath: process.env.TOOLCELL_KEEPER_SOCKET})
  : process.env.TOOLCELL_KEEPER_HOST
    ? new Docker({host: process.env.TOOLCELL_KEEPER_HOST, port: Number(process.env.TOOLCELL_KEEPER_PORT), protocol: 'http'})
    : new Docker();
const timers = new Map<string, NodeJS.Timeout>();
let ended = false;
/** The latest deadline ever watched, in ms since the epoch. */
let lastDeadline = 0;

async function remove(id: string): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await docker.getContainer(id).remove({force: true, v: true, abortSignal: AbortSignal.timeout(REMOVE_TIMEOUT_MS)} as Docker.ContainerRemoveOptions);
      return;
    } catch (err) {
      if ((err as {statusCode?: number}).statusCode === 404) return;
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

function maybeExit(): void {
  if (ended && timers.size === 0) process.exit(0);
}

function watch(id: string, deadline: number): void {
  clearTimeout(timers.get(id));
  lastDeadline = Math.max(lastDeadline, deadline);
  const delay = Math.max(0, Math.min(deadline - Date.now(), 2 ** 31 - 1));
  timers.set(id, setTimeout(() => {
    void remove(id).finally(() => {
      timers.delete(id);
      maybeExit();
    });
  }, delay));
}

function release(id: string): void {
  clearTimeout(timers.get(id));
  timers.delete(id);
  maybeExit();
}

let rest = '';
process.stdin.on('data', (chunk: Buffer) => {
  const lines = (rest + chunk.toString('latin1')).split('\n');
  rest = lines.pop() ?? '';
  if (rest.length > 4096) rest = '';
  for (const line of lines) {
    const [verb, id, deadline] = line.trim().split(' ');
    if (id === undefined || !ID.test(id)) continue;
    if (verb === 'watch' && /^\d+$/.test(deadline ?? '')) watch(id, Number(deadline));
    else if (verb === 'release') release(id);
  }
});
process.stdin.on('end', () => {
  ended = true;
  maybeExit();
  // Never linger: the latest deadline held plus LINGER_MS, then exit whatever is left.
  setTimeout(() => process.exit(0), Math.max(0, lastDeadline - Date.now()) + LINGER_MS).unref();
});
process.stdin.on('error', () => process.stdin.emit('end'));
for (const signal of ['SIGHUP', 'SIGINT', 'SIGPIPE'] as const) process.on(signal, () => undefined);
