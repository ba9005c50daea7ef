import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {main} from '../../../src/cli-main.ts';

/**
 * The README's "CLI" section and the commander definitions agree: every command and every flag
 * the CLI accepts is documented there, and every flag the section's synopsis shows is accepted.
 * Reads `--help` of each command from `main` in this process (no build needed).
 */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** The `--help` text of a command, as `main` writes it to stdout. */
async function help(...command: string[]): Promise<string> {
  let text = '';
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => {
    text += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    assert.equal(await main([...command, '--help']), 0);
  } finally {
    process.stdout.write = write;
  }
  return text;
}

/** Lines of one help section ("Options:", "Commands:") that start an entry (two-space indent). */
function entries(text: string, section: string): string[] {
  const start = text.indexOf(`\n${section}\n`);
  if (start < 0) return [];
  const lines = text.slice(start + section.length + 2).split('\n');
  const end = lines.findIndex((l) => l.trim() !== '' && !l.startsWith(' '));
  return (end < 0 ? lines : lines.slice(0, end)).filter((l) => /^ {2}\S/.test(l)).map((l) => l.trim());
}
const flagsOf = (text: string) => entries(text, 'Options:').flatMap((l) => [.../(?:^|, )(--[a-z][a-z-]*)/g.exec(l) ?? []].slice(1)).filter((f) => f !== '--help');
const commandsOf = (text: string) => entries(text, 'Commands:').map((l) => l.split(/\s/)[0]!).filter((c) => c !== 'help');

const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
const cliSection = (() => {
  const start = readme.indexOf('\n## CLI\n');
  assert.ok(start >= 0, 'README has a "## CLI" section');
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
})();
const synopsis = /```\n([\s\S]*?)\n```/.exec(cliSection)?.[1] ?? '';

/** Every command path (e.g. ["images", "build"]) with its flags. */
async function commands(): Promise<{path: string[]; flags: string[]}[]> {
  const top = await help();
  const all: {path: string[]; flags: string[]}[] = [{path: [], flags: flagsOf(top)}];
  for (const name of commandsOf(top)) {
    const text = await help(name);
    const subs = commandsOf(text);
    if (subs.length === 0) all.push({path: [name], flags: flagsOf(text)});
    for (const sub of subs) all.push({path: [name, sub], flags: flagsOf(await help(name, sub))});
  }
  return all;
}

test('every command and every flag of the CLI is in the README\'s CLI section, and every flag there exists', async () => {
  const all = await commands();
  assert.ok(all.length >= 6, `commands found: ${all.map((c) => c.path.join(' ')).join(', ')}`);
  const known = new Set<string>();
  for (const {path, flags} of all) {
    if (path.length > 0) assert.match(synopsis, new RegExp(`^toolcell ${path.join(' ')}\\b`, 'm'), `README synopsis lacks "toolcell ${path.join(' ')}"`);
    for (const flag of flags) {
      known.add(flag);
      assert.match(cliSection, new RegExp(`${flag}(?![a-z-])`), `README's CLI section does not document ${flag} (of "toolcell ${path.join(' ')}")`);
    }
  }
  for (const flag of new Set(synopsis.match(/--[a-z][a-z-]*/g) ?? [])) assert.ok(known.has(flag), `README synopsis shows ${flag}, which no command accepts`);
});
