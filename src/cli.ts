#!/usr/bin/env node
/**
 * `toolcell` command entry. Node 24 is required (isolated-vm 7); when started by an older
 * `node` (for example a desktop client's PATH), it re-runs itself with the Node 24 binary that
 * `npm ci` installed under node_modules (the `node` npm package), passing stdio through.
 */
import {spawn} from 'node:child_process';
import {existsSync} from 'node:fs';
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
  const child = spawn(node24, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: {...process.env, TOOLCELL_REEXEC: '1'},
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 15 : 1)));
} else {
  const {main} = await import('./cli-main.ts');
  process.exitCode = await main(process.argv.slice(2));
}
