#!/usr/bin/env -S node --max-semi-space-size=4 --max-old-space-size=512
/**
 * `toolcell` command entry. Node 24 is required (isolated-vm 7); when started by an older
 * `node` (for example a desktop client's PATH), it re-runs itself with the Node 24 binary that
 * `npm ci` installed under node_modules (the `node` npm package), passing stdio through.
 *
 * Heap flags (the shebang, `npm start`, the Dockerfile and that re-run use them): a 4 MB
 * semi-space and a 512 MB old space keep a long-running server's RSS flat. Without them V8
 * lets short-lived per-call garbage accumulate in old space for long (RSS seen growing from
 * 125 to 285 MB over 20,000 calls, flat at ~115 MB with them; bench/run.mjs measures it).
 */
import {spawn} from 'node:child_process';
import {existsSync} from 'node:fs';
import {constants} from 'node:os';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  const here = dirname(fileURLToPath(import.meta.url));
  const node24 = join(here, '..', 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(node24) || process.env.TOOLCELL_REEXEC === '1') {
    process.stderr.write(`toolcell: Node.js 24 is required (this is ${process.version}); run "npm ci" in the toolcell directory or install Node 24.\n`);
    process.exit(2);
  }
  const child = spawn(node24, ['--max-semi-space-size=4', '--max-old-space-size=512', fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: {...process.env, TOOLCELL_REEXEC: '1'},
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + constants.signals[signal] : 1)));
} else {
  const {main} = await import('./cli-main.ts');
  process.exitCode = await main(process.argv.slice(2));
}
