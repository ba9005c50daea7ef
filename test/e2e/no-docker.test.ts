import assert from 'node:assert/strict';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {runCli} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';
import {spawnCli, type SpawnedServer} from './http/support.ts';

/**
 * Without Docker a user can still see green (issue 14, point 4): container tools left out on
 * purpose (`--no-containers`) are reported as skipped, and `/readyz` is 200 and `doctor` exits 0;
 * a tool left out for a fault (engine down while containers were wanted, a missing image) still
 * fails both.
 */
const run = (args: string[], env: Record<string, string> = {}) => runCli(args, {env, timeoutMs: 90_000});

let dir: Awaited<ReturnType<typeof tempDir>>;
/** DOCKER_HOST pointing at a socket nobody listens on: an engine that is down. */
let noEngine: Record<string, string>;
before(async () => {
  dir = await tempDir();
  noEngine = {DOCKER_HOST: `unix://${join(dir.path, 'no-docker.sock')}`};
  // A container tool whose image does not exist on this engine, beside an isolate tool.
  await dir.write('tools/ghostimg/toolcell.json', {name: 'ghostimg', version: '1.0.0', tools: [
    {name: 'run', description: 'x', profile: 'python-offline', inputSchema: {type: 'object'},
      container: {image: `toolcell/no-such-image-${process.pid}`, command: ['python3', '-c', 'print(1)']}},
    {name: 'echo', description: 'x', profile: 'isolate-strict', inputSchema: {type: 'object'}, isolate: {entry: 'echo.js'}},
  ]});
  await dir.write('tools/ghostimg/echo.js', 'export default () => "ok"');
});
after(() => dir.dispose());

/** Starts `serve --http 127.0.0.1:0 ARGS`, returns `/readyz`'s status and report, and stops the server. */
async function readyz(args: string[], env: Record<string, string>) {
  let server: SpawnedServer | undefined;
  try {
    server = await spawnCli(['--http', '127.0.0.1:0', '--audit-log', 'off', ...args], {env});
    const response = await fetch(new URL('/readyz', server.url), {signal: AbortSignal.timeout(20_000)});
    return {status: response.status, report: await response.json() as {ready: boolean; unavailableTools: number; skippedTools: number; backends: Record<string, string>}};
  } finally {
    if (server && server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      const timer = setTimeout(() => server!.child.kill('SIGKILL'), 15_000);
      await server.exited;
      clearTimeout(timer);
    }
  }
}

test('doctor --no-containers: container profiles are "skip", not FAIL, and it exits 0, even with no engine at all', async () => {
  const {code, stdout} = await run(['doctor', '--no-containers'], noEngine);
  assert.equal(code, 0, stdout);
  assert.match(stdout, /^skip\s+docker\s+not checked: container tools are turned off \(--no-containers\)/m);
  assert.match(stdout, /^skip\s+profile python-offline\s+skipped: container tools are turned off/m);
  assert.match(stdout, /^ok\s+profile isolate-strict\s+can be honoured/m);
  assert.doesNotMatch(stdout, /^FAIL/m);
  const json = await run(['doctor', '--no-containers', '--json'], noEngine);
  assert.equal(json.code, 0);
  const report = JSON.parse(json.stdout) as {ok: boolean; checks: {name: string; ok: boolean; skipped?: boolean}[]};
  assert.equal(report.ok, true);
  assert.equal(report.checks.find((c) => c.name === 'profile python-offline')!.skipped, true);
});

test('doctor without --no-containers still fails when the engine is down, or an image is missing', async () => {
  const down = await run(['doctor'], noEngine);
  assert.equal(down.code, 1);
  assert.match(down.stdout, /^FAIL\s+profile python-offline\s+CANNOT be honoured: needs a Docker engine/m);
  const missing = await run(['doctor', '--no-bundled-tools', '--tools', join(dir.path, 'tools')]);
  assert.equal(missing.code, 1, missing.stdout);
  assert.match(missing.stdout, /^FAIL\s+profile python-offline\s+CANNOT be honoured: image\(s\) missing: toolcell\/no-such-image-/m);
});

test('/readyz is 200 with --no-containers (container tools counted as skipped), 503 when the engine is down and containers were wanted', async () => {
  const skipped = await readyz(['--no-containers'], noEngine);
  assert.equal(skipped.status, 200, JSON.stringify(skipped.report));
  assert.equal(skipped.report.ready, true);
  assert.equal(skipped.report.unavailableTools, 0);
  assert.equal(skipped.report.skippedTools, 3, 'json__query, python__run, shell__run');
  assert.equal(skipped.report.backends.container, 'skipped');
  assert.equal(skipped.report.backends.isolate, 'ok');
  const down = await readyz([], noEngine);
  assert.equal(down.status, 503);
  assert.equal(down.report.unavailableTools, 3);
  assert.equal(down.report.backends.container, 'unavailable');
});

test('/readyz is 503 when a container tool is left out for a missing image', async () => {
  const missing = await readyz(['--no-bundled-tools', '--tools', join(dir.path, 'tools')], {});
  assert.equal(missing.status, 503, JSON.stringify(missing.report));
  assert.equal(missing.report.unavailableTools, 1);
  assert.equal(missing.report.skippedTools, 0);
});
