import assert from 'node:assert/strict';
import {mkdir, symlink, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {loadPackages} from '../../../src/policy/load-packages.ts';
import {parseProfile} from '../../../src/policy/load-profiles.ts';
import type {Profile} from '../../../src/policy/profile-schema.ts';
import {tempDir} from '../../support/temp.ts';

const profiles = new Map<string, Profile>([
  ['tiny', parseProfile('/p/tiny.json', JSON.stringify({name: 'tiny', backend: 'isolate', limits: {timeoutMs: 1000, memoryMb: 16, outputBytes: 1024}}))],
  ['box', parseProfile('/p/box.json', JSON.stringify({name: 'box', backend: 'container',
    limits: {timeoutMs: 1000, memoryMb: 64, cpus: 0.5, pids: 16, outputBytes: 1024}, commands: ['python3', 'cat']}))],
]);

const schema = {type: 'object', properties: {text: {type: 'string'}}, required: ['text'], additionalProperties: false};
const isolateTool = (over: Record<string, unknown> = {}) => ({name: 'count', description: 'Count.', inputSchema: schema, profile: 'tiny', isolate: {entry: 'count.js'}, ...over});
const pkg = (name: string, tools: unknown[], extra: Record<string, unknown> = {}) => ({name, version: '1.0.0', tools, ...extra});

let dir: Awaited<ReturnType<typeof tempDir>>;
let outside: Awaited<ReturnType<typeof tempDir>>;

before(async () => {
  dir = await tempDir();
  outside = await tempDir();
  await outside.write('secret.js', 'export default () => "outside"');
  const add = async (folder: string, manifest: unknown, files: Record<string, string> = {'count.js': 'export default (a) => a.text.length'}) => {
    await dir.write(`${folder}/toolcell.json`, manifest as object);
    for (const [f, c] of Object.entries(files)) await dir.write(`${folder}/${f}`, c);
  };
  await add('a-good', pkg('good', [isolateTool()]));
  await add('b-dup', pkg('good', [isolateTool()]));
  await add('c-unknown-key', pkg('unknownkey', [isolateTool()], {permissions: ['all']}));
  await add('d-bad-name', pkg('Bad__Name', [isolateTool()]));
  await add('e-bad-tool', pkg('badtool', [isolateTool({name: 'Count'})]));
  await add('f-unknown-profile', pkg('noprofile', [isolateTool({profile: 'root'})]));
  await add('g-dotdot', pkg('dotdot', [isolateTool({isolate: {entry: '../../etc/passwd'}})]));
  await add('h-absolute', pkg('absolute', [isolateTool({isolate: {entry: join(outside.path, 'secret.js')}})]));
  await add('i-symlink', pkg('symlink', [isolateTool({isolate: {entry: 'link.js'}})]), {});
  await symlink(join(outside.path, 'secret.js'), join(dir.path, 'i-symlink', 'link.js'));
  await add('j-mismatch', pkg('mismatch', [isolateTool({profile: 'box'})]));
  await add('k-dialect', pkg('dialect', [isolateTool({inputSchema: {...schema, $schema: 'http://json-schema.org/draft-04/schema#'}})]));
  await add('l-container', pkg('box', [{name: 'run', description: 'Run.', profile: 'box',
    inputSchema: {type: 'object', properties: {code: {type: 'string'}}, additionalProperties: false},
    container: {image: 'toolcell/python', command: ['python3', '-c', '{{code}}']}}]));
  await add('m-argv0', pkg('argvzero', [{name: 'run', description: 'Run.', profile: 'box',
    inputSchema: {type: 'object', properties: {}, additionalProperties: false},
    container: {image: 'toolcell/python', command: ['curl', 'http://example.invalid']}}]));
  await add('n-placeholder', pkg('placeholder', [{name: 'run', description: 'Run.', profile: 'box',
    inputSchema: {type: 'object', properties: {}, additionalProperties: false},
    container: {image: 'toolcell/python', command: ['cat', '{{path}}']}}]));
  await add('o-partial', pkg('partial', [{name: 'run', description: 'Run.', profile: 'box',
    inputSchema: {type: 'object', properties: {p: {type: 'string'}}, additionalProperties: false},
    container: {image: 'toolcell/python', command: ['cat', '--file={{p}}']}}]));
  await add('p-missing-entry', pkg('missing', [isolateTool({isolate: {entry: 'nope.js'}})]));
  await add('q-both', pkg('both', [isolateTool({container: {image: 'x', command: ['cat']}})]));
  await mkdir(join(dir.path, 'r-bad-json'));
  await writeFile(join(dir.path, 'r-bad-json', 'toolcell.json'), '{"name": ');
});

after(async () => {
  await dir.dispose();
  await outside.dispose();
});

async function load() {
  return loadPackages([dir.path], profiles);
}

const reasonFor = async (folder: string) => {
  const {rejected} = await load();
  return rejected.find((r) => r.dir.endsWith(folder))?.reason;
};

test('a valid package loads with MCP names package__tool', async () => {
  const {tools, packages} = await load();
  assert.ok(tools.has('good__count'));
  assert.ok(tools.has('box__run'));
  assert.equal(tools.get('good__count')!.isolate!.filename, 'good/count.js');
  assert.equal(packages.find((p) => p.name === 'good')!.dir.endsWith('a-good'), true);
});

test('valid MCP tool names: only [A-Za-z0-9_-], at most 128 characters', async () => {
  const {tools} = await load();
  for (const name of tools.keys()) assert.match(name, /^[A-Za-z0-9_-]{1,128}$/);
});

for (const [folder, pattern] of [
  ['b-dup', /a package named "good" is already loaded/],
  ['c-unknown-key', /invalid toolcell\.json: \/permissions is .+: unknown key/],
  ['d-bad-name', /kebab-case|must not contain "__"/],
  ['e-bad-tool', /snake_case/],
  ['f-unknown-profile', /unknown profile "root"; known profiles: box, tiny/],
  ['g-dotdot', /escapes the package directory/],
  ['h-absolute', /must be a relative path/],
  ['i-symlink', /through a symlink\) outside the package/],
  ['j-mismatch', /isolate tool but profile "box" is for the container backend/],
  ['k-dialect', /unsupported JSON Schema dialect/],
  ['m-argv0', /command "curl" is not in the allowlist of profile "box" \(allowed: python3, cat\)/],
  ['n-placeholder', /placeholder \{\{path\}\} names "path", which inputSchema.properties does not declare/],
  ['o-partial', /placeholder must be a whole argv element/],
  ['p-missing-entry', /does not exist \(is the package built\?\)/],
  ['q-both', /exactly one of "isolate" or "container"/],
  ['r-bad-json', /not valid JSON/],
] as const) {
  test(`package rejected, the others still load: ${folder}`, async () => {
    const reason = await reasonFor(folder);
    assert.ok(reason, `${folder} should be rejected`);
    assert.match(reason, pattern);
    assert.ok(!reason.includes('\n'), 'a rejection reason is one line');
    const {tools} = await load();
    assert.ok(tools.has('good__count'), 'the valid package still loads');
  });
}

