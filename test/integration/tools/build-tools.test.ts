import assert from 'node:assert/strict';
import {execFile} from 'node:child_process';
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {after, before, describe, test} from 'node:test';
import {promisify} from 'node:util';
import {runModule, useIsolateBackend, valueOfResult} from '../../support/isolate-backend.ts';
import {REPO, isolateProfile} from './helpers.ts';

/** scripts/build-tools.mjs: bundles isolate tools, skips container-only packages, fails loudly. */

const SCRIPT = path.join(REPO, 'scripts/build-tools.mjs');
const run = promisify(execFile);
const backend = useIsolateBackend();

/** Runs the build script (with this Node 24) over `dir`; never rejects. */
async function build(dir?: string): Promise<{code: number; stderr: string}> {
  try {
    const {stderr} = await run(process.execPath, dir ? [SCRIPT, dir] : [SCRIPT], {cwd: REPO});
    return {code: 0, stderr};
  } catch (error) {
    const e = error as {code: number; stderr: string};
    return {code: e.code, stderr: e.stderr};
  }
}

let dir: string;

function writePackage(name: string, tools: unknown[], sources: Record<string, string> = {}): void {
  mkdirSync(path.join(dir, name, 'src'), {recursive: true});
  writeFileSync(path.join(dir, name, 'toolcell.json'), JSON.stringify({name, version: '1.0.0', description: 'test', tools}));
  for (const [file, text] of Object.entries(sources)) writeFileSync(path.join(dir, name, 'src', file), text);
}

const isolateTool = (name: string, entry = `dist/${name}.js`) => ({name, description: 'test tool', profile: 'isolate-strict',
  inputSchema: {type: 'object', additionalProperties: false}, isolate: {entry}});

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'toolcell-build-tools-'));
});
after(() => rmSync(dir, {recursive: true, force: true}));

describe('scripts/build-tools.mjs', () => {
  test('builds the bundled tools/ with exit 0 and one summary line per package', async () => {
    const {code, stderr} = await build();
    assert.equal(code, 0, stderr);
    for (const pkg of ['conformance', 'js', 'markdown', 'math', 'text']) {
      assert.equal(stderr.split('\n').filter((l) => l.startsWith(`build-tools: ${pkg}: `)).length, 1, `${pkg}: ${stderr}`);
    }
    assert.doesNotMatch(stderr, /ERROR|FAILED/);
    const licenses = readFileSync(path.join(REPO, 'tools/math/dist/THIRD_PARTY_LICENSES.txt'), 'utf8');
    assert.match(licenses, /^mathjs@\d+\.\d+\.\d+ \(Apache-2\.0\)$/m);
    assert.match(licenses, /^NOTICE\nmath\.js$/m, 'the Apache-2.0 NOTICE travels with the bundle');
    assert.match(readFileSync(path.join(REPO, 'tools/text/dist/diff.js'), 'utf8'), /\* diff@\d+\.\d+\.\d+ \(BSD-3-Clause\)\n \*\/\n$/);
  });

  test('bundles local imports into one module, skips container-only packages, and reports every broken tool by name', async () => {
    writePackage('good', [isolateTool('hello')], {
      'hello.js': "import {greet} from './greet.js';\nexport default ({name}) => greet(name);\n",
      'greet.js': 'export const greet = (name) => `hello ${name}`;\n',
    });
    writePackage('pyonly', [{name: 'run', description: 'python', profile: 'python-offline', inputSchema: {type: 'object'},
      container: {image: 'toolcell/python', command: ['python3', '-c', '{{code}}']}}]);
    writePackage('broken', [
      isolateTool('builtin'), isolateTool('missing'), isolateTool('escape', '../../outside.js'),
      isolateTool('nodefault'), isolateTool('wrongext', 'dist/wrongext.txt'),
    ], {
      'builtin.js': "import {readFileSync} from 'node:fs';\nexport default () => readFileSync('/etc/passwd', 'utf8');\n",
      'nodefault.js': 'export const notDefault = 1;\n',
      'escape.js': 'export default () => 1;\n',
    });
    mkdirSync(path.join(dir, 'badjson'));
    writeFileSync(path.join(dir, 'badjson', 'toolcell.json'), '{"name": "badjson",');

    const {code, stderr} = await build(dir);
    assert.equal(code, 1);
    assert.match(stderr, /^build-tools: good: 1 bundle\(s\) \[hello 0\.\d KiB\]/m);
    assert.match(stderr, /^build-tools: pyonly: skipped \(no isolate tools\)$/m);
    assert.match(stderr, /^build-tools: broken: 0 bundle\(s\), 5 FAILED/m);
    assert.match(stderr, /^build-tools: ERROR broken\/builtin: esbuild failed: Could not resolve "node:fs"/m);
    assert.match(stderr, /^build-tools: ERROR broken\/missing: no source for isolate entry "dist\/missing\.js": expected src\/missing\.js or src\/missing\.mjs or src\/missing\.ts$/m);
    assert.match(stderr, /^build-tools: ERROR broken\/escape: isolate\.entry "\.\.\/\.\.\/outside\.js" leaves the package directory$/m);
    assert.match(stderr, /^build-tools: ERROR broken\/nodefault: bundle has no default export/m);
    assert.match(stderr, /^build-tools: ERROR broken\/wrongext: isolate\.entry "dist\/wrongext\.txt" must end in \.js or \.mjs$/m);
    assert.match(stderr, /^build-tools: ERROR badjson: toolcell\.json does not parse/m);

    assert.ok(!existsSync(path.join(dir, 'outside.js')) && !existsSync(path.join(dir, '..', 'outside.js')), 'nothing written outside a package');
    assert.ok(!existsSync(path.join(dir, 'broken', 'dist', 'builtin.js')), 'a failed tool leaves no bundle');
    assert.ok(!existsSync(path.join(dir, 'broken', 'dist', 'nodefault.js')), 'a bundle failing a check is not written');
    assert.ok(!existsSync(path.join(dir, 'pyonly', 'dist')), 'container-only packages get no dist');

    const source = readFileSync(path.join(dir, 'good', 'dist', 'hello.js'), 'utf8');
    assert.match(source, /^\/\/ Generated by scripts\/build-tools\.mjs/);
    assert.doesNotMatch(source, /\bimport\b/, 'self-contained');
    const {limits} = isolateProfile('isolate-strict');
    assert.equal(valueOfResult(await runModule(backend, source, {name: 'isolate'}, limits)), 'hello isolate', 'the bundle runs in the isolate backend');
  });
});
