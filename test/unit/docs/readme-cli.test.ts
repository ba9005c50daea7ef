import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import {test} from 'node:test';
import {main} from '../../../src/cli-main.ts';

/** The README's "CLI" section names every command and every flag that commander accepts (issue 14). */

const REPO = join(import.meta.dirname, '..', '..', '..');
const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
const cliSection = readme.split(/^## CLI$/m)[1]?.split(/^## /m)[0] ?? '';

/** What `toolcell ...args --help` prints on stdout. */
async function help(args: string[]): Promise<string> {
  const chunks: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  try {
    assert.equal(await main([...args, '--help']), 0);
  } finally {
    process.stdout.write = write;
  }
  return chunks.join('');
}

const commandsOf = (text: string) => [...(text.split(/^Commands:$/m)[1] ?? '').matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
const flagsOf = (text: string) => [...new Set([...text.matchAll(/(--[a-z][a-z-]+)/g)].map((m) => m[1]!))].filter((f) => f !== '--help');

test('every command and flag is in the README CLI reference', async () => {
  assert.ok(cliSection.length > 0, 'README has a "## CLI" section');
  const root = await help([]);
  const commands = commandsOf(root);
  assert.ok(commands.includes('serve') && commands.includes('build') && commands.includes('check'), commands.join(', '));
  const missing: string[] = [];
  for (const flag of flagsOf(root)) if (!cliSection.includes(flag)) missing.push(`toolcell ${flag}`);
  for (const command of commands) {
    const text = await help([command]);
    const sub = commandsOf(text);
    for (const path of sub.length > 0 ? sub.map((s) => [command, s]) : [[command]]) {
      if (!cliSection.includes(`toolcell ${path.join(' ')}`)) missing.push(`toolcell ${path.join(' ')} (the command)`);
      const flags = flagsOf(path.length > 1 ? await help(path) : text);
      for (const flag of flags) if (!cliSection.includes(flag)) missing.push(`toolcell ${path.join(' ')} ${flag}`);
    }
  }
  assert.deepEqual(missing, [], `not in the README's CLI section:\n${missing.join('\n')}`);
});
