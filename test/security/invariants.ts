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
  // Front end (stdio and HTTP), December 2026 hardening.
  'audit:refusals:recorded': {behaviour: 'A call refused because its tool is not granted (or does not exist) answers exactly like an unknown tool, runs nothing, and writes tool.call.denied with principal, tool and rule, the arguments only as their SHA-256.',
    note: 'Refusals before the call spine (authentication, transport guards) are counted in metrics and logged, not audited.'},
  'audit:refusals:rate-limited': {behaviour: 'Refusal audit events (denied, rate-limited, rejected) are written at most at 20/s per principal (bursts of 100); past it they are counted into one audit.suppressed event per principal per second, so a flood of refused calls cannot grow the audit file without bound; the client sees no difference (ungranted and unknown tools still answer alike) and other principals are still audited.',
    note: 'During a flood only the first refusals are written in full (tool names of the rest are lost, only counts remain); the refused calls themselves still cost the server CPU like any request.'},
  'audit:lines:well-formed': {behaviour: 'Every audit line is valid UTF-8 JSON with well-formed strings: lone UTF-16 surrogates (client-chosen tool names, token subjects) become U+FFFD, and the 128-unit cut of an unknown name never splits a surrogate pair.',
    note: 'Only the JSONL sink rewrites strings; the in-memory sink used by tests keeps what call-tool passed (names already made well-formed there).'},
  'http:metrics:closed-by-default': {behaviour: '/metrics (which names every tool called, granted or not) answers 401 without credentials and 403 to a principal metrics.principals does not list, unless the operator sets metrics.public; /mcp keeps answering.',
    note: 'With no authentication configured (loopback only) every local process is the local principal, granted every tool, and may read /metrics. A listed reader sees every principal\'s tool names, so a reader granted only some packages is refused at config load; not checked: a token whose scope is a listed scope:SCOPE reader while its subject or other scopes carry partial grants.'},
  'http:body:refusal-readable': {behaviour: 'A client still sending an oversized (or otherwise refused) body reads the JSON-RPC error (413, 401, 415) instead of a connection reset; the rest of the body is discarded, never buffered, and the service answers the next request.',
    note: 'The discarding is bounded (5 s, 64 MiB; 1 s, 256 KiB, 4096 chunks without valid credentials; 64 lingers at once, 16 unauthenticated): a client that neither reads nor stops sending by then, or refused past those bounds, is cut off and may lose the answer.'},
  'http:body:memory-bounded': {behaviour: 'A request body is copied into one buffer of at most maxBodyBytes however it is chunked (1-byte chunks included), and body reads are admitted under BodyBudget (64 at once, 8 per principal, 64 MiB of buffers by default): past it the request is answered 429 (that principal) or 503 (the service) unread; the service keeps answering.',
    note: 'Idle connections that send no body, and the 60 s requestTimeout a few principals can hold the slots for, are not bounded here (the OS and Node\'s headersTimeout bound them); the bound is not fair-share between principals.'},
  'http:connection:nothing-after-refusal': {behaviour: 'A request pipelined on a connection behind a body that was refused unread (413, 401, 415, 429, 503) is neither run nor answered: the connection is closed once the refusal is written.',
    note: 'Requests pipelined behind a request that was answered normally are served as HTTP/1.1 allows.'},
  'http:linger:unauthenticated-bounded': {behaviour: 'After refusing an unauthenticated request, the service discards the rest of its body for at most 1 s, 256 KiB and 4096 chunks, with at most 16 such lingers (64 in all) at once; past that the connection is closed at once. Anonymous senders of endless bodies cannot tie up the CPU, and the service keeps answering.',
    note: 'A client refused past the linger bounds may see a reset instead of its refusal. Connection floods as such (connect, send headers, close) are not bounded here.'},
  'stdio:framing:bad-input-answered': {behaviour: 'On stdio, a line that is not JSON is answered -32700, a batch or non-message -32600, a line over 4 MiB -32600 and discarded unbuffered; the server keeps serving the same connection.',
    note: 'An oversized message is answered with id null (which "id" JSON.parse would take is past the cap), so the client must time that request out; a malformed client response is dropped unanswered.'},
  'stdio:output:backpressure': {behaviour: 'On stdio, no more input is read while more than 64 KiB of answers (refusals of the line filter and the SDK\'s responses alike) wait to be written to stdout: a client that writes without reading stalls itself, the server\'s memory stays bounded, and every line is answered once it reads.',
    note: 'Checked after each line and after every 32 messages passed on: the answers to those 32 messages and the results of tool calls already running can pass the bound.'},
} as const;

/** An invariant id. */
export type InvariantId = keyof typeof INVARIANTS;
