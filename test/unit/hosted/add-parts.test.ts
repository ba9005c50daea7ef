// The pure parts of `toolcell add`: source parsing, default names, versions, commands, build contexts, the manifest written and the summary shown.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {consentMode, parseCommandFlag, screeningTargets, serverCommand} from '../../../src/add-command.ts';
import {ConfigError, ToolcellError} from '../../../src/errors.ts';
import {describeTool, grantChanges, hostedManifest, permissionSummary, pinnedDefinition, toolNameProblems} from '../../../src/hosted/hosted-package.ts';
import {parseDistributionName, type ResolvedSource} from '../../../src/hosted/resolve-source.ts';
import {buildContext, imageTag, npmCommand} from '../../../src/hosted/server-image.ts';
import {compareSemver, defaultServerName, formatSource, parseSource} from '../../../src/hosted/source.ts';
import {userToolsDir} from '../../../src/hosted/tools-dir.ts';
import {HostedPackageManifest} from '../../../src/policy/manifest-schema.ts';
import {definitionSha256, profileSha256} from '../../../src/policy/pins.ts';
import {ContainerProfile} from '../../../src/policy/profile-schema.ts';

test('sources parse into npm, pypi, pypi file, oci and dir', () => {
  assert.deepEqual(parseSource('npm:@modelcontextprotocol/server-everything@2026.8.31'), {type: 'npm', name: '@modelcontextprotocol/server-everything', spec: '2026.8.31'});
  assert.deepEqual(parseSource('npm:@scope/pkg'), {type: 'npm', name: '@scope/pkg', spec: 'latest'});
  assert.deepEqual(parseSource('npm:pkg@^1.2.0'), {type: 'npm', name: 'pkg', spec: '^1.2.0'});
  assert.deepEqual(parseSource('npm:pkg@>=1.0.0 <2'), {type: 'npm', name: 'pkg', spec: '>=1.0.0 <2'});
  assert.deepEqual(parseSource('pypi:mcp-server-time==1.2.3'), {type: 'pypi', name: 'mcp-server-time', version: '1.2.3'});
  assert.deepEqual(parseSource('pypi:mcp-server-time'), {type: 'pypi', name: 'mcp-server-time'});
  assert.deepEqual(parseSource('pypi:./dist/srv-1.0.tar.gz'), {type: 'pypi-file', path: './dist/srv-1.0.tar.gz'});
  assert.deepEqual(parseSource('pypi:srv-1.0-py3-none-any.whl'), {type: 'pypi-file', path: 'srv-1.0-py3-none-any.whl'});
  assert.deepEqual(parseSource('oci:acme/server:1.0'), {type: 'oci', image: 'acme/server:1.0'});
  assert.deepEqual(parseSource('dir:./server'), {type: 'dir', path: './server'});
});

test('sources that are not what they claim are refused before anything runs, naming the forms allowed', () => {
  for (const bad of ['everything', 'npm:', 'npm:Upper', 'npm:pkg@git+https://x.test/r.git', 'npm:pkg@file:../x', 'npm:pkg@--registry=http://evil.test',
    'npm:pkg@http://x', 'npm:../pkg', 'pypi:a==1==2', 'pypi:./notes.txt', 'oci:Bad Image', 'oci:-x', 'dir:', 'ftp:x', 'npm:pkg@1.0.0\n']) {
    assert.throws(() => parseSource(bad), (e: unknown) => e instanceof ConfigError && /Allowed: npm:/.test(e.message), bad);
  }
});

test('default package names come from the source, without mcp/server affixes', () => {
  assert.equal(defaultServerName(parseSource('npm:@modelcontextprotocol/server-everything')), 'everything');
  assert.equal(defaultServerName(parseSource('npm:mcp-server-time')), 'time');
  assert.equal(defaultServerName(parseSource('npm:github-mcp-server')), 'github');
  assert.equal(defaultServerName(parseSource('pypi:./dist/weather_tool-0.1.0.tar.gz')), 'weather-tool');
  assert.equal(defaultServerName(parseSource('oci:acme/tools:1')), 'tools');
  assert.equal(defaultServerName(parseSource('dir:/srv/my_server/')), 'my');
  assert.equal(defaultServerName(parseSource('oci:sha256:0123456789ab')), undefined);
  assert.equal(defaultServerName(parseSource('npm:123')), undefined);
});

test('the highest version wins by SemVer precedence, pre-releases below their release', () => {
  const versions = ['1.0.0', '2026.8.31', '2026.8.4', '1.0.0-rc.1', '1.0.0-rc.10', '1.0.0-rc.2', '10.0.0'];
  assert.deepEqual([...versions].sort(compareSemver), ['1.0.0-rc.1', '1.0.0-rc.2', '1.0.0-rc.10', '1.0.0', '10.0.0', '2026.8.4', '2026.8.31']);
  assert.equal(formatSource(parseSource('npm:pkg')), 'npm:pkg@latest');
});

