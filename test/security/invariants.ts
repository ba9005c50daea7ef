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
  'container:network:none-by-default': {behaviour: 'A container from a profile without a network grant cannot reach the host (loopback, docker0) or anything else.'},
  'container:filesystem:only-grants-writable': {behaviour: 'The image is read-only; only granted tmpfs/mounts are writable, and tmpfs is capped.'},
  // h-mounts (issue 11: mounts, per-call uids, /dev/mqueue)
  'container:filesystem:no-mqueue': {behaviour: '/dev/mqueue is an empty read-only tmpfs, and under runc no POSIX message queue can be created (RLIMIT_MSGQUEUE 0).',
    note: 'gVisor ignores RLIMIT_MSGQUEUE: under runsc mq_open still creates queues, in the sandbox\'s own IPC namespace and memory.'},
  'container:mounts:rechecked-at-create': {behaviour: 'A mount source replaced after load (a symlink planted by a tool or on the host, or another directory) is refused at the next create, cold or warm-pool, with BACKEND_UNAVAILABLE naming the target; no container is left.',
    note: 'Without staging (toolcell not root), the engine resolves the path itself at start: a host user who can write the source\'s parent can still swap it between the last check and the mount. Under runc the container\'s mount table and the mounted inode are checked right after start (a mismatch is refused even if the container has exited; a cold container\'s tool is held by a /bin/sh wrapper until the check passed; a container that died before its mount table was read is not checked); under runsc there is no check after start.'},
  'container:mounts:load-refuses-redirectable': {behaviour: 'At load, a grant inside another grant\'s writable mount is refused, and a planted symlink leaves out only the tools of the profile that mounts it (named in the reason); the server starts and serves the others.',
    note: 'Decided on canonical paths at load; sources that change later are the backend\'s re-check (container:mounts:rechecked-at-create).'},
  'container:mounts:staged-as-root': {behaviour: 'When toolcell runs as root, the engine is given a root-only staging path (under /run/toolcell/mounts, every component root-owned and not writable by others) bind-mounted from the checked object itself (opened O_NOFOLLOW, identity compared, mounted through /proc/self/fd); a host user who swaps the source between the check and the engine\'s mount changes nothing; the staging mount is detached once the container has started or failed.',
    note: 'Not used when toolcell is not root (the race of container:mounts:rechecked-at-create remains). Root on the host, and an engine in another mount namespace, are out of scope. Staging mounts of a process killed between staging and start stay until another toolcell process stages (it detaches those of dead processes).'},
  'container:mounts:targets-not-movable': {behaviour: 'No tool can move a mount point to redirect a later call\'s mount: at load a profile is left out when a target lies at or under another of its writable targets (read-write grant or tmpfs), under a read-only grant whose directory there is writable through any profile\'s grant, or shares a target; under runc the check after start reads the container\'s mount table (mount point, device, root) and the inode, so a mount that a symlink sent elsewhere is refused.',
    note: 'Symlinks the operator put inside a read-only grant or the image that lead a target into a writable place are not analysed. Under runsc there is no check after start. Someone on the host who can write a read-only grant\'s directory can still plant a symlink at a mount point there (refused after start under runc, before the held tool runs).'},
  'container:uid:one-per-sandbox': {behaviour: 'Every live container (cold or warm-pool) runs as a uid:gid no other live sandbox on the host has, leased through O_EXCL files shared by all toolcell processes; so a sandbox with a path into the host\'s /proc cannot read another\'s environ or /proc/<pid>/root, and the lease is released when its container is removed.',
    note: 'Processes in another pid namespace or under another host user do not see the leases. A uid is reused after release, so files a call left in a writable mount can belong to a later call\'s uid. Under runsc the sandbox\'s host processes do not run as that uid.'},
  'container:privileges:none': {behaviour: 'No capabilities, no setuid escalation, no mounts or new namespaces, no ptrace beyond the container.',
    note: 'ptrace between processes of the same user inside the container is allowed by Docker\'s default seccomp.'},
  'container:host:nothing-passed-in': {behaviour: 'Neither the host environment nor host files reach a container beyond what the job names.'},
  'container:pids:contained': {behaviour: 'A fork bomb is contained by the pids limit; the host can still start processes and nothing survives the call.',
    note: 'Reporting PIDS_LIMIT is best effort.'},
  'container:memory:contained': {behaviour: 'Unbounded allocation is ended by the kernel OOM killer at the memory limit (swap equal) and reported outOfMemory.',
    note: 'An exit 137 toolcell did not cause is taken as OOM, so a self-SIGKILL is mislabelled.'},
  'container:output:capped': {behaviour: 'Output is capped per stream, the container is killed at the cap, and server memory stays bounded.'},
  'container:time:killed-at-deadline': {behaviour: 'A tool that never ends is killed at its deadline, reported timedOut, and its container is gone when the call returns.'},
  'container:argv:no-shell': {behaviour: 'Arguments reach the program as literal argv elements; no shell interprets them (warm launcher included).'},
  'dispatch:cancel:kills-sandbox': {behaviour: 'Aborting a call stops its sandbox and removes its container within 2 s; the result says isCanceled.'},
  'container:lifecycle:nothing-left-behind': {behaviour: 'After many calls (hostile ones included) and after close(), no labelled container and no orphaned runtime shim remains.'},
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
