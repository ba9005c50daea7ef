// `npm test`: builds (tsc + tool bundles, so e2e tests run the code that is checked in),
// typechecks the tests against the source (tsconfig.test.json: tests run by type stripping,
// which checks nothing), then runs every test file with node's test runner on Node 24, each file in its own process (a V8 crash
// fails one file, not the run). Pass file globs to run a subset: `npm test -- test/unit`.
import {spawnSync} from 'node:child_process';

const run = (args) => spawnSync(process.execPath, args, {stdio: 'inherit'});
const npm = spawnSync('npm', ['run', '--silent', 'build'], {stdio: 'inherit', shell: false});
if (npm.status !== 0) process.exit(npm.status ?? 1);
const typecheck = spawnSync('npx', ['--no-install', 'tsc', '-p', 'tsconfig.test.json'], {stdio: 'inherit', shell: false});
if (typecheck.status !== 0) process.exit(typecheck.status ?? 1);

const patterns = process.argv.slice(2).map((p) => (p.endsWith('.ts') ? p : `${p.replace(/\/$/, '')}/**/*.test.ts`));
const result = run([
  '--no-node-snapshot',
  '--test',
  '--test-concurrency=2',
  '--test-timeout=600000',
  ...(patterns.length ? patterns : ['test/**/*.test.ts']),
]);
process.exit(result.status ?? 1);
