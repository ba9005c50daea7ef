import assert from 'node:assert/strict';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {runCli, type CliRun} from '../../support/mcp-stdio.ts';
import {tempDir} from '../../support/temp.ts';

/**
 * A hostile tool package tries to write terminal control sequences through what list, doctor,
 * check and build print about it: its directory name, the error its code throws at top level,
 * an import specifier. An operator vetting a third-party package runs exactly these commands.
 */
// invariant: cli:output:no-terminal-control

const ESC = '\u001b[2J\u001b]0;owned\u0007\u009b31m\u202e';
// Raw control characters, other than the newlines that end lines.
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

const cli = (args: string[], cwd: string) => runCli(args, {cwd, timeoutMs: 120_000});

let dir: Awaited<ReturnType<typeof tempDir>>;
const tool = (name: string) => ({name, description: 'd', profile: 'isolate-strict', inputSchema: {type: 'object'}, isolate: {entry: `dist/${name}.js`}});
before(async () => {
  dir = await tempDir('toolcell-hostile-output-');
  await dir.write(`tools/evil${ESC}/toolcell.json`, {name: 'evil', version: '1.0.0', tools: [{...tool('x'), profile: `nope${ESC}`}]});
  await dir.write('tools/fine/toolcell.json', {name: 'fine', version: '1.0.0', tools: [tool('ok')]});
  await dir.write('tools/fine/dist/ok.js', 'export default () => "ok"');
  await dir.write('pkg/toolcell.json', {name: 'throws', version: '1.0.0', tools: [tool('boom'), tool('imports')]});
  await dir.write('pkg/dist/boom.js', `throw new Error(${JSON.stringify(`fake ok${ESC}`)});\nexport default () => 1;\n`);
  await dir.write('pkg/dist/imports.js', `import x from ${JSON.stringify(`lib${ESC}`)};\nexport default () => x;\n`);
  await dir.write('src-pkg/toolcell.json', {name: 'srcpkg', version: '1.0.0', tools: [tool('imp')]});
  await dir.write('src-pkg/src/imp.js', `import x from ${JSON.stringify(`lib${ESC}`)};\nexport default () => x;\n`);
});
after(() => dir.dispose());

const assertClean = (label: string, r: CliRun) => {
  assert.doesNotMatch(r.stdout, RAW, `${label}: stdout carries a control character: ${JSON.stringify(r.stdout)}`);
  assert.doesNotMatch(r.stderr, RAW, `${label}: stderr carries a control character: ${JSON.stringify(r.stderr)}`);
};

test('list and doctor show a hostile directory name and profile name escaped, and still report the other package', async () => {
  const tools = ['--tools', join(dir.path, 'tools'), '--no-containers'];
  const list = await cli(['list', ...tools], dir.path);
  assertClean('list', list);
  assert.match(list.stdout, /fine__ok/);
  assert.match(list.stdout, /\\u001b\[2J/);
  const json = await cli(['list', '--json', ...tools], dir.path);
  assertClean('list --json', json);
  const parsed = JSON.parse(json.stdout) as {rejected: {dir: string}[]};
  assert.ok(parsed.rejected.some((r) => r.dir.endsWith(`evil${ESC}`)), 'the JSON still says the real name');
  const doctor = await cli(['doctor', ...tools], dir.path);
  assertClean('doctor', doctor);
  assert.match(doctor.stdout, /^FAIL {2}package \S*evil\\u001b\[2J\S* rejected: /m);
});

test('check shows what a package\'s code throws and imports escaped, one line each', async () => {
  const check = await cli(['check', 'pkg'], dir.path);
  assert.equal(check.code, 1);
  assertClean('check', check);
  assert.match(check.stdout, /^pkg\/dist\/boom\.js:1:7: top-level code throws Error: fake ok\\u001b\[2J/m);
  assert.match(check.stdout, /^pkg\/dist\/imports\.js:1:15: imports "lib\\u001b\[2J/m);
});

test('build shows an import specifier that does not resolve escaped', async () => {
  const build = await cli(['build', 'src-pkg'], dir.path);
  assert.equal(build.code, 1);
  assertClean('build', build);
  assert.match(build.stderr, /ERROR src-pkg\/imp: esbuild failed: Could not resolve "lib\\(u001b|x1b)\[2J/);
});
