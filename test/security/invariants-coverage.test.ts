// Every invariant in invariants.ts is cited by at least one test (`// invariant: <id>`), and
// every cited id exists (CONVENTIONS.md #14: a promise nobody tests is not kept).
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {glob} from 'node:fs/promises';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {INVARIANTS} from './invariants.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

test('every invariant is cited by a test, and every citation names an invariant', async () => {
  const cited = new Map<string, string[]>();
  for await (const file of glob('test/**/*.test.ts', {cwd: root})) {
    for (const m of readFileSync(`${root}/${file}`, 'utf8').matchAll(/^\s*\/\/ invariant: (\S+)\s*$/gm)) {
      cited.set(m[1]!, [...(cited.get(m[1]!) ?? []), file]);
    }
  }
  const known = new Set(Object.keys(INVARIANTS));
  const uncited = [...known].filter((id) => !cited.has(id));
  const unknown = [...cited.keys()].filter((id) => !known.has(id)).map((id) => `${id} (${cited.get(id)!.join(', ')})`);
  assert.deepEqual(uncited, [], 'invariants no test cites');
  assert.deepEqual(unknown, [], 'citations of ids not in invariants.ts');
});
