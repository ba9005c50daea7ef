/**
 * Shared helpers of the HTTP service tests (unit, e2e, security): fixture tool packages and
 * profiles written into a temp dir, a runtime over them (a counting test-double isolate backend,
 * or the real one through createRuntime), JWT keys and a loopback JWKS server, and SDK clients.
 */
import assert from 'node:assert/strict';
import {after, before} from 'node:test';
import {spawn, type ChildProcess} from 'node:child_process';
import {existsSync} from 'node:fs';
import {createServer, type Server} from 'node:http';
import type {AddressInfo} from 'node:net';
import {fileURLToPath} from 'node:url';
import {Client, ProtocolError, StreamableHTTPClientTransport} from '@modelcontextprotocol/client';
import {exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload} from 'jose';
import type {AuditEventV2} from '../../../src/audit/audit-event.ts';
import {MemoryAuditSink} from '../../../src/audit/audit-log.ts';
import type {Backend, ExecutionResult, IsolateJob} from '../../../src/backends/backend.ts';
import {Dispatcher, type DispatcherOptions} from '../../../src/dispatch/dispatcher.ts';
import type {Admission} from '../../../src/frontend/call-tool.ts';
import {startHttpService, type HttpService, type HttpServiceOptions, type ServiceRuntime} from '../../../src/frontend/http/serve-http.ts';
import type {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {loadPackages} from '../../../src/policy/load-packages.ts';
import {loadProfiles} from '../../../src/policy/load-profiles.ts';
import {parseServiceConfig} from '../../../src/policy/service-config.ts';
import {tempDir} from '../../support/temp.ts';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
/** The isolate backend exists (another engineer writes it); e2e tests with the real runtime need it. */

/**
 * Writes the fixture packages and profiles:
 * - `fixture` (profile `fixture-fast`, 1 s): `double` (`a.x * 2`), `echo` (`a.text`)
 * - `fixture` (profile `fixture-slow`, 2 s): `spin` (`for(;;){}`: runs until stopped)
 * - `other` (profile `fixture-fast`): `shout` (`a.text.toUpperCase()`)
 */
export async function writeFixtures(): Promise<{toolDir: string; profileDir: string; dir: string; dispose: () => Promise<void>}> {
  const tmp = await tempDir('toolcell-http-');
  const isolateProfile = (name: string, timeoutMs: number) => ({name, backend: 'isolate', limits: {timeoutMs, memoryMb: 32, outputBytes: 65536}});
  await tmp.write('profiles/fixture-fast.json', isolateProfile('fixture-fast', 1000));
  await tmp.write('profiles/fixture-slow.json', isolateProfile('fixture-slow', 2000));
  const object = (properties: Record<string, unknown>, required: string[]) => ({type: 'object', properties, required, additionalProperties: false});
  await tmp.write('tools/fixture/toolcell.json', {
    name: 'fixture', version: '1.0.0', description: 'HTTP test fixtures',
    tools: [
      {name: 'double', description: 'Doubles x.', inputSchema: object({x: {type: 'number'}}, ['x']), profile: 'fixture-fast', isolate: {entry: 'double.js'}},
      {name: 'echo', description: 'Returns text.', inputSchema: object({text: {type: 'string'}}, ['text']), profile: 'fixture-fast', isolate: {entry: 'echo.js'}},
      {name: 'spin', description: 'Never returns.', inputSchema: object({}, []), profile: 'fixture-slow', isolate: {entry: 'spin.js'}},
    ],
  });
  await tmp.write('tools/fixture/double.js', 'export default (a) => a.x * 2;\n');
  await tmp.write('tools/fixture/echo.js', 'export default (a) => a.text;\n');
  await tmp.write('tools/fixture/spin.js', 'export default async () => { for (;;) {} };\n');
  await tmp.write('tools/other/toolcell.json', {
    name: 'other', version: '1.0.0',
    tools: [{name: 'shout', description: 'Upper-cases text.', inputSchema: object({text: {type: 'string'}}, ['text']), profile: 'fixture-fast', isolate: {entry: 'shout.js'}}],
  });
  await tmp.write('tools/other/shout.js', 'export default (a) => a.text.toUpperCase();\n');
  return {toolDir: `${tmp.path}/tools`, profileDir: `${tmp.path}/profiles`, dir: tmp.path, dispose: tmp.dispose};
}

/** The fixture packages and profiles of `writeFixtures`. */
export type Fixtures = Awaited<ReturnType<typeof writeFixtures>>;

/**
 * `writeFixtures` for the whole calling file: written in a `before` hook and removed in an
 * `after` hook (node:test). The returned object is filled in when `before` has run.
 */
export function useFixtures(): Fixtures {
  const fixtures = {} as Fixtures;
  before(async () => {
    Object.assign(fixtures, await writeFixtures());
  });
  after(async () => {
    await fixtures.dispose?.();
  });
  return fixtures;
}

/** What the test-double backend saw. */
export interface FakeBackendState {
  runs: number;
  running: number;
  cancelled: number;
  timedOut: number;
  /** Jobs started, by file name. */
  byFile: Map<string, number>;
  /** Every job as JSON, to prove what did (and did not) reach a sandbox. */
  jobs: string[];
}

const result = (extra: Partial<ExecutionResult>): ExecutionResult => ({
  failed: false, timedOut: false, isCanceled: false, outOfMemory: false, truncated: false, stdout: '', stderr: '', durationMs: 1, ...extra,
});

/**
 * A test double of the isolate backend that knows the fixture tools by file name and behaves
 * like them (including `spin`, which runs until its signal aborts or its time limit passes).
 * It counts runs, so that tests can prove that no tool ran.
 */
export function fakeIsolateBackend(): {backend: Backend<IsolateJob>; state: FakeBackendState} {
  const state: FakeBackendState = {runs: 0, running: 0, cancelled: 0, timedOut: 0, byFile: new Map(), jobs: []};
  const backend: Backend<IsolateJob> = {
    kind: 'isolate',
    async run(job, {signal}) {
      state.runs++;
      state.running++;
      const file = job.filename.split('/').pop()!;
      state.byFile.set(file, (state.byFile.get(file) ?? 0) + 1);
      state.jobs.push(JSON.stringify(job));
      const args = job.args as Record<string, unknown>;
      try {
        await new Promise((resolve) => setImmediate(resolve));
        switch (file) {
          case 'double.js': return result({stdout: JSON.stringify((args.x as number) * 2)});
          case 'echo.js': return result({stdout: JSON.stringify(args.text)});
          case 'shout.js': return result({stdout: JSON.stringify(String(args.text).toUpperCase())});
          case 'readyz.js': return result({stdout: '1'});
          case 'spin.js':
            return await new Promise<ExecutionResult>((resolve) => {
              const timer = setTimeout(() => {
                state.timedOut++;
                resolve(result({failed: true, timedOut: true, durationMs: job.limits.timeoutMs}));
              }, job.limits.timeoutMs);
              const stop = () => {
                clearTimeout(timer);
                state.cancelled++;
                resolve(result({failed: true, isCanceled: true}));
              };
              if (signal.aborted) stop();
              else signal.addEventListener('abort', stop, {once: true});
            });
          default: return result({failed: true, error: {name: 'Error', message: `unknown fixture ${file}`}});
        }
      } finally {
        state.running--;
      }
    },
    async close() {},
  };
  return {backend, state};
}

/** A runtime over the fixture packages with the test-double backend and an in-memory audit sink. */
export async function fakeRuntime(fixtures: {toolDir: string; profileDir: string}, options: {admission?: Admission; dispatch?: DispatcherOptions; onCallFinished?: ServiceRuntime['onCallFinished']} = {}) {
  const profiles = await loadProfiles([fixtures.profileDir]);
  const loaded = await loadPackages([fixtures.toolDir], profiles);
  if (loaded.rejected.length > 0) throw new Error(`fixtures rejected: ${JSON.stringify(loaded.rejected)}`);
  const {backend, state} = fakeIsolateBackend();
  const dispatcher = new Dispatcher({isolate: backend}, options.dispatch ?? {
    isolate: {concurrency: 16, maxQueued: 256}, container: {concurrency: 4, maxQueued: 64}, queueWaitMs: 30_000, graceMs: 400,
  });
  const audit = new MemoryAuditSink();
  let closed = 0;
  const runtime: ServiceRuntime & {audit: MemoryAuditSink} = {
    tools: loaded.tools,
    dispatcher,
    audit,
    containerGrants: new Map(),
    ...(options.admission ? {admission: options.admission} : {}),
    ...(options.onCallFinished ? {onCallFinished: options.onCallFinished} : {}),
    unavailable: [],
    close: async () => {
      closed++;
      await dispatcher.close();
    },
  };
  return {runtime, backend: state, audit, closedCount: () => closed};
}

/**
 * A real runtime (createRuntime: the isolate backend in its worker process) over the fixture
 * packages, auditing to a JSONL file that `auditEvents()` reads back.
 */
export async function realRuntime(fixtures: {toolDir: string; profileDir: string; dir: string}, options: {admission?: Admission; dispatch?: DispatcherOptions; onCallFinished?: ServiceRuntime['onCallFinished']; isolateWorkers?: number} = {}) {
  const {createRuntime} = await import('../../../src/runtime.ts');
  const auditFile = `${fixtures.dir}/audit-${Date.now()}-${Math.random().toString(36).slice(2)}.jsonl`;
  const runtime = await createRuntime({
    toolDirs: [fixtures.toolDir], profileDirs: [fixtures.profileDir], audit: auditFile, containers: false,
    ...(options.admission ? {admission: options.admission} : {}),
    ...(options.dispatch ? {dispatch: options.dispatch} : {}),
    ...(options.onCallFinished ? {onCallFinished: options.onCallFinished} : {}),
    ...(options.isolateWorkers ? {isolateWorkers: options.isolateWorkers} : {}),
  });
  const {readFile} = await import('node:fs/promises');
  const auditEvents = async (): Promise<AuditEventV2[]> => {
    const text = await readFile(auditFile, 'utf8').catch(() => '');
    return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AuditEventV2);
  };
  return {runtime, auditEvents, auditFile};
}