test('distribution file names give project and version (PEP 427 wheels, PEP 625 sdists)', () => {
  assert.deepEqual(parseDistributionName('weather_tool-0.1.0-py3-none-any.whl'), {project: 'weather_tool', version: '0.1.0'});
  assert.deepEqual(parseDistributionName('weather_tool-0.1.0.tar.gz'), {project: 'weather_tool', version: '0.1.0'});
  assert.equal(parseDistributionName('weather.tar.gz'), undefined);
});

const npmResolved: Extract<ResolvedSource, {type: 'npm'}> = {type: 'npm', name: '@modelcontextprotocol/server-everything', version: '2026.8.31',
  integrity: 'sha512-5U3OZh8Xq0Li4nA26l6uNvV9/1suMDuWSn+NjLZIhzinhMY6N3A4DCrxVecBGPf2PsNFKTEv5krxGPRwzxc7jQ==', bin: {'mcp-server-everything': 'dist/index.js'}};

test('an npm server runs its one bin under node, by absolute path; several bins need --command', () => {
  assert.deepEqual(npmCommand(npmResolved), {command: ['node', '/opt/toolcell/server/node_modules/@modelcontextprotocol/server-everything/dist/index.js'], bin: 'dist/index.js'});
  const two = {...npmResolved, bin: {a: 'a.js', b: 'lib/b.js'}};
  assert.throws(() => npmCommand(two), (e: unknown) => e instanceof ToolcellError && /2 bins \(a, b\)/.test(e.message));
  assert.deepEqual(npmCommand(two, 'b').command, ['node', '/opt/toolcell/server/node_modules/@modelcontextprotocol/server-everything/lib/b.js']);
  assert.throws(() => serverCommand(two, 'node x.js'), ConfigError);
});

test('--command is a JSON array or plain words, never a shell string', () => {
  assert.deepEqual(parseCommandFlag('node /opt/toolcell/server/s.js --stdio'), ['node', '/opt/toolcell/server/s.js', '--stdio']);
  assert.deepEqual(parseCommandFlag('["python3", "-m", "srv x"]'), ['python3', '-m', 'srv x']);
  for (const bad of ['', '   ', '[1]', '[]', '["a\\u0000"]', '[bad']) assert.throws(() => parseCommandFlag(bad), ConfigError, bad);
  assert.throws(() => serverCommand({type: 'dir', path: '/x', version: 'dir-1', integrity: 'sha256-1'}, undefined), /needs --command/);
  assert.deepEqual(serverCommand({type: 'pypi-file', path: '/x', fileName: 'f', project: 'weather-tool', version: '1', integrity: 'i', sha256: 'h'}, undefined).command,
    ['python3', '-m', 'weather_tool']);
});

test('consent: --yes, or a terminal to ask on; otherwise refused', () => {
  assert.equal(consentMode(true, false), 'yes');
  assert.equal(consentMode(undefined, true), 'ask');
  assert.equal(consentMode(false, false), 'refuse');
});

test('the npm build installs from a lockfile with install scripts off, checks the integrity, and no operator text reaches the Dockerfile', () => {
  const hostile = {...npmResolved, name: '@x/$(touch /pwn)', version: '1.0.0`id`'};
  const context = buildContext(hostile, {name: 'x', source: 'npm:@x/$(touch /pwn)@1', bin: 'dist/index.js', npmDir: '/nonexistent'});
  assert.match(context.dockerfile, /npm-cli\.js install --package-lock-only --ignore-scripts/);
  assert.match(context.dockerfile, /npm-cli\.js ci --omit=dev --ignore-scripts/);
  assert.match(context.dockerfile, /node verify\.cjs/);
  assert.doesNotMatch(context.dockerfile, /touch|`id`/);
  assert.deepEqual(JSON.parse((context.files.get('pin.json') as {text: string}).text).integrity, hostile.integrity);
  const allowed = buildContext(npmResolved, {name: 'x', source: 's', allowInstallScripts: true, npmDir: '/nonexistent'});
  assert.match(allowed.dockerfile, /npm-cli\.js ci --omit=dev \\/);
  const pypi = buildContext({type: 'pypi-file', path: '/tmp/w-1.0.tar.gz', fileName: 'w-1.0.tar.gz', project: 'w', version: '1.0', integrity: 'sha256-ab', sha256: 'ab'}, {name: 'w', source: 's'});
  assert.match(pypi.dockerfile, /--no-index --no-deps --require-hashes/);
  assert.equal((pypi.files.get('requirements.txt') as {text: string}).text, './dist/w-1.0.tar.gz --hash=sha256:ab\n');
  assert.equal(imageTag('w', '1.0+local!1'), 'toolcell/srv-w:1.0_local_1');
});

