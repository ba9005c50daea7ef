#!/usr/bin/env -S node --max-semi-space-size=4 --max-old-space-size=512
/**
 * `toolcell` command entry. Node 24 is required (isolated-vm 7); when started by an older
 * `node` (for example a desktop client's PATH), it re-runs itself with the Node 24 binary of the
 * `node` npm package (a dependency of toolcell), passing stdio and signals through. That package
 * is found the way Node resolves packages from this file (`createRequire(...).resolve`): under
 * toolcell's own node_modules after `npm ci` or a global install, or in an enclosing
 * node_modules where npm hoisted it when toolcell is a project's dependency. The re-run is
 * marked (`TOOLCELL_REEXEC=1`) so that a `node` package that is not Node 24 ends in the hint,
 * not in a loop. Not checked: which `node` package Node's resolution finds (the same trust as
 * any other dependency of toolcell, including `NODE_PATH`).
 *
 * Heap flags (the shebang, `npm start`, the Dockerfile and that re-run use them): a 4 MB
 * semi-space and a 512 MB old space keep a long-running server's RSS flat. Without them V8
 * lets short-lived per-call garbage accumulate in old space for long (RSS seen growing from
 * 125 to 285 MB over 20,000 calls, flat at ~115 MB with them; bench/run.mjs measures it).
 */
import {spawn} from 'node:child_process';
import {existsSync} from 'node:fs';
import {createRequire} from 'node:module';
import {constants} from 'node:os';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

/** The Node 24 binary of the `node` npm package as Node's package resolution finds it from here, or undefined. */
function bundledNode(): string | undefined {
  try {
    const bin = join(dirname(createRequire(import.meta.url).resolve('node/package.json')), 'bin', 'node');
    return existsSync(bin) ? bin : undefined;
  } catch {
    return undefined;
  }
}

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  const node24 = process.env.TOOLCELL_REEXEC === '1' ? undefined : bundledNode();
  if (node24 === undefined) {
    process.stderr.write(`toolcell: Node.js 24 is required (this is ${process.version}), and the Node 24 of toolcell's dependency "node" `
      + `(the npm package) ${process.env.TOOLCELL_REEXEC === '1' ? 'is not Node 24' : 'was not found'}. Install Node 24 and put it first on PATH, `
      + `or reinstall toolcell the way you installed it (in a checkout: "npm ci"), letting npm run the "node" package's install script.\n`);
    process.exit(2);
  }
  const child = spawn(node24, ['--max-semi-space-size=4', '--max-old-space-size=512', fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: {...process.env, TOOLCELL_REEXEC: '1'},
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + constants.signals[signal] : 1)));
} else {
  // serve --http: SIGHUP (a certificate reload) must not kill the process while it starts.
  if (process.argv.slice(2).some((a) => a === '--http' || a.startsWith('--http='))) (await import('./frontend/http/early-hangup.ts')).holdHangups();
  const {main} = await import('./cli-main.ts');
  process.exitCode = await main(process.argv.slice(2));
}
