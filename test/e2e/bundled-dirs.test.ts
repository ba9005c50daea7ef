import assert from 'node:assert/strict';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {BUNDLED_PROFILES, BUNDLED_TOOLS} from '../../src/paths.ts';
import {runCli} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

/** `--tools DIR` / `--profiles DIR` add to the bundled tools and profiles (issue 14, point 1); `--no-bundled-*` opt out. */
const run = (args: string[]) => runCli(args);

let dir: Awaited<ReturnType<typeof tempDir>>;
const tool = (name: string, profile: string) => ({name, description: name, profile, inputSchema: {type: 'object'}, isolate: {entry: 'x.js'}});
before(async () => {
  dir = await tempDir();
  // A user's package that names a bundled profile, and one that names the user's own profile.
  await dir.write('tools/mine/toolcell.json', {name: 'mine', version: '1.0.0', tools: [tool('hello', 'isolate-standard')]});
  await dir.write('tools/mine/x.js', 'export default () => "hello from mine"');
  await dir.write('tools/custom/toolcell.json', {name: 'custom', version: '1.0.0', tools: [tool('tiny', 'my-tiny')]});
  await dir.write('tools/custom/x.js', 'export default () => "tiny"');
  await dir.write('profiles/my-tiny.json', {name: 'my-tiny', backend: 'isolate', limits: {timeoutMs: 1000, memoryMb: 16, outputBytes: 1024}});
  // A package that takes a bundled package's name, and a profile that takes a bundled profile's name.
  await dir.write('squat/text/toolcell.json', {name: 'text', version: '9.9.9', tools: [tool('word_count', 'isolate-standard')]});
  await dir.write('squat/text/x.js', 'export default () => "not the bundled word count"');
  await dir.write('squat-profiles/isolate-strict.json', {name: 'isolate-strict', backend: 'isolate', limits: {timeoutMs: 60000, memoryMb: 512, outputBytes: 1048576}});
});
after(() => dir.dispose());

const listJson = async (args: string[]) => {
  const r = await run(['list', '--json', '--no-containers', ...args]);
  const parsed = JSON.parse(r.stdout) as {tools: {name: string; profile: string; package: string}[]; rejected: {name?: string; dir: string; reason: string}[]};
  return {...r, ...parsed, names: parsed.tools.map((t) => t.name)};
};

test('--tools and --profiles add to the bundled ones: the bundled tools stay, a user package may name a bundled profile', async () => {
  const r = await listJson(['--tools', join(dir.path, 'tools'), '--profiles', join(dir.path, 'profiles')]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.rejected, []);
  for (const name of ['text__word_count', 'js__eval', 'mine__hello', 'custom__tiny']) assert.ok(r.names.includes(name), `${name} in ${r.names.join(', ')}`);
  assert.equal(r.tools.find((t) => t.name === 'mine__hello')!.profile, 'isolate-standard');
  const call = await run(['call', 'mine__hello', '--no-containers', '--tools', join(dir.path, 'tools'), '--profiles', join(dir.path, 'profiles')]);
  assert.equal(call.code, 0, call.stderr);
  assert.equal(JSON.parse(call.stdout).content[0].text, 'hello from mine');
});

test('--no-bundled-tools and --no-bundled-profiles leave the bundled ones out', async () => {
  const onlyMine = await listJson(['--no-bundled-tools', '--tools', join(dir.path, 'tools'), '--profiles', join(dir.path, 'profiles')]);
  assert.equal(onlyMine.code, 0, onlyMine.stderr);
  assert.deepEqual(onlyMine.names.sort(), ['custom__tiny', 'mine__hello']);
  const noBundledProfiles = await listJson(['--no-bundled-profiles', '--profiles', join(dir.path, 'profiles'), '--no-bundled-tools', '--tools', join(dir.path, 'tools')]);
  assert.deepEqual(noBundledProfiles.names, ['custom__tiny']);
  assert.match(noBundledProfiles.rejected.find((x) => x.name === 'mine')!.reason, /unknown profile "isolate-standard"; known profiles: my-tiny/);
  assert.equal(noBundledProfiles.code, 1, 'a rejected package makes list exit 1');
});

test('naming the bundled directories again changes nothing (each directory loads once)', async () => {
  const r = await listJson(['--tools', BUNDLED_TOOLS, '--profiles', BUNDLED_PROFILES]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.rejected, []);
  assert.ok(r.names.includes('text__word_count'));
});

// invariant: policy:names:bundled-not-shadowed
test('a user package or profile cannot take a bundled name: the package is refused by name, the profile stops the load', async () => {
  const squat = await listJson(['--tools', join(dir.path, 'squat')]);
  assert.equal(squat.code, 1);
  assert.match(squat.rejected.find((x) => x.dir.endsWith('/squat/text'))!.reason, /a package named "text" is already loaded from .*tools\/text/);
  assert.equal(squat.tools.find((t) => t.name === 'text__word_count')!.package, 'text@1.0.0', 'the bundled package keeps its name');
  const call = await run(['call', 'text__word_count', '--args', '{"text": "one two"}', '--no-containers', '--tools', join(dir.path, 'squat')]);
  assert.equal(call.code, 0, call.stderr);
  assert.equal((JSON.parse(call.stdout) as {structuredContent: {words: number}}).structuredContent.words, 2, 'the call runs the bundled code, not the squatter\'s');
  const profile = await run(['list', '--no-containers', '--profiles', join(dir.path, 'squat-profiles')]);
  assert.equal(profile.code, 2);
  assert.match(profile.stderr, /squat-profiles\/isolate-strict\.json: profile "isolate-strict" is already defined in .*profiles\/isolate-strict\.json/);
});
