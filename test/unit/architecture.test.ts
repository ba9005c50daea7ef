import assert from 'node:assert/strict';
import {globSync, readFileSync} from 'node:fs';
import {dirname, relative, resolve} from 'node:path';
import {test} from 'node:test';

/** Imports point downstream only: frontend → policy → dispatch → backends; audit imports nothing above it. */
const LAYERS = ['frontend', 'policy', 'dispatch', 'backends'] as const;

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)].map((m) => m[1]!);
}

for (const [index, layer] of LAYERS.entries()) {
  const upstream = LAYERS.slice(0, index);
  if (upstream.length === 0) continue;
  test(`src/${layer} imports nothing from ${upstream.join(', ')}`, () => {
    const files = globSync(`src/${layer}/**/*.ts`);
    assert.ok(files.length > 0, `src/${layer} has files`);
    for (const file of files) {
      for (const spec of importsOf(file).filter((s) => s.startsWith('.'))) {
        const target = relative('src', resolve(dirname(file), spec)).split('/')[0]!;
        assert.ok(!(upstream as readonly string[]).includes(target), `${file} imports ${spec} (upstream layer ${target})`);
      }
    }
  });
}

test('src/audit imports nothing from the other layers', () => {
  for (const file of globSync('src/audit/**/*.ts')) {
    for (const spec of importsOf(file)) {
      assert.ok(!/(frontend|policy|dispatch|backends)\//.test(spec), `${file} imports ${spec}`);
    }
  }
});

test('only src/frontend imports the MCP SDK', () => {
  for (const file of globSync('src/**/*.ts').filter((f) => !f.startsWith('src/frontend/'))) {
    for (const spec of importsOf(file)) {
      assert.ok(!spec.startsWith('@modelcontextprotocol/'), `${file} imports ${spec}`);
    }
  }
});

test('src never imports sandboxes/ (what runs beyond a boundary)', () => {
  for (const file of globSync('src/**/*.ts')) {
    for (const spec of importsOf(file)) assert.ok(!spec.includes('sandboxes/'), `${file} imports ${spec}`);
  }
});

test('nothing in src writes to stdout through console.log (stdout is the stdio protocol)', () => {
  for (const file of globSync('src/**/*.ts')) {
    if (file.includes('/isolate/')) continue; // console inside the isolate prelude is the tool's own, captured
    assert.doesNotMatch(readFileSync(file, 'utf8'), /console\.(log|info)\(/, file);
  }
});
