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

/**
 * Modules of commands that answer on stdout (`list`, `call`, `doctor`, `profiles`, `check`,
 * `--help`), and check's probe child, whose stdout is a pipe to `check`; `serve` never does.
 */
const STDOUT_COMMANDS = new Set(['src/cli-main.ts', 'src/doctor.ts', 'src/profiles-command.ts', 'src/check-command.ts', 'src/check-probe.ts', 'src/audit-verify-command.ts']);

test('nothing in src writes to stdout through console.log (stdout is the stdio protocol)', () => {
  const files = globSync('src/**/*.ts');
  assert.ok(files.some((f) => !f.includes('/')  || f.split('/').length === 2), 'the files at the root of src/ are covered');
  for (const file of files) {
    // The prelude is sent into each isolate as source text: its console is the tool's own, captured.
    if (file === 'src/backends/isolate/prelude.ts') continue;
    assert.doesNotMatch(readFileSync(file, 'utf8'), /console\.(log|info|debug|dir|table)\(/, file);
    // Only commands whose answer is their stdout (list, call, doctor, check: never serve) write there.
    if (!STDOUT_COMMANDS.has(file)) assert.doesNotMatch(readFileSync(file, 'utf8'), /process\.stdout\.write\(/, file);
  }
});

/** Modules at the root of src/ that the layers may import: shared leaves, never the composition root. */
const SHARED_ROOT_MODULES = new Set(['errors.ts', 'log.ts', 'paths.ts', 'terminal-text.ts']);
/** Command modules that wire the runtime like cli-main.ts does, though they live beside their front end. */
const COMMAND_MODULES = new Set(['src/frontend/http/serve-http-command.ts']);

test('the layers import from the root of src/ only the shared leaves (errors, log, paths, terminal-text), never the CLI or the composition root', () => {
  for (const layer of [...LAYERS, 'audit']) {
    for (const file of globSync(`src/${layer}/**/*.ts`)) {
      for (const spec of importsOf(file).filter((s) => s.startsWith('.'))) {
        const target = relative('src', resolve(dirname(file), spec));
        if (target.includes('/') || COMMAND_MODULES.has(file)) continue;
        assert.ok(SHARED_ROOT_MODULES.has(target), `${file} imports ${spec} (src/${target} is not a shared leaf)`);
      }
    }
  }
});

test('the shared leaves at the root of src/ import nothing from the layers', () => {
  for (const leaf of SHARED_ROOT_MODULES) {
    for (const spec of importsOf(`src/${leaf}`).filter((s) => s.startsWith('.'))) {
      assert.ok(!/^\.\/(frontend|policy|dispatch|backends|audit)\//.test(spec), `src/${leaf} imports ${spec}`);
    }
  }
});

test('every file in src/ opens with a comment saying its one idea', () => {
  for (const file of globSync('src/**/*.ts')) {
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#!'));
    assert.match(lines[0] ?? '', /^\s*(\/\/|\/\*)/, `${file} does not open with a comment`);
  }
});