/** Runtime kinds the e2e tests run against: the test double (exact control of timing) and the real runtime. */
export const RUNTIME_KINDS: ReadonlyArray<'fake' | 'real'> = ['fake', 'real'];

/** Either runtime, with a uniform way to read its audit events. */
export async function anyRuntime(kind: 'fake' | 'real', fixtures: {toolDir: string; profileDir: string; dir: string}, options: Parameters<typeof realRuntime>[1] = {}) {
  if (kind === 'real') return realRuntime(fixtures, options);
  const fake = await fakeRuntime(fixtures, options);
  return {runtime: fake.runtime, auditEvents: async () => [...fake.audit.events]};
}

/** API keys used across the tests, with the config entries that hold their hashes. */
export const KEYS = {
  alice: 'alice-key-0123456789abcdef0123456789abcdef',
  bob: 'bob-key-0123456789abcdef0123456789abcdef0',
  /** Was configured once, then removed from the config: must be refused. */
  revoked: 'revoked-key-0123456789abcdef0123456789ab',
} as const;

/** Starts the service on 127.0.0.1 with an ephemeral port. `config` is the JSON config object (validated like a file). */
export async function startService(runtime: ServiceRuntime, config: Record<string, unknown>, extra: Partial<HttpServiceOptions> & {metrics?: ServiceMetrics} = {}): Promise<HttpService> {
  return startHttpService({runtime, config: parseServiceConfig('(test)', JSON.stringify(config)), host: '127.0.0.1', port: 0, ...extra});
}

