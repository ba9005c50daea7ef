// Exit attribution (issue 11 item 6): OOM only with a witness, 137 alone is a signal, pids from
// the cgroup, as a table of evidence → result.
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {attributeExit, type ExitAttribution, type ExitEvidence} from '../../../../src/backends/container/exit-reason.ts';

const LIMIT = 64 * 2 ** 20;
type Row = [what: string, evidence: ExitEvidence, expected: Partial<ExitAttribution>];
const rows: Row[] = [
  ['a clean exit', {status: 0}, {failed: false, outOfMemory: false, pidsLimited: false, exitCode: 0}],
  ['exit 0 despite an OOM kill of a child: the tool\'s own status wins', {status: 0, oomEvent: true, cgroup: {memory: {oomKills: 1}}}, {failed: false, outOfMemory: false}],
  ['a plain failure', {status: 1}, {failed: true, outOfMemory: false, pidsLimited: false, exitCode: 1, signal: undefined}],
  ['137 with no witness: killed by signal 9, not OOM (self-kill, killed launcher, gVisor fork bomb)', {status: 137}, {failed: true, outOfMemory: false, exitCode: 137, signal: 9}],
  ['137 with a cgroup that saw no OOM kill', {status: 137, cgroup: {memory: {oomKills: 0, failcnt: 0, maxUsageBytes: 10, limitBytes: LIMIT}}}, {outOfMemory: false, signal: 9}],
  ['143: killed by SIGTERM', {status: 143}, {outOfMemory: false, signal: 15}],
  ['an exit status above 192 is a status, not a signal', {status: 255}, {exitCode: 255, signal: undefined}],
  ['engine OOMKilled', {status: 137, engineOomKilled: true}, {failed: true, outOfMemory: true, exitCode: undefined, signal: undefined}],
  ['engine oom event', {status: 137, oomEvent: true}, {outOfMemory: true}],
  ['kernel oom-kill record', {status: 137, kernelOomLogged: true}, {outOfMemory: true}],
  ['cgroup oom_kill count (warm launcher reported 137)', {status: 137, cgroup: {memory: {oomKills: 1}}}, {outOfMemory: true}],
  ['an OOM-killed child made the tool exit 1: still the memory limit', {status: 1, cgroup: {memory: {oomKills: 1}}}, {outOfMemory: true, exitCode: undefined}],
  ['old kernel without oom_kill: usage at the limit, failed charges, SIGKILL', {status: 137, cgroup: {memory: {failcnt: 3, maxUsageBytes: LIMIT, limitBytes: LIMIT}}}, {outOfMemory: true}],
  ['old kernel: limit reached but the tool exited 1 by itself', {status: 1, cgroup: {memory: {failcnt: 3, maxUsageBytes: LIMIT, limitBytes: LIMIT}}}, {outOfMemory: false}],
  ['unknown status, no witness', {status: undefined}, {failed: true, outOfMemory: false, exitCode: undefined}],
  ['pids cgroup refused forks', {status: 1, cgroup: {pids: {refused: 5}}}, {failed: true, pidsLimited: true, exitCode: 1}],
  ['pids cgroup refused forks, killed by signal', {status: 137, cgroup: {pids: {refused: 5}}}, {pidsLimited: true, signal: 9, outOfMemory: false}],
  ['pids cgroup read, no refusal: a faked fork-failure message is ignored', {status: 1, cgroup: {pids: {refused: 0}}, stderrTail: 'fork: Resource temporarily unavailable'}, {pidsLimited: false}],
  ['no pids cgroup: the fork-failure message is the fallback', {status: 1, stderrTail: "sh: can't fork"}, {pidsLimited: true}],
  ['OOM wins over pids', {status: 137, oomEvent: true, cgroup: {pids: {refused: 5}}}, {outOfMemory: true, pidsLimited: false}],
  ['success never reports pids', {status: 0, cgroup: {pids: {refused: 5}}}, {failed: false, pidsLimited: false}],
];

describe('attributeExit', () => {
  for (const [what, evidence, expected] of rows) {
    test(what, () => {
      const got = attributeExit(evidence);
      for (const [k, v] of Object.entries(expected)) assert.equal(got[k as keyof ExitAttribution], v, `${k} for ${what}`);
    });
  }
  test('a memory bomb is never reported as success: any OOM witness with a non-zero status fails', () => {
    for (const w of [{engineOomKilled: true}, {oomEvent: true}, {kernelOomLogged: true}, {cgroup: {memory: {oomKills: 2}}}]) {
      for (const status of [1, 137, undefined]) assert.equal(attributeExit({status, ...w}).failed, true);
    }
  });
});
