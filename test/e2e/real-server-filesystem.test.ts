// The real `@modelcontextprotocol/server-filesystem` from npm, added with `toolcell add` under a profile that grants the workspace read-only (told to the server with SERVER_ARGS):
// reads inside work; paths outside (absolute, `..`, a symlink) and every write fail, nothing is written on the host, the server keeps serving, no container is left.
// invariant: server:mounts:read-only-grant
// invariant: container:filesystem:only-grants-writable
import assert from 'node:assert/strict';
import {chmodSync, readdirSync, readFileSync, statSync, symlinkSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {connectStdio, errorCode, textOf} from '../support/mcp-stdio.ts';
import {addNpmServer, ADD_TIMEOUT_MS, realServerSkip, type RealServer} from '../support/real-server.ts';
import {tempDir} from '../support/temp.ts';

const SPEC = '@modelcontextprotocol/server-filesystem@2026.8.31';
const skip = await realServerSkip(SPEC);
const CALL_MS = 90_000;
/**
 * Where the workspace is mounted in the sandbox. `toolcell add` probes the server once without
 * the profile's mounts, and server-filesystem exits at start when its directory does not exist,
 * so the target must exist in the image: /mnt (empty in toolcell/node). A target such as
 * /workspace makes `add` fail ("the server ended before it answered initialize").
 */
const TARGET = '/mnt';
const INSIDE = 'hello from the workspace\n';

/** Polls `check` until it holds or `ms` passed (then fails naming `what`). */
async function until(check: () => Promise<boolean> | boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > end) assert.fail(`${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Every path under `dir` with its size and mtime: what must not change. */
function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, {withFileTypes: true}).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      const s = statSync(p, {throwIfNoEntry: false});
      out.push(`${p} ${e.isSymbolicLink() ? 'link' : e.isDirectory() ? 'dir' : 'file'} ${s?.size ?? '-'} ${s?.mtimeMs ?? '-'}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.join('\n');
}

describe('real server-filesystem over a read-only workspace mount', {skip}, () => {
  const name = `f${process.pid}-filesystem`;
  const tool = (t: string) => `${name}__${t}`;
  let server: RealServer | undefined;
  let workspace: Awaited<ReturnType<typeof tempDir>> | undefined;
  let session: Awaited<ReturnType<typeof connectStdio>> | undefined;
  let initial = '';

  before(async () => {
    workspace = await tempDir('toolcell-fs-workspace-');
    chmodSync(workspace.path, 0o755); // the sandbox's per-call uid reads it as "others" (mkdtemp makes it 0700)
    await workspace.write('inside.txt', INSIDE);
    await workspace.write('sub/nested.txt', 'nested\n');
    // A link planted in the workspace that leads out of the allowed directory (in the sandbox: the image's /etc/passwd).
    symlinkSync('/etc/passwd', join(workspace.path, 'escape'));
    initial = snapshot(workspace.path);
    server = await addNpmServer({spec: SPEC, name, mounts: [{source: '${workspace}', target: TARGET, readOnly: true}], serverArgs: [TARGET]});
    session = await connectStdio(['--tools', server.toolsDir, '--profiles', server.profilesDir, '--no-bundled-tools', '--workspace', workspace.path, '--audit-log', 'off']);
  }, {timeout: ADD_TIMEOUT_MS + 60_000});
  after(async () => {
    await session?.close();
    await server?.dispose();
    await workspace?.dispose();
  });
  const call = (t: string, args: Record<string, unknown>) => session!.client.callTool({name: tool(t), arguments: args}, {timeout: CALL_MS});
  /** Nothing was written on the host, a read still works, and no container of this test is left. */
  const unchangedAndServing = async () => {
    assert.equal(snapshot(workspace!.path), initial, 'the host workspace is unchanged');
    assert.equal(readFileSync(join(workspace!.path, 'inside.txt'), 'utf8'), INSIDE);
    const r = await call('read_text_file', {path: `${TARGET}/inside.txt`});
    assert.equal(textOf(r), INSIDE, session!.stderr().slice(-2000));
    await until(async () => (await server!.containers()).length === 0, 30_000, 'a container of this test is left');
  };

  test('reads inside the mounted workspace work', {timeout: 5 * CALL_MS}, async () => {
    assert.deepEqual(server!.manifest.server.args, [TARGET]);
    const r = await call('read_text_file', {path: `${TARGET}/inside.txt`});
    assert.equal(r.isError ?? false, false, `${JSON.stringify(r).slice(0, 1000)}\n${session!.stderr().slice(-2000)}`);
    assert.equal(textOf(r), INSIDE);
    const nested = await call('read_text_file', {path: `${TARGET}/sub/nested.txt`});
    assert.equal(textOf(nested), 'nested\n');
    const list = await call('list_directory', {path: TARGET});
    assert.match(textOf(list), /\[FILE\] inside\.txt/);
    assert.match(textOf(list), /\[DIR\] sub/);
    await unchangedAndServing();
  });

  test('paths outside the allowed directory fail: absolute, "..", and a symlink leading out', {timeout: 6 * CALL_MS}, async () => {
    for (const path of ['/etc/passwd', `${TARGET}/../etc/passwd`, `${TARGET}/escape`]) {
      const r = await call('read_text_file', {path});
      assert.equal(r.isError, true, `${path}: ${JSON.stringify(r).slice(0, 500)}`);
      assert.doesNotMatch(textOf(r), /root:x:0:0/, `${path}: nothing of the file is returned`);
      assert.match(textOf(r), /denied|outside|not allowed/i, path);
    }
    await unchangedAndServing();
  });

  test('every write fails, inside the read-only mount or outside it, and nothing is written on the host', {timeout: 8 * CALL_MS}, async () => {
    const attempts: Array<[string, Record<string, unknown>]> = [
      ['write_file', {path: `${TARGET}/new.txt`, content: 'written'}],
      ['write_file', {path: `${TARGET}/inside.txt`, content: 'overwritten'}],
      ['edit_file', {path: `${TARGET}/inside.txt`, edits: [{oldText: 'hello', newText: 'bye'}]}],
      ['create_directory', {path: `${TARGET}/newdir`}],
      ['move_file', {source: `${TARGET}/inside.txt`, destination: `${TARGET}/moved.txt`}],
      ['write_file', {path: '/tmp/outside.txt', content: 'outside the allowed directory'}],
    ];
    for (const [t, args] of attempts) {
      const r = await call(t, args);
      assert.equal(r.isError, true, `${t} ${JSON.stringify(args)}: ${JSON.stringify(r).slice(0, 500)}`);
      // The server's own error (EROFS, or access denied outside its directory), relayed as a tool error: not a toolcell failure code.
      assert.equal(errorCode(r), undefined, `${t}: ${JSON.stringify(r).slice(0, 500)}`);
      // mkdir on a read-only mount reports ENOENT (Node's recursive mkdir); what counts is the snapshot below.
      assert.match(textOf(r), /read-only|EROFS|ENOENT|denied|outside|not allowed/i, `${t}: ${textOf(r)}`);
    }
    await unchangedAndServing();
  });
});
