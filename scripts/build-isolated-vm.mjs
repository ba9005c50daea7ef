#!/usr/bin/env node
/**
 * Carries toolcell's patches to isolated-vm's native code: applies `patches/isolated-vm-<version>-*.patch`
 * to node_modules/isolated-vm and rebuilds it from source against the running Node's headers.
 *
 *   node_modules/.bin/node scripts/build-isolated-vm.mjs [--check] [--force]
 *       [--nodedir DIR] [--node-gyp FILE] [--jobs N] [--deadline-min N]
 *
 * Why: isolated-vm ships prebuilt binaries, so a fix to its C++ (see each patch's header for
 * what it fixes) reaches toolcell only through a local build. node-gyp-build (isolated-vm's
 * loader) prefers `build/Release/isolated_vm.node` over the prebuilds, so after this script the
 * patched build is what `import 'isolated-vm'` loads; `npm ci`/`npm install` re-extract the
 * package and drop it (run this again after them).
 *
 * Steps, each failing loudly (message on stderr, exit code 1) with the cause and what is allowed:
 * 1. the package's version must be the one the patches are named for (else: update the patches);
 * 2. the Node headers: `--nodedir`, else the `node` npm package's platform package
 *    (node_modules/node/node_modules/node-<platform>-<arch>, its `include/node`); their
 *    NODE_MODULE_VERSION must equal the running Node's `process.versions.modules` (ABI);
 * 3. each patch is applied by exact context (no fuzz): a hunk whose result is already in place
 *    counts as applied, a hunk whose context is not found once fails the run;
 * 4. unless `build/toolcell-patches.json` already records these patches for this Node ABI and
 *    the binary is there (or `--force`): `node-gyp rebuild --release --nodedir` with the running
 *    Node (python3, make and a C++20 compiler must be installed: Debian `build-essential
 *    python3`), in its own process group, killed at `--deadline-min` (default 30 min); debug
 *    symbols are stripped when `strip` exists (27 MB to about 1 MB), and the intermediate objects
 *    (build/Release/obj.target, .deps, nortti.a: about 105 MB) are removed, also on a run with
 *    nothing to build, so that node_modules (copied whole into the service image) stays small;
 * 5. a self-test in a child process (own deadline 30 s): a trivial isolate runs, and an
 *    unhandled rejection whose `message` and `stack` getters spin lets its thread go within
 *    3 s of `dispose()` (unpatched, that thread spins for ever).
 * `--check` does steps 1 and 3 without writing (a patch not yet applied fails; no headers are
 * needed, so it works after `npm prune`), checks the record, and runs the self-test: exit 0
 * only when the patched build is the one that loads.
 *
 * It never downloads anything (node-gyp gets `--nodedir`; no headers tarball is fetched).
 * Time on a 2-CPU host: about 3 min of CPU (12.7 min wall with the host's CPUs oversubscribed,
 * load average 19); a run with nothing to do takes about 2 s (the self-test).
 * Does NOT guarantee: that the patches are correct for another isolated-vm version (it refuses
 * one); that a prebuilt binary is not loaded when `build/Release` is removed afterwards (the
 * self-test is what tells).
 */
import {spawn, spawnSync} from 'node:child_process';
import {createHash} from 'node:crypto';
import {existsSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PATCH_DIR = path.join(ROOT, 'patches');
const RECORD = 'build/toolcell-patches.json';
const BINARY = 'build/Release/isolated_vm.node';
const SELF_TEST_DEADLINE_MS = 30_000;

class Failure extends Error {}

function log(line) {
  process.stderr.write(`build-isolated-vm: ${line}\n`);
}

function parseArgs(argv) {
  const options = {check: false, force: false, nodedir: undefined, nodeGyp: undefined, jobs: os.availableParallelism(), deadlineMin: 30};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Failure(`${arg} needs a value`);
      return v;
    };
    const positive = (name, text) => {
      const n = Number(text);
      if (!Number.isInteger(n) || n < 1) throw new Failure(`${name} must be a positive integer, got ${JSON.stringify(text)}`);
      return n;
    };
    if (arg === '--check') options.check = true;
    else if (arg === '--force') options.force = true;
    else if (arg === '--nodedir') options.nodedir = path.resolve(value());
    else if (arg === '--node-gyp') options.nodeGyp = path.resolve(value());
    else if (arg === '--jobs') options.jobs = positive('--jobs', value());
    else if (arg === '--deadline-min') options.deadlineMin = positive('--deadline-min', value());
    else throw new Failure(`unknown argument ${JSON.stringify(arg)} (allowed: --check, --force, --nodedir DIR, --node-gyp FILE, --jobs N, --deadline-min N)`);
  }
  return options;
}

