import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import {test} from 'node:test';

/**
 * npm 11's install-script policy (`allowScripts` in package.json; `npm help install-scripts`):
 * the packages whose install scripts toolcell needs are allowed, the optional native builds are
 * denied, and nothing else is declared (issue 14, point 10). Checked by hand with
 * `npm ci --strict-allow-scripts` in a fresh clone: it installs, builds and runs a tool.
 */

const REPO = join(import.meta.dirname, '..', '..', '..');

test('allowScripts allows node (its Node 24 binary), isolated-vm (prebuilt check) and esbuild (platform binary), and denies cpu-features, ssh2 and protobufjs', () => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {allowScripts?: Record<string, boolean>};
  assert.deepEqual(pkg.allowScripts, {
    'node': true,
    'isolated-vm': true,
    'esbuild': true,
    'cpu-features': false,
    'ssh2': false,
    'protobufjs': false,
  });
  // Name-only entries: npm ci installs the exact versions and integrity of package-lock.json, and a version pin here would stop matching after an update, and a blocking npm would then skip the script that fetches the Node 24 binary.
  for (const key of Object.keys(pkg.allowScripts!)) assert.doesNotMatch(key, /.@/, `${key} is name-only`);
});