test('a tools directory that does not exist is reported, not thrown', async () => {
  const result = await loadPackages([join(dir.path, 'nope')], profiles);
  assert.equal(result.tools.size, 0);
  assert.match(result.rejected[0]!.reason, /cannot read the tools directory/);
});

test('a directory that is itself a package loads', async () => {
  const result = await loadPackages([join(dir.path, 'a-good')], profiles);
  assert.deepEqual([...result.tools.keys()], ['good__count']);
});

test('an operator may serve a package unprefixed; a bare name that collides rejects the later package', async () => {
  const extra = await tempDir();
  try {
    await extra.write('one/toolcell.json', pkg('one', [isolateTool({name: 'good__count'.replace('good__', '')})]));
    await extra.write('one/count.js', 'export default () => 1');
    await extra.write('two/toolcell.json', pkg('two', [isolateTool()]));
    await extra.write('two/count.js', 'export default () => 2');
    const result = await loadPackages([extra.path], profiles, {unprefixed: ['one', 'two']});
    assert.deepEqual([...result.tools.keys()], ['count']);
    assert.equal(result.tools.get('count')!.packageName, 'one');
    assert.match(result.rejected[0]!.reason, /tool name "count" is already served by package "one"/);
  } finally {
    await extra.dispose();
  }
});