/** An SDK client over Streamable HTTP. `era: 'modern'` pins 2026-07-28; `'legacy'` (default) runs the 2025-11-25 initialize handshake. */
export async function connectHttp(url: string, options: {token?: string; era?: 'legacy' | 'modern'; headers?: Record<string, string>} = {}): Promise<{client: Client; transport: StreamableHTTPClientTransport; close: () => Promise<void>}> {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    ...(options.token === undefined ? {} : {authProvider: {token: async () => options.token}}),
    ...(options.headers === undefined ? {} : {requestInit: {headers: options.headers}}),
  });
  const client = new Client({name: 'toolcell-http-test', version: '1.0.0'},
    options.era === 'modern' ? {versionNegotiation: {mode: {pin: '2026-07-28'}}} : {});
  await client.connect(transport);
  return {client, transport, close: () => client.close().catch(() => {})};
}

/** A 2025-11-25 initialize request body. */
export const initializeBody = (id: number | string = 1) => ({
  jsonrpc: '2.0', id, method: 'initialize',
  params: {protocolVersion: '2025-11-25', capabilities: {}, clientInfo: {name: 'raw', version: '1.0.0'}},
});

/** A 2026-07-28 `tools/call` request: body with the per-request `_meta` envelope, and the standard headers. */
export function modernCall(name: string, args: Record<string, unknown>, id: number | string = 1): {body: Record<string, unknown>; headers: Record<string, string>} {
  return {
    body: {
      jsonrpc: '2.0', id, method: 'tools/call',
      params: {
        name, arguments: args,
        _meta: {
          'io.modelcontextprotocol/protocolVersion': '2026-07-28',
          'io.modelcontextprotocol/clientInfo': {name: 'raw', version: '1.0.0'},
          'io.modelcontextprotocol/clientCapabilities': {},
        },
      },
    },
    headers: {'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name},
  };
}

/** POSTs a JSON-RPC body to the endpoint with the headers a Streamable HTTP client sends. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', ...headers},
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Reads the JSON-RPC messages of a response, whether JSON or an SSE stream. */
export async function messagesOf(response: Response): Promise<Array<Record<string, unknown>>> {
  const text = await response.text();
  if ((response.headers.get('content-type') ?? '').includes('text/event-stream')) {
    return text.split('\n').filter((l) => l.startsWith('data: ') && l.length > 6).map((l) => JSON.parse(l.slice(6)) as Record<string, unknown>);
  }
  return text === '' ? [] : [JSON.parse(text) as Record<string, unknown>];
}

/** Opens a 2025 session with a raw initialize + initialized; returns its id. */
export async function openRawSession(url: string, headers: Record<string, string> = {}): Promise<string> {
  const init = await post(url, initializeBody(), headers);
  if (init.status !== 200) throw new Error(`initialize answered ${init.status}: ${await init.text()}`);
  await init.text();
  const sessionId = init.headers.get('mcp-session-id');
  if (sessionId === null) throw new Error('no session id');
  const ack = await post(url, {jsonrpc: '2.0', method: 'notifications/initialized'}, {...headers, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25'});
  await ack.text();
  return sessionId;
}

/** ES256 signing keys and a loopback JWKS server. */
export async function jwtKit(): Promise<{
  issuer: string; jwksUri: string; sign: (claims: JWTPayload, options?: {key?: 'main' | 'stranger'; alg?: string}) => Promise<string>;
  close: () => Promise<void>; jwks: {keys: JWK[]};
}> {
  const main = await generateKeyPair('ES256');
  const stranger = await generateKeyPair('ES256');
  const jwk = {...(await exportJWK(main.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig'};
  const jwks = {keys: [jwk]};
  const server: Server = createServer((req, res) => {
    if (req.url === '/jwks.json') {
      res.writeHead(200, {'Content-Type': 'application/json'});
      res.end(JSON.stringify(jwks));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const issuer = 'https://auth.toolcell.test';
  return {
    issuer,
    jwksUri: `http://127.0.0.1:${port}/jwks.json`,
    jwks,
    sign: async (claims, options = {}) => {
      const key = options.key === 'stranger' ? stranger.privateKey : main.privateKey;
      return new SignJWT(claims).setProtectedHeader({alg: options.alg ?? 'ES256', kid: 'k1', typ: 'at+jwt'}).sign(key);
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** Waits until `check()` is true, polling; throws after `ms` (a hazard bound, not a timing assertion). */
export async function until(check: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The `toolcell/error` code of a result. */
export const errorCode = (r: unknown): string | undefined => ((r as {_meta?: Record<string, {code?: string}>})._meta?.['toolcell/error'])?.code;

/**
 * The JSON-RPC error a call was refused with (e.g. -32602 for an unknown or ungranted tool).
 * Fails the test when the call was accepted, or rejected with anything but a protocol error.
 */
export async function refusalOf(promise: Promise<unknown>): Promise<{code: number; message: string}> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `a JSON-RPC error, got ${String(err)}`);
    return {code: err.code, message: err.message};
  }
  assert.fail('the call was accepted');
}

/** The CLI under test: $TOOLCELL_CLI, else the build (npm test builds first), else the sources. */
export const CLI = process.env.TOOLCELL_CLI ?? (existsSync(`${REPO}dist/cli.js`) ? `${REPO}dist/cli.js` : `${REPO}src/cli.ts`);

/** A `toolcell serve` process started by `spawnCli`. */
export interface SpawnedServer {
  child: ChildProcess;
  /** The endpoint URL the server printed ('' when it exited first and `expectUrl` was false). */
  url: string;
  stderr: () => string;
  exited: Promise<{code: number | null; signal: NodeJS.Signals | null}>;
}

/**
 * Starts `node --no-node-snapshot CLI serve ARGS` and waits for the line naming the endpoint
 * (hazard bound 20 s). With `expectUrl: false`, an early exit resolves instead of failing.
 */
export async function spawnCli(args: string[], options: {expectUrl?: boolean; env?: Record<string, string>} = {}): Promise<SpawnedServer> {
  const child = spawn(process.execPath, ['--no-node-snapshot', CLI, 'serve', ...args], {
    env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn', ...options.env},
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>((resolve) => child.once('exit', (code, signal) => resolve({code, signal})));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no endpoint line after 20 s; stderr:\n${stderr}`)), 20_000);
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = /serving MCP over Streamable HTTP at (\S+)/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      if (options.expectUrl === false) resolve('');
      else reject(new Error(`server exited early; stderr:\n${stderr}`));
    });
  });
  return {child, url, stderr: () => stderr, exited};
}
