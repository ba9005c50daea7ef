import assert from 'node:assert/strict';
import {existsSync} from 'node:fs';
import path from 'node:path';
import {before, describe, test} from 'node:test';
import {ensureBuilt, packageDir, isolateProfile, manifest, validator} from './helpers.ts';

/**
 * The bundled isolate packages follow the manifest contract of ARCHITECTURE.md ("Tool
 * package"): names, strict input schemas, known profiles, entries inside the package.
 * Only the packages built by this work are checked here; container packages have their own tests.
 */

const PACKAGES = ['conformance', 'js', 'markdown', 'math', 'text'];
const PACKAGE_KEYS = new Set(['name', 'version', 'description', 'tools']);
const TOOL_KEYS = new Set(['name', 'title', 'description', 'inputSchema', 'outputSchema', 'profile', 'isolate']);

/** Every string schema under `schema` (properties, $defs, items), with its JSON pointer. */
function stringSchemas(schema: unknown, at = '#'): Array<[string, Record<string, unknown>]> {
  if (!schema || typeof schema !== 'object') return [];
  const s = schema as Record<string, unknown>;
  const found: Array<[string, Record<string, unknown>]> = s.type === 'string' ? [[at, s]] : [];
  for (const key of ['properties', '$defs']) {
    for (const [name, sub] of Object.entries((s[key] as Record<string, unknown> | undefined) ?? {})) found.push(...stringSchemas(sub, `${at}/${key}/${name}`));
  }
  if (s.items) found.push(...stringSchemas(s.items, `${at}/items`));
  return found;
}

before(ensureBuilt);

describe('bundled isolate tool packages', () => {
  for (const pkg of PACKAGES) {
    test(`${pkg}: manifest follows the tool package contract`, () => {
      const m = manifest(pkg);
      assert.equal(m.name, pkg, 'package name equals its directory');
      assert.match(m.name, /^[a-z][a-z0-9-]*$/);
      assert.ok(!m.name.includes('__'));
      assert.match(m.version, /^\d+\.\d+\.\d+$/);
      assert.ok(m.description.length > 0);
      assert.deepEqual(Object.keys(m).filter((k) => !PACKAGE_KEYS.has(k)), [], 'no unknown package keys');
      assert.ok(m.tools.length > 0);
      assert.equal(new Set(m.tools.map((t) => t.name)).size, m.tools.length, 'tool names are unique');
      for (const tool of m.tools) {
        const where = `${pkg}/${tool.name}`;
        assert.deepEqual(Object.keys(tool).filter((k) => !TOOL_KEYS.has(k)), [], `${where}: no unknown tool keys`);
        assert.match(tool.name, /^[a-z][a-z0-9_]*$/, where);
        assert.ok(!tool.name.includes('__'), where);
        assert.match(`${pkg}__${tool.name}`, /^[A-Za-z0-9_-]{1,64}$/, `${where}: MCP name valid for LLM APIs`);
        assert.ok(tool.description.length >= 10 && (tool.title ?? '').length > 0, `${where}: title and description`);
        assert.equal(tool.inputSchema.type, 'object', `${where}: inputSchema is an object schema`);
        assert.equal(tool.inputSchema.additionalProperties, false, `${where}: inputSchema is strict`);
        for (const [pointer, s] of stringSchemas(tool.inputSchema)) {
          assert.equal(typeof s.maxLength, 'number', `${where}: ${pointer} has a maxLength`);
        }
        validator(pkg, tool.name);
        if (tool.outputSchema) {
          assert.equal(tool.outputSchema.type, 'object', `${where}: structuredContent is an object`);
          validator(pkg, tool.name, 'outputSchema');
        }
        assert.equal(isolateProfile(tool.profile).backend, 'isolate', `${where}: names a valid isolate profile`);
        assert.equal(tool.isolate?.entry, `dist/${tool.name}.js`, `${where}: entry follows the dist/<tool>.js convention`);
        assert.ok(existsSync(path.join(packageDir(pkg), 'src', `${tool.name}.js`)), `${where}: has its source`);
        assert.ok(existsSync(path.join(packageDir(pkg), tool.isolate.entry)), `${where}: bundle built`);
      }
    });
  }

  test('the isolate profiles have the limits the packages were written for', () => {
    assert.deepEqual(isolateProfile('isolate-strict').limits, {timeoutMs: 2000, memoryMb: 32, outputBytes: 65536});
    assert.deepEqual(isolateProfile('isolate-standard').limits, {timeoutMs: 5000, memoryMb: 128, outputBytes: 1_048_576});
  });
});