const profile = ContainerProfile.parse({name: 'server-offline', backend: 'container', limits: {timeoutMs: 30000, memoryMb: 384, cpus: 1, pids: 64, outputBytes: 4194304},
  filesystem: {readOnlyRoot: true, tmpfs: {'/tmp': '64m'}}, commands: ['node', 'python3']});

test('the permission summary names limits, network, filesystem, commands and runtime; grant changes show both sides', () => {
  const lines = permissionSummary(profile).join('\n');
  for (const part of ['runtime runc', '30000 ms', '384 MB memory (no swap)', '1 CPU', '64 processes', '4194304 B output', 'network: none', 'root read-only', '/tmp 64m', 'mounts none', 'commands: node, python3']) {
    assert.ok(lines.includes(part), part);
  }
  assert.deepEqual(grantChanges(profile, profile), []);
  const wider = ContainerProfile.parse({...profile, limits: {...profile.limits, memoryMb: 2048}, filesystem: {...profile.filesystem, mounts: [{source: '/home', target: '/home', readOnly: false}]}});
  const changes = grantChanges(profile, wider);
  assert.ok(changes.some((l) => l.startsWith('- limits:') && l.includes('384 MB')));
  assert.ok(changes.some((l) => l.startsWith('+ limits:') && l.includes('2048 MB')));
  assert.ok(changes.some((l) => l.startsWith('+ filesystem:') && l.includes('/home → /home (read-write)')));
});

test('tools are shown with invisible characters made visible', () => {
  const lines = describeTool({name: 'echo', title: 'Echo', description: 'Echo\u200B it.\nSecond line'});
  assert.deepEqual(lines, ['  echo — Echo', '      Echo<U+200B> it.', '      Second line']);
});

test('tool names that cannot be served as <package>__<tool> are each named', () => {
  const problems = toolNameProblems('everything', [{name: 'echo'}, {name: 'get.sum'}, {name: 'x'.repeat(60)}, {name: 'echo'}, {name: 'é'}]);
  assert.equal(problems.length, 4);
  assert.match(problems[0]!, /"get\.sum"/);
  assert.match(problems[1]!, /longer than 64/);
  assert.match(problems[2]!, /listed twice/);
  assert.deepEqual(toolNameProblems('everything', [{name: 'get-sum'}, {name: 'Get_Env'}]), []);
});

test('the manifest written is one the loader\'s schema accepts, pinning exactly the pinned fields', () => {
  const tools = [
    {name: 'echo', description: 'Echoes back the input string', inputSchema: {type: 'object', properties: {message: {type: 'string'}}}, icons: [{src: 'x'}], _meta: {a: 1}},
    {name: 'get-sum', title: 'Sum', description: 'Returns the sum', inputSchema: {type: 'object'}, outputSchema: {type: 'object'}, annotations: {readOnlyHint: true}},
  ];
  const manifest = hostedManifest({name: 'everything', version: '2026.8.31', source: 'npm:@modelcontextprotocol/server-everything@2026.8.31',
    integrity: npmResolved.integrity, image: 'toolcell/srv-everything:2026.8.31', imageId: `sha256:${'a'.repeat(64)}`,
    command: ['node', '/opt/toolcell/server/x.js'], args: [], profile, tools});
  assert.ok(HostedPackageManifest.safeParse(JSON.parse(JSON.stringify(manifest))).success);
  assert.equal(manifest.server.profileSha256, profileSha256(profile as unknown as Record<string, unknown>));
  assert.equal(manifest.server.lifetime, 'call');
  assert.deepEqual(Object.keys(manifest.tools[0]!.definition).sort(), ['description', 'inputSchema', 'name']);
  assert.equal(manifest.tools[0]!.sha256, definitionSha256(pinnedDefinition(tools[0]!)));
  assert.equal(manifest.tools[1]!.definition.annotations?.readOnlyHint, true);
  assert.throws(() => hostedManifest({name: 'x', version: '1', source: 'dir:/x', image: 'toolcell/srv-x:1', imageId: `sha256:${'a'.repeat(64)}`,
    command: ['node'], args: [], profile, tools: [{name: 'bad', inputSchema: {type: 'string'}}]}), /type/);
});

test('screening covers tools, prompts, resources and templates from a probe', () => {
  const targets = screeningTargets({tools: [{name: 't'}], prompts: [{name: 'p'}], resources: [{uri: 'file:///r', name: 'r'}], resourceTemplates: [{uriTemplate: 'x://{id}'}]});
  assert.deepEqual(targets.map((t) => `${t.kind}:${t.name}`), ['tool:t', 'prompt:p', 'resource:r', 'resourceTemplate:x://{id}']);
});

test('the user tools directory follows TOOLCELL_TOOLS_DIR, then XDG_DATA_HOME', () => {
  assert.equal(userToolsDir({TOOLCELL_TOOLS_DIR: '/a'}), '/a');
  assert.equal(userToolsDir({XDG_DATA_HOME: '/d'}), '/d/toolcell/tools');
});
