// The in-sandbox end of egress: a relay from 127.0.0.1:PORT in the container's network namespace to the call's proxy socket.
import {spawn, type ChildProcess} from 'node:child_process';
import {readlinkSync} from 'node:fs';

/**
 * Why this shape (issue 10, "no route anywhere but the proxy"): the container keeps Docker's
 * `NetworkMode: none`, so its network namespace has only a loopback interface and no route
 * at all. toolcell (root) starts one relay process per call on the HOST, entered into that
 * namespace only (`nsenter --net`, util-linux), running as the call's leased uid. It listens
 * on 127.0.0.1:PORT there and connects each accepted connection to the call's proxy socket,
 * a host path it reaches through the host's filesystem (its mount namespace stays the host's).
 * So: the sandbox has no interface but loopback, no DNS server it could reach, nothing on its
 * loopback but the relay; the relay is not in the sandbox's PID namespace (the tool can
 * neither see nor signal it), nothing is mounted into the container, and no image carries
 * a relay binary. The relay copies bytes and parses nothing.
 * Needs: toolcell as root on the engine's host (setns needs CAP_SYS_ADMIN), `nsenter` on PATH,
 * runc. Does NOT work under gVisor (runsc keeps its own network stack inside the sentry: the
 * namespace of the container's pid is not the sandbox's loopback), so egress jobs refuse runsc.
 */

/** The port the relay listens on inside the sandbox (the proxy URL is `http://127.0.0.1:3128`). */
export const EGRESS_RELAY_PORT = 3128;

/** How long the relay may take to enter the namespace and listen, in ms. */
const RELAY_READY_TIMEOUT_MS = 10_000;
/** Connections the relay pipes at once (the proxy socket takes MAX_CALL_CONNECTIONS); more are closed on accept. */
export const RELAY_MAX_CONNECTIONS = 64;
/** The relay's RLIMIT_NOFILE: two descriptors per connection plus Node's own (about 30). */
const RELAY_NOFILE = 2 * RELAY_MAX_CONNECTIONS + 64;

/**
 * The relay's source, run by the same Node binary with `-e` (under prlimit): argv = [socketPath, port,
 * expectedNetns, maxConnections]. It checks it is in the expected network namespace, listens on 127.0.0.1:port,
 * prints `ready` on stderr (its stdout is unused) and pipes each connection to the Unix socket. Exits when stdin closes (toolcell
 * went away) or on SIGTERM.
 */
const RELAY_SOURCE = `
const net = require('node:net');
const fs = require('node:fs');
const [sock, port, expected, max] = process.argv.slice(1);
const MAX = Number(max);
if (fs.readlinkSync('/proc/self/ns/net') !== expected) { process.stderr.write('wrong network namespace\\n'); process.exit(3); }
let open = 0;
const server = net.createServer({pauseOnConnect: true}, (c) => {
  if (open >= MAX) { c.destroy(); return; }
  open++; c.once('close', () => open--);
  const u = net.connect(sock);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
  u.on('connect', () => { c.pipe(u); u.pipe(c); c.resume(); });
});
server.on('error', (e) => { process.stderr.write(String(e.code) + '\\n'); process.exit(4); });
server.listen(Number(port), '127.0.0.1', () => process.stderr.write('ready\\n'));
process.stdin.on('end', () => process.exit(0)); process.stdin.on('error', () => process.exit(0)); process.stdin.resume();
`;

/** A running relay. `stop` kills it by its pid (idempotent). */
export interface EgressRelay {
  readonly pid: number;
  stop(): void;
}

/**
 * The network namespace id (`net:[inode]`) of process `pid`, read from /proc.
 * @throws Error when the process is gone or unreadable
 */
export function netnsOf(pid: number): string {
  return readlinkSync(`/proc/${pid}/ns/net`);
}

/**
 * Starts the relay in the network namespace of `pid` (the sandbox's init), as `uid:gid`.
 * @param expectedNetns the namespace id read from `/proc/<pid>/ns/net` while the container was
 *   known to be running with that pid; the relay refuses to listen anywhere else (pid reuse)
 * @throws Error when the relay does not report readiness within 10 s, or exits
 */
export async function startEgressRelay(options: {pid: number; uid: number; gid: number; socketPath: string; expectedNetns: string}): Promise<EgressRelay> {
  const child: ChildProcess = spawn('nsenter', [
    `--target=${options.pid}`, '--net', `--setuid=${options.uid}`, `--setgid=${options.gid}`, '--',
    // Under a low descriptor limit: a flood of connections is refused by the relay, never crashes it or the host.
    'prlimit', `--nofile=${RELAY_NOFILE}`, '--',
    process.execPath, '--max-old-space-size=32', '-e', RELAY_SOURCE, options.socketPath, String(EGRESS_RELAY_PORT), options.expectedNetns, String(RELAY_MAX_CONNECTIONS),
  ], {stdio: ['pipe', 'ignore', 'pipe'], env: {}});
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch { /* already gone */ }
    }
    child.stdin?.destroy();
    child.stderr?.destroy();
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let err = '';
      const timer = setTimeout(() => reject(new Error('egress relay not ready within 10 s')), RELAY_READY_TIMEOUT_MS);
      child.stderr!.on('data', (c: Buffer) => {
        err = (err + c.toString()).slice(-500);
        if (/^ready$/m.test(err)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (e) => { clearTimeout(timer); reject(e); });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`egress relay exited (${code}): ${err.trim()}`)); });
    });
  } catch (error) {
    stop();
    throw error;
  }
  child.stderr!.resume();
  return {pid: child.pid!, stop};
}
