// Hazard: a host user who can write a mount source's parent swaps the source for a symlink to
// /etc right after toolcell's last check (renameat2 RENAME_EXCHANGE, timed by inotify on the
// parent: the red team's swapper), so that the engine, which resolves the path tens of ms later,
// mounts /etc. As root, toolcell hands the engine a root-only staging path bound to the checked
// object, so the swap changes nothing; a call may be refused (mount-changed) but none sees /etc.
// The racer swaps after the 2nd and after the 3rd open of the source in a call (the last check
// before create, and before start), half the calls each.
// invariant: container:mounts:staged-as-root
// invariant: container:mounts:rechecked-at-create
import assert from 'node:assert/strict';
import {execFileSync, spawn, type ChildProcess} from 'node:child_process';
import {chmod, mkdir, readFile, symlink, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {STAGING_DIR} from '../../../src/backends/container/mount-staging.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {assertHealthy, containerJob, dockerAvailable, managedContainers, noSignal} from '../../support/docker.ts';
import {tempDir} from '../../support/temp.ts';

const ok = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});
const hasCc = (() => {
  try {
    execFileSync('cc', ['--version'], {stdio: 'ignore'});
    return true;
  } catch {
    return false;
  }
})();
const isRoot = process.geteuid?.() === 0;

/** The racer: after the NTH IN_OPEN of NAME in PARENT, wait DELAY µs, exchange NAME and EVIL, hold HOLD ms, swap back; at most ROUNDS times in TOTAL s. */
const SWAPPER_C = String.raw`
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <linux/fs.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static int xchg(int d,const char*a,const char*b){return syscall(SYS_renameat2,d,a,d,b,RENAME_EXCHANGE);}
int main(int c,char**v){
  if(c<9)return 2;
  const char*parent=v[1],*name=v[2],*evil=v[3];int nth=atoi(v[4]),delay=atoi(v[5]),hold=atoi(v[6]);double total=atof(v[7]);int rounds=atoi(v[8]);
  int dfd=open(parent,O_DIRECTORY|O_RDONLY);int in=inotify_init1(IN_NONBLOCK);
  if(dfd<0||in<0||inotify_add_watch(in,parent,IN_OPEN|IN_ONLYDIR)<0)return 1;
  double end=now()+total;int count=0,done=0;char buf[8192];
  while(now()<end&&done<rounds){
    struct pollfd p={in,POLLIN,0};if(poll(&p,1,1000)<=0){count=0;continue;}
    ssize_t n=read(in,buf,sizeof buf);if(n<=0)continue;
    for(char*q=buf;q<buf+n;){struct inotify_event*e=(void*)q;q+=sizeof(*e)+e->len;
      if(e->len&&strcmp(e->name,name)==0&&(e->mask&IN_OPEN)&&++count==nth){
        if(delay)usleep(delay);
        if(xchg(dfd,name,evil)!=0)return 1;
        usleep(hold*1000);xchg(dfd,name,evil);done++;count=0;
        printf("swapped\n");fflush(stdout);
        while(read(in,buf,sizeof buf)>0);
        break;}}
  }
  return 0;}
`;

/** A tool that exits within milliseconds (the red team's: it has exited before a check after start). */
const LIST = ['/usr/bin/ls', '/workspace'];
const CALLS = 6;

describe('a host user racing the engine\'s mount of a source cannot redirect it (as root: staging)', {skip: (!ok && 'no Docker engine') || (!hasCc && 'no C compiler for the racer') || (!isRoot && 'staging needs root; without it the race is documented, not closed')}, () => {
  let backend: ContainerBackend;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let swapper: string;
  const children: ChildProcess[] = [];
  before(async () => {
    backend = new ContainerBackend();
    dir = await tempDir('toolcell-race-');
    await writeFile(join(dir.path, 'swapper.c'), SWAPPER_C);
    swapper = join(dir.path, 'swapper');
    execFileSync('cc', ['-O1', '-o', swapper, join(dir.path, 'swapper.c')], {timeout: 60_000});
  });
  after(async () => {
    for (const child of children) if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
    await backend.close();
    await dir.dispose();
  });

  test(`${CALLS} cold calls while the racer swaps the workspace with a symlink to /etc: none lists /etc`, {timeout: 180_000}, async (t) => {
    const tally: Record<string, number> = {};
    const swaps: string[] = [];
    for (const nth of [2, 3]) {
      const parent = join(dir.path, `nth${nth}`);
      const ws = join(parent, 'ws');
      await mkdir(ws, {recursive: true});
      await chmod(ws, 0o755);
      await writeFile(join(ws, 'WS_MARKER'), 'mine');
      await symlink('/etc', join(parent, 'evil'));
      const child = spawn(swapper, [parent, 'ws', 'evil', String(nth), '5000', '300', '90', String(CALLS / 2)], {stdio: ['ignore', 'pipe', 'ignore']});
      children.push(child);
      child.stdout!.setEncoding('utf8').on('data', (d: string) => swaps.push(d));
      await new Promise((r) => setTimeout(r, 200)); // the watch is in place
      const mounts = [{source: ws, target: '/workspace', readOnly: true}];
      for (let i = 0; i < CALLS / 2; i++) {
        let kind: string;
        try {
          const r = await backend.run(containerJob(LIST, {image: 'toolcell/shell', mounts}), {signal: noSignal()});
          kind = r.stdout.includes('WS_MARKER') ? 'workspace' : r.stdout.includes('passwd') ? 'REDIRECTED' : `other:${r.stdout.slice(0, 60)}${r.stderr.slice(0, 60)}`;
        } catch (err) {
          assert.ok(err instanceof ToolcellError, String(err));
          kind = `refused:${String(err.data.reason)}`;
        }
        tally[kind] = (tally[kind] ?? 0) + 1;
        await new Promise((r) => setTimeout(r, 1_300)); // the racer's per-call count resets after 1 s idle
      }
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    t.diagnostic(`outcomes ${JSON.stringify(tally)}, ${swaps.length} swaps`);
    assert.equal(tally.REDIRECTED ?? 0, 0, `a call listed /etc: ${JSON.stringify(tally)} (${swaps.length} swaps)`);
    assert.ok(Object.keys(tally).every((k) => ['workspace', 'refused:mount-changed'].includes(k)), JSON.stringify(tally));
    assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), [], 'no container is left');
    const staged = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(` ${STAGING_DIR}/${process.pid}-`));
    assert.deepEqual(staged, [], 'no staging mount is left');
    await assertHealthy(backend);
  });
});
