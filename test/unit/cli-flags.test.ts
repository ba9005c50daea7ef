/**
 * The README's CLI reference and the CLI agree: every command and every option that
 * commander registers (read from `buildProgram()`, so a new flag is checked without a list
 * here to update) is in the README's "## CLI" section, and every `--flag` that section names
 * exists. A usage line (`toolcell <command> …` in the section's code block, with its indented
 * continuation lines) may name only flags of that command or of the program itself.
 *
 * Not checked: that a README usage line lists every flag of its command (the reference
 * abbreviates, e.g. `list` shows `--tools` only), descriptions, defaults, or
 * ARCHITECTURE.md (outside this repository).
 */
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {describe, test} from 'node:test';
import type {Command} from 'commander';
import {buildProgram} from '../../src/cli-main.ts';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const FLAG = /(?<![\w-])--[a-z][a-z0-9-]*/g;

/** One command as commander holds it: its path below the program (`''` for the program itself) and its long flags. */
interface Registered {
  path: string;
  flags: string[];
  leaf: boolean;
}

function registered(command: Command, prefix = ''): Registered[] {
  const path = prefix === '' && command.parent === null ? '' : `${prefix}${prefix ? ' ' : ''}${command.name()}`;
  const flags = command.options.filter((o) => !o.hidden && o.long !== undefined).map((o) => o.long!);
  return [{path, flags, leaf: command.commands.length === 0}, ...command.commands.flatMap((c) => registered(c, path))];
}

/** The README's "## CLI" section, up to the next second-level heading. */
function cliSection(): string {
  const start = README.search(/^## CLI\s*$/m);
  assert.ok(start >= 0, 'README.md has a "## CLI" section');
  const rest = README.slice(start + 1);
  const end = rest.search(/^## /m);
  return end < 0 ? rest : rest.slice(0, end);
}

/** Usage entries of the section's code block: `toolcell` lines joined with their indented continuation lines. */
function usageEntries(section: string): Array<{path: string; text: string}> {
  const block = /^```[^\n]*\n([\s\S]*?)^```/m.exec(section);
  assert.ok(block, 'the CLI section has a code block of usage lines');
  const entries: Array<{path: string; text: string}> = [];
  for (const line of block[1]!.split('\n')) {
    if (line.startsWith('toolcell')) {
      const words = line.slice('toolcell'.length).trim().split(/\s+/);
      const path: string[] = [];
      for (const word of words) {
        if (!/^[a-z][a-z0-9-]*$/.test(word)) break;
        path.push(word);
      }
      entries.push({path: path.join(' '), text: line});
    } else if (/^\s/.test(line) && entries.length > 0) {
      entries.at(-1)!.text += `\n${line}`;
    }
  }
  return entries;
}

const commands = registered(buildProgram().program);
const section = cliSection();
const entries = usageEntries(section);
const named = new Set(section.match(FLAG) ?? []);
const programFlags = commands.find((c) => c.path === '')!.flags;

describe('README CLI reference ↔ commander', () => {
  test('the program registers commands (the walk found them)', () => {
    assert.ok(commands.some((c) => c.path === 'serve'), `commands found: ${commands.map((c) => c.path).join(', ')}`);
  });

  test('every command has a usage line "toolcell <command> …"', () => {
    const documented = new Set(entries.map((e) => e.path));
    const missing = commands.filter((c) => c.leaf && c.path !== '' && !documented.has(c.path)).map((c) => c.path);
    assert.deepEqual(missing, [], `commands without a usage line in README.md "## CLI": ${missing.join(', ')}`);
  });

  test('every usage line names a command that exists', () => {
    const known = new Set(commands.map((c) => c.path));
    const unknown = entries.filter((e) => !known.has(e.path)).map((e) => e.path || '(none)');
    assert.deepEqual(unknown, [], `usage lines for commands the CLI does not have: ${unknown.join(', ')}`);
  });

  test('every option of every command is named in the CLI section', () => {
    const missing = commands.flatMap((c) => c.flags.filter((f) => !named.has(f)).map((f) => `${c.path || 'toolcell'} ${f}`));
    assert.deepEqual(missing, [], `options not in README.md "## CLI": ${missing.join(', ')}`);
  });

  test('every --flag the CLI section names is an option of some command', () => {
    const all = new Set(commands.flatMap((c) => c.flags));
    const unknown = [...named].filter((f) => !all.has(f));
    assert.deepEqual(unknown, [], `README.md "## CLI" names flags the CLI does not have: ${unknown.join(', ')}`);
  });

  test('a usage line names only flags of its own command (or of the program)', () => {
    const wrong = entries.flatMap((e) => {
      const own = new Set([...(commands.find((c) => c.path === e.path)?.flags ?? []), ...programFlags]);
      return (e.text.match(FLAG) ?? []).filter((f) => !own.has(f)).map((f) => `toolcell ${e.path} ${f}`);
    });
    assert.deepEqual(wrong, [], `usage lines naming another command's flag: ${wrong.join(', ')}`);
  });
});
