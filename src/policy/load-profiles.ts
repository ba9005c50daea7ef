// Loads profiles from directories: strict schema, frozen, deny by default.
import {readdir, readFile} from 'node:fs/promises';
import {basename, join} from 'node:path';
import {ConfigError} from '../errors.ts';
import {parseJsonConfig} from './json-config.ts';
import {Profile} from './profile-schema.ts';

/** File in a profile directory that is the schema, not a profile. */
const SCHEMA_FILE = 'profile.schema.json';

/**
 * Loads every `*.json` profile (except `profile.schema.json`) from each directory, in order.
 * Strict: one invalid file stops the load (an operator's policy is never half-applied).
 * The profile's `name` must equal its file name, and a name may be defined only once across
 * all directories (no shadowing, no inheritance). Returned profiles are deeply frozen.
 *
 * @param dirs profile directories (absolute or relative to the cwd)
 * @returns name → profile
 * @throws ConfigError naming the file and the field (zod's prettified error) on the first invalid file.
 */
export async function loadProfiles(dirs: readonly string[]): Promise<Map<string, Profile>> {
  const profiles = new Map<string, Profile>();
  const files = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((f) => f.endsWith('.json') && f !== SCHEMA_FILE).sort();
    } catch (err) {
      throw new ConfigError(dir, `cannot read the profile directory (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {cause: err});
    }
    for (const name of names) {
      const file = join(dir, name);
      const profile = parseProfile(file, await readFile(file, 'utf8'));
      const previous = files.get(profile.name);
      if (previous !== undefined) {
        throw new ConfigError(file, `profile "${profile.name}" is already defined in ${previous}; a profile name may be defined once`);
      }
      profiles.set(profile.name, profile);
      files.set(profile.name, file);
    }
  }
  return profiles;
}

/**
 * Parses and validates one profile file's text.
 * @param file the file's path, used in messages and to check that `name` equals the file name.
 * @throws ConfigError naming the file and each invalid field.
 */
export function parseProfile(file: string, text: string): Profile {
  const profile = parseJsonConfig(file, text, Profile, 'profile');
  const expected = basename(file, '.json');
  if (profile.name !== expected) {
    throw new ConfigError(file, `→ at name: "${profile.name}" must equal the file name "${expected}"`);
  }
  return profile;
}