/** The isolated-vm package directory and version, as `import 'isolated-vm'` from ROOT resolves it. */
function findPackage() {
  const require = createRequire(path.join(ROOT, 'package.json'));
  let manifest;
  try {
    manifest = require.resolve('isolated-vm/package.json');
  } catch {
    throw new Failure(`isolated-vm is not installed under ${ROOT}/node_modules (run npm ci first)`);
  }
  const {version} = JSON.parse(readFileSync(manifest, 'utf8'));
  return {dir: path.dirname(manifest), version};
}

/** The patches for `version`, sorted by name, with their text and sha256. */
function findPatches(version) {
  const prefix = `isolated-vm-${version}-`;
  const all = existsSync(PATCH_DIR) ? readdirSync(PATCH_DIR).filter((f) => f.startsWith('isolated-vm-') && f.endsWith('.patch')) : [];
  const mine = all.filter((f) => f.startsWith(prefix)).sort();
  if (mine.length === 0) {
    throw new Failure(`no patch for isolated-vm ${version} in ${PATCH_DIR} (found: ${all.join(', ') || 'none'}); port the patches to this version or install the version they name`);
  }
  return mine.map((name) => {
    const text = readFileSync(path.join(PATCH_DIR, name), 'utf8');
    return {name, text, sha256: createHash('sha256').update(text).digest('hex')};
  });
}

/**
 * The hunks of a unified diff (text before the first `--- ` line is its description), each
 * as the target file (relative, `b/` stripped) and the exact old and new line blocks.
 */
function parsePatch(name, text) {
  const lines = text.split('\n');
  const hunks = [];
  let file;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith('+++ ')) {
      file = line.slice(4).split('\t')[0].replace(/^b\//, '');
      if (file.startsWith('/') || file.split('/').includes('..')) throw new Failure(`${name}: target ${file} is not a path inside the package`);
    } else if (line.startsWith('@@ ')) {
      if (file === undefined) throw new Failure(`${name}: hunk before any +++ line`);
      const oldLines = [];
      const newLines = [];
      for (i++; i < lines.length && !lines[i].startsWith('@@ ') && !lines[i].startsWith('--- ') && !(lines[i] === '' && i === lines.length - 1); i++) {
        const body = lines[i].slice(1);
        if (lines[i].startsWith(' ')) { oldLines.push(body); newLines.push(body); }
        else if (lines[i].startsWith('-')) oldLines.push(body);
        else if (lines[i].startsWith('+')) newLines.push(body);
        else if (!lines[i].startsWith('\\')) throw new Failure(`${name}: unexpected line in hunk: ${JSON.stringify(lines[i])}`);
      }
      i--;
      hunks.push({file, old: oldLines.join('\n') + '\n', new: newLines.join('\n') + '\n'});
    }
  }
  if (hunks.length === 0) throw new Failure(`${name}: no hunks found`);
  return hunks;
}

function count(haystack, needle) {
  let n = 0;
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + 1)) n++;
  return n;
}

/** Applies (or with `dryRun` only checks) every hunk; returns how many were newly applied. */
function applyPatches(dir, patches, dryRun) {
  let applied = 0;
  for (const patch of patches) {
    for (const hunk of parsePatch(patch.name, patch.text)) {
      const target = path.join(dir, hunk.file);
      if (!existsSync(target)) throw new Failure(`${patch.name}: ${hunk.file} does not exist in ${dir}`);
      const source = readFileSync(target, 'utf8');
      if (count(source, hunk.new) === 1 && count(source, hunk.old) === 0) continue;
      if (count(source, hunk.old) !== 1) {
        throw new Failure(`${patch.name}: a hunk for ${hunk.file} matches neither the original nor the patched text exactly once; the source is not isolated-vm's as the patch expects (reinstall with npm ci)`);
      }
      if (dryRun) throw new Failure(`${patch.name} is not applied to ${dir} (run this script without --check)`);
      writeFileSync(target, source.replace(hunk.old, () => hunk.new));
      applied++;
    }
  }
  return applied;
}

