// `toolcell profiles`: each loaded profile, its backend and what it grants, in words or as JSON.
import {networkInWords} from './egress/policy.ts';
import {loadProfiles} from './policy/load-profiles.ts';
import type {Profile} from './policy/profile-schema.ts';
import {escapeForTerminal, escapeJsonForTerminal} from './terminal-text.ts';

/** What one profile grants, one phrase per kind of grant (the text of `toolcell profiles`). */
export interface ProfileGrantsInWords {
  limits: string;
  network: string;
  filesystem: string;
  commands: string;
  runtime: string;
}

/**
 * Describes a profile's grants in words: limits with their units (ms, MB, bytes), network,
 * filesystem, commands and runtime. Pure. What a profile does not name is denied, and the words
 * say so ("none"). Not a substitute for the file: the words summarise, the JSON is the policy.
 */
export function profileInWords(profile: Profile): ProfileGrantsInWords {
  if (profile.backend === 'isolate') {
    const l = profile.limits;
    return {
      limits: `timeout ${l.timeoutMs} ms, CPU time ${l.cpuTimeMs ?? l.timeoutMs} ms, memory ${l.memoryMb} MB (V8 heap), output ${l.outputBytes} bytes`,
      network: networkInWords(profile.network, 'none (no fetch, no sockets)'),
      filesystem: 'none',
      commands: 'none (JavaScript only: no processes)',
      runtime: 'a fresh V8 isolate (isolated-vm) in a killable worker process',
    };
  }
  const l = profile.limits;
  const fs = profile.filesystem;
  const tmpfs = Object.entries(fs.tmpfs).map(([path, size]) => `tmpfs ${path} ${size} (noexec)`);
  const mounts = fs.mounts.map((m) => `${m.source} at ${m.target} (${m.readOnly ? 'read-only' : 'read-write'})`);
  return {
    limits: `timeout ${l.timeoutMs} ms, memory ${l.memoryMb} MB (no swap), cpus ${l.cpus}, pids ${l.pids}, output ${l.outputBytes} bytes`,
    network: networkInWords(profile.network, 'none (loopback only)'),
    filesystem: [`root ${fs.readOnlyRoot ? 'read-only' : 'writable'}`, ...tmpfs, ...(mounts.length > 0 ? [`mounts ${mounts.join(', ')}`] : ['no host directory'])].join('; '),
    commands: `${profile.commands.join(' ')} (allowlist for argv[0])`,
    runtime: profile.runtime === 'runsc' ? 'runsc (gVisor): a container under a user-space kernel' : `${profile.runtime}: a hardened container (all capabilities dropped, no-new-privileges, a uid of its own)`,
  };
}

/**
 * `toolcell profiles [--profiles DIR]... [--no-bundled-profiles] [--json]`: loads the profiles as
 * `serve` would (same directories, same strictness) and prints each one's name, backend,
 * description and grants in words; `--json` prints `{profiles: [{...profile, grants: words}]}`.
 * @param dirs profile directories in load order (`withBundled`)
 * @returns exit code 0
 * @throws ConfigError when a profile is invalid or a directory cannot be read (the CLI exits 2)
 */
export async function profilesCommand(dirs: readonly string[], json: boolean): Promise<number> {
  const profiles = [...(await loadProfiles(dirs)).values()].sort((a, b) => a.name.localeCompare(b.name));
  // Profile names and descriptions are the operator's text: control characters escaped, as list does.
  const write = (text: string) => process.stdout.write(`${escapeForTerminal(text)}\n`);
  if (json) {
    process.stdout.write(`${escapeJsonForTerminal(JSON.stringify({profiles: profiles.map(({$schema: _schema, ...profile}) => ({...profile, grants: profileInWords(profile as Profile)}))}, null, 2))}\n`);
    return 0;
  }
  write(`${profiles.length} profile(s):`);
  for (const profile of profiles) {
    write('');
    write(`${profile.name}  [${profile.backend}]${profile.description ? `  ${profile.description}` : ''}`);
    for (const [kind, words] of Object.entries(profileInWords(profile))) write(`  ${kind.padEnd(11)} ${words}`);
  }
  return 0;
}
