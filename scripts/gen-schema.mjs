// Writes profiles/profile.schema.json from the zod profile schema (src/policy/profile-schema.ts).
import {writeFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
const {profileJsonSchema} = await import('../src/policy/profile-schema.ts');
const target = fileURLToPath(new URL('../profiles/profile.schema.json', import.meta.url));
writeFileSync(target, `${JSON.stringify(profileJsonSchema(), null, 2)}\n`);
process.stderr.write(`wrote ${target}\n`);
