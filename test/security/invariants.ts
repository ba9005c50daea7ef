/**
 * The promises toolcell's security rests on, one id each (CONVENTIONS.md #14). Every id must be
 * cited by at least one test, as a comment line `// invariant: <id>` in the test file that
 * attacks it; `invariants-coverage.test.ts` fails when an id is cited by no test or a test
 * cites an id that is not here. `note` says what the promise does NOT cover.
 */
export const INVARIANTS = {
  'isolate:time:stopped-at-limit': {behaviour: 'Code that never ends is stopped at timeoutMs (wall) or cpuTimeMs (CPU), reported timedOut, and the next call is answered.'},
  'isolate:stack:contained': {behaviour: 'Deep recursion fails the call with a RangeError inside the isolate; the worker survives.'},
  'isolate:host:unreachable': {behaviour: 'Tool code finds nothing of the host: no Node globals, no module loading, no Reference or host function, not the prelude entry.'},
  'isolate:errors:hostile-values-contained': {behaviour: 'Hostile thrown values (looping Proxies, getters) cannot hang the worker or leak host stacks; a wedged isolate thread retires its worker.'},
  'isolate:heap:contained': {behaviour: 'Unbounded allocation ends with outOfMemory (or truncated) and the server keeps serving.',
    note: 'isolated-vm memoryLimit is a guideline; hostile code may reach 2-3x. The worker RSS ceiling is the hard bound, and it fails every call in flight in that worker.'},
  'isolate:output:capped': {behaviour: 'Console floods and huge results stop at outputBytes, are reported truncated, and never carry more than the cap out.'},
  'isolate:prototypes:host-clean': {behaviour: 'What crosses out of the isolate (result JSON, error name and message) cannot pollute host prototypes.'},
  'pool:no-state-crosses-calls': {behaviour: 'With warm pools on, nothing a call writes (globals, prototypes, module state, tmpfs files, background processes) is visible to a later call.'},
  'pool:burst-never-reuses': {behaviour: 'A burst larger than a warm pool gets fresh members or cold sandboxes, never a used one.'},
  'pool:launcher:exit-report-unforgeable': {behaviour: 'A warm-pool tool cannot learn its launcher\'s per-call token (memory, environ, fds, ptrace, package env names), so a forged exit report ends nothing: the result is its real exit and output.',
    note: 'runc only (runsc jobs never use the pool). The tool can still kill or stop its launcher; the call then ends by the engine\'s exit or the deadline. Relies on the image installing /opt/toolcell/sh unreadable; a member whose launcher is dumpable refuses to start.'},
  'container:network:none-by-default': {behaviour: 'A container from a profile without a network grant cannot reach the host (loopback, docker0) or anything else.'},
  'container:filesystem:only-grants-writable': {behaviour: 'The image is read-only; only granted tmpfs/mounts are writable, and tmpfs is capped.'},
  'container:privileges:none': {behaviour: 'No capabilities, no setuid escalation, no mounts or new namespaces, no ptrace beyond the container.',
    note: 'ptrace between processes of the same user inside the container is allowed by Docker\'s default seccomp.'},
  'container:host:nothing-passed-in': {behaviour: 'Neither the host environment nor host files reach a container beyond what the job names.'},
  'container:pids:contained': {behaviour: 'A fork bomb is contained by the pids limit; the host can still start processes and nothing survives the call.',
    note: 'Reporting PIDS_LIMIT is best effort.'},
  'container:memory:contained': {behaviour: 'Unbounded allocation is ended by the kernel OOM killer at the memory limit (swap equal) and reported outOfMemory.',
    note: 'Attribution needs an OOM witness (see container:exit:attributed-by-evidence); the limit holds either way.'},
  'container:exit:attributed-by-evidence': {behaviour: 'A tool\'s end is reported MEMORY_LIMIT only with an OOM witness (engine OOMKilled or oom event, kernel oom-kill record, memory cgroup oom_kill) and PIDS_LIMIT from the pids cgroup\'s refused forks; a self-SIGKILL or killed launcher is TOOL_FAILED "killed by signal 9"; a faked fork-failure message changes nothing where the cgroup is readable.',
    note: 'Cgroup and kernel-log witnesses need toolcell on the engine host with read access (root); a cold container\'s cgroup is sampled every 200 ms, so a refused fork in its last 200 ms can be missed; without the cgroup, stderr fork-failure text is the fallback.'},
  'container:output:capped': {behaviour: 'Output is capped per stream, the container is killed at the cap, and server memory stays bounded.'},
  'container:time:killed-at-deadline': {behaviour: 'A tool that never ends is killed at its deadline, reported timedOut, and its container is gone when the call returns.'},
  'container:time:deadline-survives-server': {behaviour: 'A container whose server dies (SIGKILL included) mid-call is removed at its deadline by a detached keeper process the tool cannot reach.',
    note: 'The keeper acts 2 s after the deadline and does not survive a host reboot or its own SIGKILL; warm-pool members waiting for a call are not watched (their launcher exits when the server\'s attach connection closes).'},
  'container:argv:no-shell': {behaviour: 'Arguments reach the program as literal argv elements; no shell interprets them (warm launcher included).'},
  'dispatch:cancel:kills-sandbox': {behaviour: 'Aborting a call stops its sandbox and removes its container within 2 s; the result says isCanceled.'},
  'container:lifecycle:nothing-left-behind': {behaviour: 'After many calls (hostile ones included) and after close(), no labelled container and no orphaned runtime shim remains.'},
  'container:reaper:only-ours': {behaviour: 'Start-up and close reaping remove only containers carrying a proof made with this installation\'s key for their name and owner, and end only shims of containers this installation recorded creating; look-alikes of others survive.',
    note: 'Whoever can read the state directory\'s key (root, the same user) can make containers this installation will reap. Without a usable state directory, leftovers of earlier processes are not reaped at all.'},
  'container:runtime:no-fallback': {behaviour: 'A runsc profile runs under gVisor or not at all; hostile programs stay contained there too.'},
  'http:auth:required': {behaviour: 'Every MCP request without valid credentials is refused with the right challenge, and no tool runs.'},
  'http:credentials:never-logged': {behaviour: 'API keys and tokens never appear in logs or audit events, valid or not, in headers or query strings.'},
  'http:principals:isolated': {behaviour: 'Grants hide other principals\' tools (a refusal looks like an unknown tool), and one principal\'s flood only limits that principal.',
    note: 'Many principals flooding together can still fill a backend queue (BUSY); the queue is FIFO, not fair-share.'},
  'http:sessions:bounded': {behaviour: 'Opening sessions without end evicts only the opener\'s own least recently used sessions; the total cap answers 503.'},
  'http:transport:guarded': {behaviour: 'Foreign Origin, DNS rebinding Host, oversized bodies, batches, and unknown/expired/foreign session ids are refused.'},
} as const;

/** An invariant id. */
export type InvariantId = keyof typeof INVARIANTS;
