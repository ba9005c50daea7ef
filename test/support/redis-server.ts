// A real redis-server (Debian's package) started by a test: its own port and directory, no persistence, stopped by PID.
import {spawn, spawnSync, type ChildProcess} from 'node:child_process';
import {createServer, connect} from 'node:net';
import {isAlive} from './processes.ts';
import {tempDir} from './temp.ts';

/** Why a scale-out test cannot run here (a program is missing), or false when it can; with CI set, a missing program is a failure, not a skip. */
export function missingPrograms(...programs: string[]): string | false {
  const missing = programs.filter((p) => spawnSync('sh', ['-c', `command -v ${p}`]).status !== 0);
  if (missing.length === 0) return false;
  const reason = `${missing.join(' and ')} not installed (apt-get install ${missing.join(' ')}; .ci/run installs them)`;
  if (process.env.CI) throw new Error(`CI is set but ${reason}`);
  return reason;
}

/** A free TCP port on 127.0.0.1 (bound, then released: another process could take it in between). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address() as {port: number};
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`; rejects after `deadlineMs`. */
export async function waitForPort(port: number, deadlineMs = 10_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on 127.0.0.1:${port} after ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends SIGKILL-after-SIGTERM to a child by PID and waits (bounded) for it to be gone. */
export async function stopChild(child: ChildProcess | undefined, deadlineMs = 5000): Promise<void> {
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const pid = child.pid;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const timer = setTimeout(() => { if (isAlive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }, deadlineMs);
  await Promise.race([exited, new Promise((r) => setTimeout(r, deadlineMs + 2000))]);
  clearTimeout(timer);
}

/** A redis-server on its own port: `stop()` and `start()` again (same port) simulate an outage; `dispose()` stops it and removes its directory. */
export interface TestRedis {
  readonly port: number;
  /** `redis://:PASSWORD@127.0.0.1:PORT` */
  readonly url: string;
  readonly password: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** PID of the running redis-server (to freeze it with SIGSTOP in a test), undefined when stopped. */
  pid(): number | undefined;
  dispose(): Promise<void>;
}

/** Starts redis-server with `--save ''`, `--appendonly no`, a password, bound to 127.0.0.1 on a free port. */
export async function startRedis(): Promise<TestRedis> {
  const dir = await tempDir('toolcell-redis-');
  const port = await freePort();
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir.path, '--requirepass', password, '--protected-mode', 'yes'], {stdio: 'ignore'});
    await waitForPort(port);
  };
  const stop = async () => {
    // A frozen (SIGSTOPped) server must be resumed to handle SIGTERM.
    if (child?.pid !== undefined && child.exitCode === null) try { process.kill(child.pid, 'SIGCONT'); } catch { /* gone */ }
    await stopChild(child);
  };
  await start();
  const pid = () => (child !== undefined && child.exitCode === null && child.signalCode === null ? child.pid : undefined);
  return {port, password, url: `redis://:${password}@127.0.0.1:${port}`, start, stop, pid, dispose: async () => { await stop(); await dir.dispose(); }};
}
