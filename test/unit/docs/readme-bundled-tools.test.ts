import assert from 'node:assert/strict';
import {readdirSync, readFileSync} from 'node:fs';
import {join} from 'node:path';
import {test} from 'node:test';

/** The README's "Bundled tools" table names each bundled tool with the backend and profile its manifest really gives it (issue 14, point 9). */

const REPO = join(import.meta.dirname, '..', '..', '..');

interface Row {tool: string; backend: string; profile: string}

function manifestRows(): Row[] {
  const rows: Row[] = [];
  for (const dir of readdirSync(join(REPO, 'tools'), {withFileTypes: true}).filter((d) => d.isDirectory())) {
    const manifest = JSON.parse(readFileSync(join(REPO, 'tools', dir.name, 'toolcell.json'), 'utf8')) as
      {name: string; tools: {name: string; profile: string; isolate?: unknown}[]};
    for (const t of manifest.tools) rows.push({tool: `${manifest.name}__${t.name}`, backend: t.isolate ? 'isolate' : 'container', profile: t.profile});
  }
  return rows.sort((a, b) => a.tool.localeCompare(b.tool));
}

function readmeRows(): Row[] {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const section = readme.split(/^## Bundled tools$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, 'README has a "## Bundled tools" section');
  return [...section.matchAll(/^\| `([^`]+)` \| (\w+) \/ `([^`]+)` \|/gm)]
    .map((m) => ({tool: m[1]!, backend: m[2]!, profile: m[3]!}))
    .sort((a, b) => a.tool.localeCompare(b.tool));
}

test('every bundled tool is in the README table once, with the backend and profile of its manifest, and nothing else is', () => {
  const fromManifests = manifestRows();
  assert.ok(fromManifests.length >= 8, 'the bundled tools were found');
  assert.deepEqual(readmeRows(), fromManifests);
});
