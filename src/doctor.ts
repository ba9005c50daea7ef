// `toolcell doctor`: what isolation this host offers for the loaded profiles; fails closed.
import {probeDocker, type DockerProbe} from './backends/container/probe.ts';
import {IsolateBackend} from './backends/isolate/isolate-backend.ts';
import {loadPackages} from './policy/load-packages.ts';
import {loadProfiles} from './policy/load-profiles.ts';
import {BUNDLED_PROFILES, BUNDLED_TOOLS} from './paths.ts';
import type {RuntimeOptions} from './runtime.ts';

/** One line of the doctor's report. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** Runs a trivial job in a fresh isolate in a real worker process; the truth about isolated-vm here. */
async function probeIsolate(): Promise<Check> {
  const backend = new IsolateBackend({workers: 1, poolSize: 0});
  try {
    const result = await backend.run({
      kind: 'isolate', id: 'doctor', source: 'export default (a) => a.x + 1', filename: 'doctor.js', args: {x: 41},
      limits: {timeoutMs: 5000, memoryMb: 16, outputBytes: 1024},
    }, {signal: new AbortController().signal});
    const ok = result.stdout === '42';
    return {name: 'isolated-vm', ok, detail: ok ? 'a fresh isolate ran in a worker process (memory and time limits in force)' : `unexpected result ${JSON.stringify(result)}`};
  } catch (err) {
    return {name: 'isolated-vm', ok: false, detail: `cannot run an isolate: ${(err as Error).message}`};
  } finally {
    await backend.close();
  }
}

function dockerChecks(probe: DockerProbe): Check[] {
  if (!probe.reachable) return [{name: 'docker', ok: false, detail: `engine not reachable: ${probe.reason ?? 'no answer'}`}];
  const checks: Check[] = [
    {name: 'docker', ok: true, detail: `engine ${probe.version ?? '?'} (API ${probe.apiVersion ?? '?'}), cgroup v${probe.cgroupVersion ?? '?'} (${probe.cgroupDriver ?? '?'})`},
    {
      name: 'limits',
      ok: probe.limitsEffective === true,
      detail: probe.limitsEffective === undefined ? 'not checked: no sandbox image to test with'
        : probe.limitsEffective ? 'memory, swap, pids and CPU limits took effect in a test container'
          : `a test container did not get its limits: ${JSON.stringify(probe.limitsSeen ?? {})}`,
    },
    {
      name: 'runsc',
      ok: probe.runsc && probe.runscWorks !== false,
      detail: !probe.runsc ? 'gVisor (runsc) is not registered with the engine; profiles with "runtime": "runsc" are refused'
        : probe.runscWorks === false ? 'runsc is registered but a test container failed under it'
          : probe.runscWorks ? 'gVisor registered and a test container ran under it' : 'gVisor registered (not tried: no image)',
    },
  ];
  for (const [image, present] of Object.entries(probe.images)) {
    checks.push({name: `image ${image}`, ok: present, detail: present ? 'present' : 'missing: run "toolcell images build"'});
  }
  return checks;
}

/**
 * `toolcell doctor`: reports which isolation this host offers, measured rather than assumed:
 * Node version, an isolate really run in a worker, the Docker engine, whether cgroup limits take
 * effect, gVisor, the sandbox images; then whether each loaded profile (and the tools that use
 * it) can be honoured here. Fails closed.
 * @returns exit code: 0 when every loaded profile can be honoured, 1 otherwise.
 */
export async function doctor(options: RuntimeOptions, json: boolean): Promise<number> {
  const node = process.versions.node;
  const checks: Check[] = [{name: 'node', ok: Number(node.split('.')[0]) >= 24, detail: `v${node} (24 required)`}];
  checks.push(await probeIsolate());
  const profiles = await loadProfiles(options.profileDirs?.length ? options.profileDirs : [BUNDLED_PROFILES]);
  const loaded = await loadPackages(options.toolDirs?.length ? options.toolDirs : [BUNDLED_TOOLS], profiles);
  // Container tools' images, and hosted servers' pinned image IDs.
  const imageOf = (t: {container?: {image: string}; server?: {imageId: string}}) => (t.container ? [t.container.image] : t.server ? [t.server.imageId] : []);
  const images = [...new Set([...loaded.tools.values()].flatMap(imageOf))];
  const docker = options.containers === false ? undefined : await probeDocker({images});
  if (docker) checks.push(...dockerChecks(docker));
  const isolateOk = checks.find((c) => c.name === 'isolated-vm')!.ok;
  for (const profile of profiles.values()) {
    const users = [...loaded.tools.values()].filter((t) => t.profile.name === profile.name);
    let problem: string | undefined;
    if (profile.backend === 'isolate') {
      problem = isolateOk ? undefined : 'isolates cannot run here';
    } else if (docker === undefined || !docker.reachable) {
      problem = 'needs a Docker engine';
    } else if (profile.runtime === 'runsc' && (!docker.runsc || docker.runscWorks === false)) {
      problem = 'needs gVisor (runsc), which this engine does not offer';
    } else if (docker.limitsEffective === false) {
      problem = 'container limits do not take effect on this engine';
    } else {
      const missing = [...new Set(users.flatMap((t) => imageOf(t).filter((image) => docker.images[image] === false)))];
      if (missing.length > 0) problem = `image(s) missing: ${missing.join(', ')}`;
    }
    const used = users.length > 0 ? `used by ${users.map((t) => t.name).join(', ')}` : 'used by no loaded tool';
    checks.push({name: `profile ${profile.name}`, ok: problem === undefined, detail: problem === undefined ? `can be honoured (${used})` : `CANNOT be honoured: ${problem} (${used})`});
  }
  for (const r of loaded.rejected) checks.push({name: `package ${r.name ?? r.dir}`, ok: false, detail: `rejected: ${r.reason}`});
  const ok = checks.every((c) => c.ok);
  if (json) {
    process.stdout.write(`${JSON.stringify({ok, checks, docker}, null, 2)}\n`);
  } else {
    for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(28)} ${c.detail}\n`);
    process.stdout.write(ok ? 'toolcell doctor: every loaded profile can be honoured on this host\n' : 'toolcell doctor: some profiles cannot be honoured on this host (see FAIL lines)\n');
  }
  return ok ? 0 : 1;
}
