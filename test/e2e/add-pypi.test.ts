// `toolcell add pypi:<sdist>`: a tiny Python MCP server, packed into an sdist by the test (python3, no index), installed hash-checked in its image, probed and pinned.
import assert from 'node:assert/strict';
import {execFile} from 'node:child_process';
import {copyFileSync, mkdirSync, readFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {promisify} from 'node:util';
import {HostedPackageManifest} from '../../src/policy/manifest-schema.ts';
import {docker, dockerAvailable} from '../support/docker.ts';
import {CLI, connectStdio} from '../support/mcp-stdio.ts';
import {tempDir} from '../support/temp.ts';

const FIXTURE = fileURLToPath(new URL('../fixtures/pyserver/', import.meta.url));
/** First build adds Debian's pip and setuptools to the install stage (cached afterwards). */
const ADD_TIMEOUT_MS = 600_000;

/** Packs the fixture into `<out>/toolcell_pyfixture-0.1.0.tar.gz` (PEP 625 name, PKG-INFO + pyproject.toml + the package), with python3's tarfile. */
async function buildSdist(out: string): Promise<string> {
  const script = String.raw`
import sys, tarfile, io, os
src, out = sys.argv[1], sys.argv[2]
root = "toolcell_pyfixture-0.1.0"
path = os.path.join(out, root + ".tar.gz")
pkg_info = b"Metadata-Version: 2.1\nName: toolcell-pyfixture\nVersion: 0.1.0\nSummary: Test fixture: a minimal MCP server over stdio\nRequires-Python: >=3.9\n"
with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
    info = tarfile.TarInfo(root + "/PKG-INFO"); info.size = len(pkg_info); info.mode = 0o644
    tar.addfile(info, io.BytesIO(pkg_info))
    for rel in ["pyproject.toml", "toolcell_pyfixture/__init__.py", "toolcell_pyfixture/__main__.py"]:
        tar.add(os.path.join(src, rel), arcname=root + "/" + rel)
print(path)
`;
  const {stdout} = await promisify(execFile)('python3', ['-c', script, FIXTURE, out], {timeout: 30_000});
  return stdout.trim();
}

const ok = await dockerAvailable({images: ['toolcell/python']});

describe('toolcell add pypi:', {skip: !ok && 'no Docker engine or toolcell/python'}, () => {
  const name = `t${process.pid}-py`;
  const indexed = `t${process.pid}-pyfl`;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    dir = await tempDir('toolcell-add-pypi-');
  });
  after(async () => {
    await dir?.dispose();
    await docker.getImage(`toolcell/srv-${name}:0.1.0`).remove().catch(() => undefined);
    await docker.getImage(`toolcell/srv-${indexed}:0.1.0`).remove().catch(() => undefined);
  });

  const add = async (args: string[]): Promise<{code: number; stderr: string}> => {
    try {
      return {code: 0, ...await promisify(execFile)(process.execPath, ['--no-node-snapshot', CLI, 'add', ...args],
        {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, timeout: ADD_TIMEOUT_MS, maxBuffer: 64 * 2 ** 20})};
    } catch (e) {
      return e as {code: number; stderr: string};
    }
  };

  test('pypi:<project>==<version> without an index option is refused (exit 2) naming --find-links and --index-url; nothing is written', async () => {
    const r = await add(['pypi:toolcell-pyfixture==0.1.0', '--name', `${indexed}x`, '--tools', join(dir.path, 'none'), '--yes']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /needs a package index.*--find-links DIR.*--index-url URL/);
    assert.throws(() => readFileSync(join(dir.path, 'none', `${indexed}x`, 'toolcell.json')));
  });

  test('pypi:<project>==<version> --find-links DIR: the file of that version is taken from the wheelhouse, hash-checked, pinned, served and called', {timeout: ADD_TIMEOUT_MS + 90_000}, async () => {
    const wheelhouse = join(dir.path, 'wheelhouse');
    mkdirSync(wheelhouse, {recursive: true});
    const sdist = await buildSdist(wheelhouse);
    // Another version of the same project beside it: must not be the one taken.
    copyFileSync(sdist, join(wheelhouse, 'toolcell_pyfixture-0.0.9.tar.gz'));
    const sha256 = (await promisify(execFile)('sha256sum', [sdist])).stdout.split(' ')[0];
    const tools = join(dir.path, 'fl-tools');
    const missing = await add(['pypi:toolcell-pyfixture==0.2.0', '--find-links', wheelhouse, '--name', indexed, '--tools', tools, '--yes']);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /holds no wheel or sdist of that version \(it has 0\.0\.9, 0\.1\.0\)/);
    const r = await add(['pypi:toolcell-pyfixture==0.1.0', '--find-links', wheelhouse, '--name', indexed, '--tools', tools, '--yes']);
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const manifest = HostedPackageManifest.parse(JSON.parse(readFileSync(join(tools, indexed, 'toolcell.json'), 'utf8')));
    assert.equal(manifest.server.source, 'pypi:toolcell-pyfixture==0.1.0');
    assert.equal(manifest.version, '0.1.0');
    assert.equal(manifest.server.integrity, `sha256-${sha256}`);
    const session = await connectStdio(['--tools', tools, '--no-bundled-tools', '--audit-log', 'off']);
    try {
      const result = await session.client.callTool({name: `${indexed}__py_echo`, arguments: {text: 'from a wheelhouse'}}) as {content: Array<{text?: string}>; isError?: boolean};
      assert.equal(result.isError, undefined, JSON.stringify(result) + session.stderr());
      assert.equal(result.content[0]?.text, 'from a wheelhouse');
    } finally {
      await session.close();
    }
  });

  test('an sdist is installed with pip --require-hashes --no-index --no-deps, run as python3 -m <module>, probed and pinned with its SHA-256', {timeout: ADD_TIMEOUT_MS + 30_000}, async () => {
    const sdist = await buildSdist(dir.path);
    const sha256 = (await promisify(execFile)('sha256sum', [sdist])).stdout.split(' ')[0];
    let r: {code: number; stderr: string};
    try {
      r = {code: 0, ...await promisify(execFile)(process.execPath, ['--no-node-snapshot', CLI, 'add', `pypi:${sdist}`, '--name', name, '--tools', join(dir.path, 'tools'), '--yes'],
        {env: {...process.env, TOOLCELL_LOG_LEVEL: 'warn'}, timeout: ADD_TIMEOUT_MS, maxBuffer: 64 * 2 ** 20})};
    } catch (e) {
      r = e as {code: number; stderr: string};
    }
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    assert.match(r.stderr, /py_echo — Python echo\n {6}Echo the text back\./);
    const manifest = HostedPackageManifest.parse(JSON.parse(readFileSync(join(dir.path, 'tools', name, 'toolcell.json'), 'utf8')));
    assert.equal(manifest.version, '0.1.0');
    assert.equal(manifest.server.integrity, `sha256-${sha256}`);
    assert.deepEqual(manifest.server.command, ['python3', '-m', 'toolcell_pyfixture']);
    assert.deepEqual(manifest.tools.map((t) => t.name), ['py_echo']);
    assert.equal((await docker.getImage(manifest.server.image).inspect()).Id, manifest.server.imageId);
  });
});
