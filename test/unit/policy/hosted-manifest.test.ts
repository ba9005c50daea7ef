import assert from 'node:assert/strict';
import {test} from 'node:test';
import * as z from 'zod';
import {HostedPackageManifest, isHostedManifest, PackageManifest} from '../../../src/policy/manifest-schema.ts';

const definition = {name: 'echo', description: 'Echo the input.', inputSchema: {type: 'object', properties: {message: {type: 'string'}}}};
const valid = {
  name: 'everything',
  version: '2026.8.31',
  description: 'From npm:@modelcontextprotocol/server-everything',
  server: {
    source: 'npm:@modelcontextprotocol/server-everything@2026.8.31',
    integrity: 'sha512-abc',
    image: 'toolcell/srv-everything:2026.8.31',
    imageId: `sha256:${'a'.repeat(64)}`,
    command: ['mcp-server-everything'],
    transport: 'stdio',
  },
  profile: 'server-offline',
  tools: [{name: 'echo', sha256: 'b'.repeat(64), definition}],
};

const errorOf = (raw: unknown): string => {
  const r = HostedPackageManifest.safeParse(raw);
  assert.equal(r.success, false, 'expected a parse error');
  return z.prettifyError(r.error!);
};

test('the ARCHITECTURE.md example parses; lifetime defaults to "call"', () => {
  const parsed = HostedPackageManifest.parse(valid);
  assert.equal(parsed.server.lifetime, 'call');
  assert.equal(parsed.tools[0]!.definition.name, 'echo');
  assert.equal(isHostedManifest(valid), true);
  assert.equal(isHostedManifest({name: 'x', tools: []}), false);
  assert.equal(isHostedManifest(JSON.parse('{"__proto__": {"server": 1}}')), false);
});

const refusals: Array<[string, unknown, RegExp]> = [
  ['an isolate entry in a hosted tool', {...valid, tools: [{...valid.tools[0], isolate: {entry: 'x.js'}}]}, /isolate/],
  ['a container entry in a hosted tool', {...valid, tools: [{...valid.tools[0], container: {image: 'x', command: ['x']}}]}, /container/],
  ['a per-tool profile (the profile is package-level)', {...valid, tools: [{...valid.tools[0], profile: 'x'}]}, /profile/],
  ['a profile defined inline', {...valid, profile: {backend: 'container'}}, /profile/],
  ['an unknown key in server', {...valid, server: {...valid.server, privileged: true}}, /privileged/],
  ['a transport other than stdio', {...valid, server: {...valid.server, transport: 'http'}}, /transport/],
  ['a shell string as command', {...valid, server: {...valid.server, command: 'npx server'}}, /command/],
  ['a placeholder in the command', {...valid, server: {...valid.server, command: ['srv', '{{path}}']}}, /placeholders/],
  ['an image ID that is not a sha256 digest', {...valid, server: {...valid.server, imageId: 'latest'}}, /imageId/],
  ['a source without a known scheme', {...valid, server: {...valid.server, source: 'https://example.com/x.tgz'}}, /source/],
  ['a lifetime that is not call or principal', {...valid, server: {...valid.server, lifetime: 'forever'}}, /lifetime/],
  ['idleMs with lifetime call', {...valid, server: {...valid.server, idleMs: 1000}}, /idleMs applies only/],
  ['a pin that is not 64 hex digits', {...valid, tools: [{...valid.tools[0], sha256: 'B'.repeat(64)}]}, /sha256/],
  ['a definition whose name differs from the tool', {...valid, tools: [{...valid.tools[0], name: 'other'}]}, /definition\.name must equal name/],
  ['an unpinned field in a definition', {...valid, tools: [{...valid.tools[0], definition: {...definition, _meta: {}}}]}, /_meta/],
  ['a server tool name with a dot or space', {...valid, tools: [{name: 'a.b', sha256: 'b'.repeat(64), definition: {...definition, name: 'a.b'}}]}, /A-Z, a-z, 0-9, _ or -/],
  ['a definition without an object inputSchema', {...valid, tools: [{...valid.tools[0], definition: {...definition, inputSchema: {type: 'string'}}}]}, /type": "object"/],
  ['the same tool twice', {...valid, tools: [valid.tools[0], valid.tools[0]]}, /appears twice/],
  ['a malformed profileSha256', {...valid, server: {...valid.server, profileSha256: 'abc'}}, /profileSha256/],
];
for (const [title, raw, expected] of refusals) {
  test(`a hosted package is refused: ${title}`, () => assert.match(errorOf(raw), expected));
}

test('lifetime principal with idleMs, args and a profile digest parse', () => {
  const parsed = HostedPackageManifest.parse({...valid, server: {...valid.server, lifetime: 'principal', idleMs: 60_000, args: ['--stdio'], profileSha256: 'c'.repeat(64)}});
  assert.equal(parsed.server.idleMs, 60_000);
});

test('an ordinary tool package still refuses a server section (two schemas, chosen by the server key)', () => {
  const r = PackageManifest.safeParse({name: 'x', version: '1.0.0', server: valid.server, tools: []});
  assert.equal(r.success, false);
});
