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
    note: 'isolated-vm memoryLimit is a guideline; hostile code may reach 2-3x. The worker RSS ceiling is the hard bound; the calls that shared the worker are re-run (isolate:crash:neighbours-unharmed).'},
  'isolate:output:capped': {behaviour: 'Console floods and huge results stop at outputBytes, are reported truncated, and never carry more than the cap out.'},
  'isolate:prototypes:host-clean': {behaviour: 'What crosses out of the isolate (result JSON, error name and message) cannot pollute host prototypes.'},
  // Isolate tier hardening (issue 11 items 7-11).
  'isolate:crash:neighbours-unharmed': {behaviour: 'A call that kills its isolate worker (V8 abort on a growing Map, the RSS ceiling) or wedges an isolate thread fails no other call in flight there: those run again alone in a quarantine worker and complete; the cause ends with its own code (MEMORY_LIMIT, TIMEOUT or a failure naming the crash).',
    note: 'Costs the neighbours latency (each re-run waits for a quarantine worker). Re-running is sound only because isolate calls have no side effects outside the isolate (no egress in isolates today). Each call runs at most twice.'},
  'isolate:memory:resizable-buffers-refused': {behaviour: 'No tool can create a resizable ArrayBuffer or growable SharedArrayBuffer (memory isolated-vm does not count) by any constructor route; trying is an error, and the worker keeps answering.',
    note: 'Covers the routes to the built-in constructor that JavaScript offers (global, prototype.constructor, species, Reflect.construct, subclassing); WebAssembly.Memory, when allowWebAssembly is set, stays uncounted.'},
  'isolate:memory:admitted-by-budget': {behaviour: 'Calls that each respect memoryMb also fit their worker together: a worker takes calls only while the sum of their memoryMb (plus a per-isolate overhead) fits its budget below the RSS ceiling; others wait, within their deadline.',
    note: 'Counts declared limits, not use: a call over its limit (isolated-vm lets hostile code reach 2-3x) is stopped by the RSS ceiling (isolate:crash:neighbours-unharmed). First come first served: a large call at the head makes smaller ones wait.'},
  'isolate:worker:frozen-replaced': {behaviour: 'A frozen isolate worker is killed and replaced once a call in it passes its deadline plus the backstop grace, or a cancel is not acknowledged within that grace, whoever cancelled; later calls succeed.',
    note: 'Calls sent to the frozen worker before it is killed are lost to it (those not yet past their deadline run again elsewhere); detection takes up to timeoutMs + backstopGraceMs.'},
  'isolate:prelude:owns-what-it-touches': {behaviour: 'The prelude never calls a tool getter or an inherited setter when it reports a result or a thrown value (null-prototype records, data properties only): a spinning getter or an Object.prototype setter cannot wedge a call, restart a worker or turn a failure into success.',
    note: 'A Proxy\'s traps still run (JavaScript cannot tell a Proxy apart); a throw that escapes to isolated-vm (module top level, unhandled rejection) is copied by isolated-vm, which may run getters: bounded by the deadline and the wedge retirement.'},
  // Red-team findings on the isolate hardening.
  'isolate:memory:thrown-copies-not-resident': {behaviour: 'What isolated-vm copies out of an isolate for a thrown value (module top level, unhandled rejection) is cut to 4 KB and collected by the worker after the call: it does not stay resident to push a later call over the RSS ceiling.',
    note: 'The copy itself is not prevented (V8 offers no way to catch a module top-level throw in JavaScript, and isolated-vm has no dynamic import): while the call runs it counts against the worker RSS ceiling, transiently up to about twice the thrown value.'},
  'isolate:memory:blame-needs-evidence': {behaviour: 'A call is the cause of a worker death only when it killed a clean quarantine worker (fresh, or its RSS near its RSS at start) running it alone; being alone in a worker that died is not evidence, so such a call runs again there.',
    note: 'Each suspect still runs at most twice; a hostile call alone in its worker costs one more worker death (in quarantine). Clean is measured by RSS, not by what the memory holds.'},
  'isolate:builtins:uninterruptible-refused': {behaviour: 'Array.prototype methods that V8 runs without checking for termination on a huge sparse array or array-like (join, indexOf, sort, slice, forEach and 25 more) refuse receivers longer than 2^24 elements before starting, with a length read that no tool code can change in between: such a call fails at once and wedges no isolate thread.',
    note: 'Audited: Array.prototype methods (iterators, Array.from, concat, JSON.stringify, Object.keys were interruptible or fast). Not audited: other built-ins that may loop uninterrupted. Top-level throws of huge or getter-laden values are still copied by isolated-vm without a deadline (see isolate:memory:thrown-copies-not-resident).'},
  'isolate:memory:icu-objects-unavailable': {behaviour: 'Intl (whose ICU objects hold memory outside the V8 heap that memoryMb does not count) does not exist in an isolate: no route (global, eval, Function) reaches its constructors, so a tool cannot hoard ICU memory.',
    note: 'String/Number/Date toLocale* and localeCompare stay: they use ICU per call without handing the tool an object (measured +20-80 MB transient RSS in a 32 MB isolate over 4 s); normalize and toLocaleUpperCase likewise.'},
  'pool:no-state-crosses-calls': {behaviour: 'With warm pools on, nothing a call writes (globals, prototypes, module state, tmpfs files, background processes) is visible to a later call.'},
  'pool:burst-never-reuses': {behaviour: 'A burst larger than a warm pool gets fresh members or cold sandboxes, never a used one.'},
  'container:network:none-by-default': {behaviour: 'A container from a profile without a network grant cannot reach the host (loopback, docker0) or anything else.'},
  'container:filesystem:only-grants-writable': {behaviour: 'The image is read-only; only granted tmpfs/mounts are writable, and tmpfs is capped.'},
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
