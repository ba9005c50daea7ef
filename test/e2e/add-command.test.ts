// `toolcell add` as an operator meets it: dir: and oci: fixture servers added and loadable, and every refusal (no consent, flagged, not MCP, name taken) leaves nothing written.
import assert from 'node:assert/strict';
import {execFile, spawn} from 'node:child_process';
import {cpSync, existsSync, readFileSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {promisify} from 'node:util';
import {HostedPackageManifest} from '../../src/policy/manifest-schema.ts';
import {definitionSha256} from '../../src/policy/pins.ts';
import {docker, dockerAvailable} from '../support/docker.ts';
import {FIXTURE_SERVERS_DIR, FIXTURE_TOOL_NAMES, useFixtureServerImage} from '../support/fixture-server.ts';
import {CLI} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

// invariant: hosted:add:nothing-unconfirmed

/** Runs the CLI with stdin not a terminal; every run has its own deadline (an image build on a busy host). */
const run = async (args: string[], timeout = 240_000, env: Record<string, string> = {}) => {
  try {
    const {stdout, stderr} = await promisify(execFile)(process.execPath, ['--no-node-snapshot', CLI, ...args],
      {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn', ...env}, timeout, maxBuffer: 16 * 2 ** 20});
    return {code: 0, stdout, stderr};
  } catch (e) {
    const err = e as {code: number; stdout: string; stderr: string};
    return {code: err.code, stdout: err.stdout, stderr: err.stderr};
  }
};

const prefix = `t${process.pid}`;
/** How many tools the fixture server lists. */
const FIXTURE_TOOLS = FIXTURE_TOOL_NAMES.length;
let dir: Awaited<ReturnType<typeof tempDir>>;
before(async () => {
  dir = await tempDir('toolcell-add-');
});
after(async () => {
  await dir?.dispose();
  // Only the images this file's runs tagged (toolcell/srv-t<pid>-…).
  for (const image of await docker.listImages()) {
    for (const tag of image.RepoTags ?? []) {
      if (tag.startsWith(`toolcell/srv-${prefix}-`)) await docker.getImage(tag).remove().catch(() => undefined);
    }
  }
});

const toolsDir = () => join(dir.path, 'tools');
/** Containers (any state) made from `image` (a tag or ID only this file uses): other test files' containers do not count. */
const containersFrom = async (image: string) => (await docker.listContainers({all: true, filters: {ancestor: [image]}})).map((c) => c.Id);

test('without --yes and without a terminal, add refuses before resolving anything and writes nothing', async () => {
  const r = await run(['add', 'dir:/nonexistent-folder', '--command', 'node x.js', '--name', `${prefix}-noyes`, '--tools', toolsDir()], 30_000);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no terminal to ask on.*--yes/s);
  assert.doesNotMatch(r.stderr, /no such folder/);
  assert.equal(existsSync(join(toolsDir(), `${prefix}-noyes`)), false);
});

test('a source that does not parse is a usage error naming the forms allowed', async () => {
  const r = await run(['add', 'npm:pkg@git+https://x.test/r.git', '--yes', '--tools', toolsDir()], 30_000);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Allowed: npm:/);
});

const ok = await dockerAvailable({images: ['toolcell/node']});

describe('toolcell add with fixture servers', {skip: !ok && 'no Docker engine or toolcell/node'}, () => {
  const fixture = useFixtureServerImage();

  test('dir: copies the folder into an image, probes it once, and writes pins the loader accepts; no container is left', async () => {
    const src = join(dir.path, 'dir-server');
    cpSync(join(FIXTURE_SERVERS_DIR, 'fixture-server.mjs'), join(src, 'fixture-server.mjs'));
    const name = `${prefix}-dir`;
    const r = await run(['add', `dir:${src}`, '--name', name, '--command', 'node /opt/toolcell/server/fixture-server.mjs', '--tools', toolsDir(), '--yes', '--', 'good']);
    assert.equal(r.code, 0, r.stderr);
    // What the operator was shown: each tool's name and description, and the grants.
    assert.match(r.stderr, new RegExp(`Tools \\(${FIXTURE_TOOLS}\\), served as t\\d+-dir__<tool>:`));
    assert.match(r.stderr, /^ {2}echo\n {6}Echo the input\.$/m);
    assert.match(r.stderr, /profile server-offline \(runtime runc\)/);
    assert.match(r.stderr, /network: none/);
    const manifest = HostedPackageManifest.parse(JSON.parse(readFileSync(join(toolsDir(), name, 'toolcell.json'), 'utf8')));
    assert.equal(manifest.server.source, `dir:${src}`);
    assert.deepEqual(manifest.server.command, ['node', '/opt/toolcell/server/fixture-server.mjs']);
    assert.deepEqual(manifest.server.args, ['good']);
    assert.match(manifest.server.integrity ?? '', /^sha256-[0-9a-f]{64}$/);
    const image = await docker.getImage(manifest.server.image).inspect();
    assert.equal(image.Id, manifest.server.imageId);
    assert.equal(image.Config.Labels?.['toolcell.hosted'], name);
    for (const tool of manifest.tools) assert.equal(tool.sha256, definitionSha256(tool.definition));
    // list without --tools reads the user's tools directory (here TOOLCELL_TOOLS_DIR) beside the bundled tools, and shows the server's pins and grants.
    const list = await run(['list', '--json'], 60_000, {TOOLCELL_TOOLS_DIR: toolsDir()});
    const listed = JSON.parse(list.stdout) as {tools: {name: string}[]; servers: Array<Record<string, unknown>>; rejected: unknown[]};
    assert.ok(listed.tools.some((t) => t.name === `${name}__echo`), list.stdout);
    assert.ok(listed.tools.some((t) => t.name === 'text__word_count'), 'the bundled tools are still served');
    assert.deepEqual(listed.rejected, []);
    const server = listed.servers.find((s) => s.name === name);
    assert.deepEqual({source: server?.source, integrity: server?.integrity, imageId: server?.imageId, profile: server?.profile, lifetime: server?.lifetime},
      {source: manifest.server.source, integrity: manifest.server.integrity, imageId: manifest.server.imageId, profile: 'server-offline', lifetime: 'call'});
    assert.ok((server?.grants as string[]).some((g) => g.includes('network: none')));
    const text = await run(['list', '--tools', toolsDir()], 60_000);
    assert.match(text.stdout, new RegExp(`hosted server\\(s\\):\\n {2}${name} dir-[0-9a-f]{12} {2}from dir:`));
    assert.match(text.stdout, /integrity sha256-[0-9a-f]{64}/);
    assert.deepEqual(await containersFrom(manifest.server.imageId), []);
    // The same name again is refused; the package stays as it was.
    const again = await run(['add', `dir:${src}`, '--name', name, '--command', 'node x', '--tools', toolsDir(), '--yes'], 30_000);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already in .*toolcell update/);
  });

  test('oci: pins the local image\'s ID and runs the given command', async () => {
    const name = `${prefix}-oci`;
    const r = await run(['add', `oci:${fixture.tag}`, '--name', name, '--command', 'node /srv/fixture-server.mjs', '--tools', toolsDir(), '--yes', '--', 'good']);
    assert.equal(r.code, 0, r.stderr);
    const manifest = HostedPackageManifest.parse(JSON.parse(readFileSync(join(toolsDir(), name, 'toolcell.json'), 'utf8')));
    assert.equal(manifest.server.imageId, fixture.imageId());
    assert.equal(manifest.server.source, `oci:${fixture.tag}`);
    assert.equal(manifest.tools.length, FIXTURE_TOOLS);
  });

  test('a server whose description hides instructions is refused, each finding named, nothing written; --allow-flagged adds it', async () => {
    const name = `${prefix}-flagged`;
    // rugpull with a change time in the past: echo's description carries <IMPORTANT> and ~/.ssh/id_rsa.
    const args = ['add', `oci:${fixture.tag}`, '--name', name, '--command', 'node /srv/fixture-server.mjs', '--tools', toolsDir(), '--yes', '--', 'rugpull', '0'];
    const r = await run(args);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /tool "echo" \/description: model-markup: "[^"]*<IMPORTANT>/);
    assert.match(r.stderr, /tool "echo" \/description: secret-access: /);
    assert.match(r.stderr, /Nothing was written/);
    assert.equal(existsSync(join(toolsDir(), name)), false);
    const allowed = await run([...args.slice(0, -3), '--allow-flagged', '--', 'rugpull', '0']);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.ok(existsSync(join(toolsDir(), name, 'toolcell.json')));
  });

  test('escape sequences and bidi controls a server puts in its definitions never reach the operator\'s terminal', async () => {
    const src = join(dir.path, 'escape-server');
    cpSync(join(FIXTURE_SERVERS_DIR, 'fixture-server.mjs'), join(src, 'fixture-server.mjs'));
    const file = join(src, 'fixture-server.mjs');
    writeFileSync(file, readFileSync(file, 'utf8').replace(`: 'Echo the input.';`, `: 'Echo the input.\\u001b[2J\\u001b[8mhidden\\u202Eright-to-left';`)
      .replace(`serverInfo: {name: 'fixture'`, `serverInfo: {name: 'fixture\\u202Eerutxif'`));
    const name = `${prefix}-esc`;
    const r = await run(['add', `dir:${src}`, '--name', name, '--command', 'node /opt/toolcell/server/fixture-server.mjs', '--tools', toolsDir(), '--yes', '--allow-flagged', '--', 'good']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /invisible-unicode/);
    assert.match(r.stderr, /Echo the input\.<U\+001B>\[2J<U\+001B>\[8mhidden<U\+202E>right-to-left/);
    assert.match(r.stderr, /says it is: "fixture<U\+202E>erutxif"/);
    assert.doesNotMatch(r.stderr, /[\u001b\u202e]/);
  });

  test('on a terminal, add shows the server and asks; "n" writes nothing, "y" writes the package', async (t) => {
    if (!existsSync('/usr/bin/script')) return t.skip('util-linux script(1), which gives the CLI a terminal, is not installed');
    /** Runs add under script(1) (a pseudo-terminal for stdin and stderr), answering `answer` to the question. */
    const onTerminal = (name: string, answer: string) => new Promise<{code: number | null; out: string}>((resolvePromise) => {
      const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
      const argv = [process.execPath, '--no-node-snapshot', CLI, 'add', `oci:${fixture.tag}`, '--name', name, '--command', 'node /srv/fixture-server.mjs', '--tools', toolsDir(), '--', 'good'];
      const child = spawn('/usr/bin/script', ['-qefc', argv.map(quote).join(' '), '/dev/null'], {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, stdio: ['pipe', 'pipe', 'pipe']});
      let out = '';
      let answered = false;
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (!answered && out.includes('[y/N]')) {
          answered = true;
          child.stdin.write(`${answer}\r`);
        }
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        resolvePromise({code, out});
      });
    });
    const no = await onTerminal(`${prefix}-tty-no`, 'n');
    assert.match(no.out, new RegExp(`Serve these ${FIXTURE_TOOLS} tool\\(s\\) as t\\d+-tty-no__<tool> under profile server-offline\\? \\[y/N\\]`));
    assert.match(no.out, /not confirmed; nothing was written/);
    assert.equal(no.code, 1, no.out);
    assert.equal(existsSync(join(toolsDir(), `${prefix}-tty-no`)), false);
    const yes = await onTerminal(`${prefix}-tty-yes`, 'y');
    assert.equal(yes.code, 0, yes.out);
    assert.ok(existsSync(join(toolsDir(), `${prefix}-tty-yes`, 'toolcell.json')));
  });

  test('a server that does not speak MCP is refused with the reason; nothing written, no container left', async () => {
    const name = `${prefix}-garbage`;
    const r = await run(['add', `oci:${fixture.tag}`, '--name', name, '--command', 'node /srv/fixture-server.mjs', '--tools', toolsDir(), '--yes', '--', 'garbage']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /does not speak MCP/);
    assert.equal(existsSync(join(toolsDir(), name)), false);
    assert.deepEqual(await containersFrom(fixture.imageId()), []);
  });

  test('a command the profile does not allow is refused before any build', async () => {
    const r = await run(['add', `oci:${fixture.tag}`, '--name', `${prefix}-sh`, '--command', 'sh -c id', '--tools', toolsDir(), '--yes'], 60_000);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /"sh" is not in the allowlist of profile "server-offline" \(allowed: node, python3\)/);
  });
});