/** `--nodedir` or the `node` npm package's headers, checked against the running Node's ABI. */
function findNodedir(explicit) {
  const candidates = explicit ? [explicit] : [
    path.join(ROOT, 'node_modules', 'node', 'node_modules', `node-${process.platform}-${process.arch}`),
    path.resolve(path.dirname(process.execPath), '..'),
  ];
  for (const dir of candidates) {
    const header = path.join(dir, 'include', 'node', 'node_version.h');
    if (!existsSync(header)) continue;
    const text = readFileSync(header, 'utf8');
    const abi = [...text.matchAll(/#define NODE_MODULE_VERSION (\d+)/g)].at(-1)?.[1];
    if (abi !== process.versions.modules) {
      throw new Failure(`headers in ${dir} are for Node ABI ${abi ?? 'unknown'}, the running Node ${process.version} is ABI ${process.versions.modules}; run this script with the Node that runs toolcell (node_modules/.bin/node)`);
    }
    return dir;
  }
  throw new Failure(`no Node headers (include/node/node_version.h) in ${candidates.join(' or ')}; pass --nodedir DIR`);
}

function findNodeGyp(explicit) {
  const require = createRequire(path.join(ROOT, 'package.json'));
  const candidates = explicit ? [explicit] : [
    process.env.npm_execpath ? path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js') : undefined,
    (() => { try { return require.resolve('node-gyp/bin/node-gyp.js'); } catch { return undefined; } })(),
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
  ].filter(Boolean);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Failure(`node-gyp not found (looked in ${candidates.join(', ')}); install npm or pass --node-gyp FILE`);
  return found;
}

function requireTools() {
  const missing = ['python3', 'make', 'c++'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`], {stdio: 'ignore'}).status !== 0);
  if (missing.length > 0) throw new Failure(`missing build tools: ${missing.join(', ')} (Debian: apt-get install build-essential python3)`);
}

/** Runs `command` in its own process group, output to stderr; kills the group at `deadlineMs`. */
function run(command, args, options, deadlineMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {...options, stdio: ['ignore', 'inherit', 'inherit'], detached: true});
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    }, deadlineMs);
    child.on('error', (error) => { clearTimeout(timer); reject(new Failure(`${command} could not start: ${error.message}`)); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Failure(`${path.basename(command)} ${args[0] ?? ''} did not finish within ${Math.round(deadlineMs / 60_000)} min (killed); raise --deadline-min on a slow host`));
      else if (code !== 0) reject(new Failure(`${path.basename(command)} ${args.join(' ')} failed (${signal ?? `exit code ${code}`}); see its output above`));
      else resolve();
    });
  });
}

/**
 * Loads the package in a fresh Node and attacks it: an unhandled rejection whose getters spin
 * must let its thread go after dispose(). Prints `ok` on success.
 */
const SELF_TEST = `
const ivm = require(process.argv[1]);
const fail = (m) => { console.log(m); process.exit(1); };
const trivial = new ivm.Isolate({memoryLimit: 16});
if (trivial.compileScriptSync('6 * 7').runSync(trivial.createContextSync()) !== 42) fail('a trivial isolate did not return 42');
trivial.dispose();
const isolate = new ivm.Isolate({memoryLimit: 16});
const script = isolate.compileScriptSync('Promise.reject({get message() { for (;;); }, get stack() { for (;;); }}); 1');
let settled = false;
script.run(isolate.createContextSync(), {timeout: 100}).then(() => { settled = true; }, () => { settled = true; });
setTimeout(() => {
  isolate.dispose();
  const disposedAt = Date.now();
  const poll = setInterval(() => {
    if (settled) { console.log('ok'); process.exit(0); }
    if (Date.now() - disposedAt > 3000) fail('the isolate thread still runs 3 s after dispose(): the unpatched isolated-vm is loaded');
  }, 20);
}, 300);
`;

async function selfTest(dir) {
  const child = spawn(process.execPath, ['-e', SELF_TEST, dir], {stdio: ['ignore', 'pipe', 'inherit']});
  let out = '';
  // The verdict is the child's first line; a wedged isolate thread can keep the child from
  // exiting, so it is killed once that line is in (or at the deadline).
  child.stdout.on('data', (chunk) => {
    out += chunk;
    if (out.includes('\n')) child.kill('SIGKILL');
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), SELF_TEST_DEADLINE_MS);
  const code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? s)));
  clearTimeout(timer);
  const verdict = out.split('\n')[0].trim();
  if (verdict !== 'ok') throw new Failure(`self-test failed (${code}): ${verdict || 'no output'}`);
}

function readRecord(dir) {
  try {
    return JSON.parse(readFileSync(path.join(dir, RECORD), 'utf8'));
  } catch {
    return undefined;
  }
}

function recordMatches(record, patches) {
  return record !== undefined && record.modules === process.versions.modules
    && JSON.stringify(record.patches) === JSON.stringify(patches.map(({name, sha256}) => ({name, sha256})));
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const pkg = findPackage();
  const patches = findPatches(pkg.version);
  const upToDate = () => recordMatches(readRecord(pkg.dir), patches) && existsSync(path.join(pkg.dir, BINARY));
  if (options.check) {
    applyPatches(pkg.dir, patches, true);
    if (!upToDate()) throw new Failure(`${pkg.dir}/${BINARY} was not built from these patches for ABI ${process.versions.modules} (run this script without --check)`);
    await selfTest(pkg.dir);
    log(`isolated-vm ${pkg.version} in ${pkg.dir} is patched (${patches.map((p) => p.name).join(', ')}) and built; self-test passed`);
    return;
  }
  const applied = applyPatches(pkg.dir, patches, false);
  if (applied > 0 || options.force || !upToDate()) {
    requireTools();
    // Only a build needs the headers (`--check` does not: a pruned install may no longer have them).
    const nodedir = findNodedir(options.nodedir);
    const nodeGyp = findNodeGyp(options.nodeGyp);
    const started = Date.now();
    log(`building isolated-vm ${pkg.version} in ${pkg.dir} with ${patches.length} patch(es), headers ${nodedir}, ${options.jobs} jobs`);
    await run(process.execPath, [nodeGyp, 'rebuild', '--release', '-j', String(options.jobs), `--nodedir=${nodedir}`], {
      cwd: pkg.dir,
      // No download: the headers are local; npm_config_* of an enclosing npm run must not redirect it.
      // The running Node first on PATH: isolated-vm's binding.gyp asks `node` (from PATH) for
      // process.config's link libraries, and a distribution's Node built with shared zlib, ICU,
      // c-ares... (Debian's) names libraries the running Node 24 neither has nor needs.
      env: {...process.env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`, npm_config_nodedir: nodedir, npm_config_build_from_source: 'true'},
    }, options.deadlineMin * 60_000);
    if (spawnSync('sh', ['-c', 'command -v strip'], {stdio: 'ignore'}).status === 0) {
      await run('strip', ['--strip-debug', path.join(pkg.dir, BINARY)], {}, 60_000);
    } else {
      log('strip not found: the binary keeps its debug symbols (about 27 MB)');
    }
    writeFileSync(path.join(pkg.dir, RECORD), JSON.stringify({
      patches: patches.map(({name, sha256}) => ({name, sha256})),
      node: process.version,
      modules: process.versions.modules,
      builtAt: new Date().toISOString(),
    }, null, 2) + '\n');
    log(`built in ${Math.round((Date.now() - started) / 1000)} s`);
  } else {
    log(`isolated-vm ${pkg.version} is already patched and built for ABI ${process.versions.modules}`);
  }
  for (const leftover of ['obj.target', '.deps', 'nortti.a']) {
    rmSync(path.join(pkg.dir, 'build', 'Release', leftover), {recursive: true, force: true});
  }
  await selfTest(pkg.dir);
  log('self-test passed: a spinning unhandled rejection lets its thread go at dispose()');
}

main().catch((error) => {
  log(error instanceof Failure ? error.message : (error?.stack ?? String(error)));
  process.exitCode = 1;
});
