import assert from 'node:assert/strict';
import {execFile} from 'node:child_process';
import {test} from 'node:test';
import {promisify} from 'node:util';
import {docker, dockerAvailable} from '../support/docker.ts';
import {CLI} from '../support/mcp-stdio.ts';

/**
 * `toolcell doctor` against the real engine tells the truth: what it reports about Docker,
 * cgroup limits and gVisor matches what the engine itself says, and its exit code follows from
 * whether every loaded profile can be honoured. (The no-engine case is in cli.test.ts.)
 */
const ready = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});

test('doctor with a Docker engine reports what the engine offers, and fails closed on what it lacks', {skip: !ready && 'no Docker engine'}, async () => {
  const info = await docker.info() as {Runtimes?: Record<string, unknown>};
  const hasRunsc = Object.hasOwn(info.Runtimes ?? {}, 'runsc');
  let code = 0;
  let stdout = '';
  try {
    ({stdout} = await promisify(execFile)(process.execPath, [CLI, 'doctor', '--json'], {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, timeout: 120_000}));
  } catch (e) {
    code = (e as {code: number}).code;
    stdout = (e as {stdout: string}).stdout;
  }
  const report = JSON.parse(stdout) as {ok: boolean; checks: {name: string; ok: boolean; detail: string}[]; docker: {reachable: boolean; runsc: boolean; limitsEffective?: boolean}};
  const check = (name: string) => report.checks.find((c) => c.name === name)!;
  assert.equal(report.docker.reachable, true);
  assert.equal(check('docker').ok, true);
  assert.equal(report.docker.runsc, hasRunsc, 'runsc is reported exactly when the engine lists it');
  assert.equal(report.docker.limitsEffective, true, 'memory, pids and CPU limits were seen inside a test container');
  assert.equal(check('image toolcell/python').ok, true);
  const gvisorProfile = report.checks.find((c) => c.name === 'profile python-gvisor');
  if (gvisorProfile) assert.equal(gvisorProfile.ok, hasRunsc, 'a runsc profile is honoured only where runsc exists');
  assert.equal(code === 0, report.ok, 'exit code 0 exactly when every check passed');
  assert.equal(report.ok, report.checks.every((c) => c.ok));
  if (process.env.CI) assert.equal(code, 0, `CI installs everything the bundled profiles need: ${JSON.stringify(report.checks.filter((c) => !c.ok))}`);
});
