// pypi:<project>==<version> against the index the operator names: wheelhouse look-up, simple-index resolution (loopback server), the build context, and the refusals.
import assert from 'node:assert/strict';
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {createServer, type Server} from 'node:http';
import type {AddressInfo} from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {checkIndexUrl, findInWheelhouse, matchingDistributions, normalizeProjectName, resolveFromIndex} from '../../../src/hosted/pypi-index.ts';
import {resolveSource} from '../../../src/hosted/resolve-source.ts';
import {buildContext} from '../../../src/hosted/server-image.ts';

const SHA = 'a'.repeat(64);
const OTHER = 'b'.repeat(64);

describe('pypi index resolution', () => {
  let wheelhouse: string;
  let server: Server;
  let base: string;
  const seen: string[] = [];

  before(async () => {
    wheelhouse = mkdtempSync(join(tmpdir(), 'toolcell-wheelhouse-'));
    for (const f of ['my_server-1.0.0.tar.gz', 'my_server-1.0.0-py3-none-any.whl', 'my_server-0.9.0-py3-none-any.whl', 'other-1.0.0.tar.gz']) writeFileSync(join(wheelhouse, f), f);
    server = createServer((req, res) => {
      seen.push(`${req.url} ${req.headers.accept}`);
      if (req.url === '/simple/my-server/') {
        res.setHeader('content-type', 'text/html');
        res.end(`<html><body>
<a href="../../files/my_server-1.0.0.tar.gz#sha256=${OTHER}">my_server-1.0.0.tar.gz</a>
<a href="../../files/my_server-1.0.0-py3-none-any.whl#sha256=${SHA}" data-requires-python="&gt;=3.9">my_server-1.0.0-py3-none-any.whl</a>
<a href="../../files/my_server-0.9.0-py3-none-any.whl#sha256=${OTHER}">my_server-0.9.0-py3-none-any.whl</a>
</body></html>`);
      } else if (req.url === '/json/my-server/') {
        res.setHeader('content-type', 'application/vnd.pypi.simple.v1+json');
        res.end(JSON.stringify({meta: {'api-version': '1.0'}, name: 'my-server', files: [
          {filename: 'my_server-1.0.0.tar.gz', url: 'x', hashes: {sha256: SHA}},
        ]}));
      } else if (req.url === '/nohash/my-server/') {
        res.setHeader('content-type', 'text/html');
        res.end('<a href="../../files/my_server-1.0.0.tar.gz">my_server-1.0.0.tar.gz</a>');
      } else {
        res.statusCode = 404;
        res.end('not found');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server?.close();
    rmSync(wheelhouse, {recursive: true, force: true});
  });

  test('names are compared PEP 503-normalized; pure-Python wheels first, then sdists', () => {
    assert.equal(normalizeProjectName('My_Server.Tools'), 'my-server-tools');
    const files = [{fileName: 'my_server-1.0.0.tar.gz'}, {fileName: 'my_server-1.0.0-cp311-cp311-manylinux_2_17_x86_64.whl'}, {fileName: 'my_server-1.0.0-py3-none-any.whl'}, {fileName: 'my_server-1.0.1.tar.gz'}];
    assert.deepEqual(matchingDistributions(files, 'My-Server', '1.0.0').map((f) => f.fileName),
      ['my_server-1.0.0-py3-none-any.whl', 'my_server-1.0.0.tar.gz', 'my_server-1.0.0-cp311-cp311-manylinux_2_17_x86_64.whl']);
  });

  test('--find-links: the best file of exactly that version; an absent version names the ones the folder holds', () => {
    assert.equal(findInWheelhouse(wheelhouse, 'my-server', '1.0.0'), join(wheelhouse, 'my_server-1.0.0-py3-none-any.whl'));
    assert.throws(() => findInWheelhouse(wheelhouse, 'my-server', '2.0.0'), /holds no wheel or sdist of that version \(it has 0\.9\.0, 1\.0\.0\)/);
    assert.throws(() => findInWheelhouse(join(wheelhouse, 'nope'), 'my-server', '1.0.0'), /not a readable folder/);
  });

  test('resolveSource with --find-links resolves to that file and its SHA-256', async () => {
    const r = await resolveSource({type: 'pypi', name: 'my-server', version: '1.0.0'}, {findLinks: wheelhouse});
    assert.equal(r.type, 'pypi-file');
    assert.equal(r.version, '1.0.0');
    assert.match(r.integrity, /^sha256-[0-9a-f]{64}$/);
  });

  test('--index-url: the PEP 503 HTML page gives the file of that version and the SHA-256 it states (wheel preferred)', async () => {
    const found = await resolveFromIndex(`${base}/simple/`, 'My_Server', '1.0.0');
    assert.deepEqual(found, {fileName: 'my_server-1.0.0-py3-none-any.whl', sha256: SHA});
    assert.match(seen.at(-1)!, /^\/simple\/my-server\/ application\/vnd\.pypi\.simple\.v1\+json/);
  });

  test('--index-url: a PEP 691 JSON page works too; a missing project, a missing version and a page without hashes are refused', async () => {
    assert.equal((await resolveFromIndex(`${base}/json`, 'my-server', '1.0.0')).sha256, SHA);
    await assert.rejects(resolveFromIndex(`${base}/simple`, 'absent', '1.0.0'), /has no project absent/);
    await assert.rejects(resolveFromIndex(`${base}/simple`, 'my-server', '3.0.0'), /has no file of that version \(it has 0\.9\.0, 1\.0\.0\)/);
    await assert.rejects(resolveFromIndex(`${base}/nohash`, 'my-server', '1.0.0'), /states no sha256/);
  });

  test('resolveSource with --index-url resolves to a pypi-index artifact; its image installs that version from that index, hash-checked', async () => {
    const r = await resolveSource({type: 'pypi', name: 'my-server', version: '1.0.0'}, {indexUrl: `${base}/simple/`});
    assert.deepEqual(r, {type: 'pypi-index', indexUrl: `${base}/simple`, fileName: 'my_server-1.0.0-py3-none-any.whl', project: 'my_server', version: '1.0.0',
      sha256: SHA, integrity: `sha256-${SHA}`});
    const context = buildContext(r, {name: 'my-server', source: 'pypi:my-server==1.0.0'});
    const requirements = context.files.get('requirements.txt');
    assert.deepEqual(requirements, {text: `--index-url ${base}/simple\nmy_server==1.0.0 --hash=sha256:${SHA}\n`});
    assert.match(context.dockerfile, /pip install --no-deps --require-hashes/);
    assert.doesNotMatch(context.dockerfile, /127\.0\.0\.1/, 'the index URL reaches pip through the requirements file, never the Dockerfile');
    assert.match(context.dockerfile, /USER 65534:65534\nENV HOME=\/tmp PIP_CERT=[^\n]+\nRUN python3 -m pip install/);
  });

  test('without --find-links or --index-url (or without ==version, or with both) pypi:<project> is refused with the options named', async () => {
    await assert.rejects(resolveSource({type: 'pypi', name: 'my-server', version: '1.0.0'}), /needs a package index.*--find-links DIR.*--index-url URL/);
    await assert.rejects(resolveSource({type: 'pypi', name: 'my-server'}, {findLinks: wheelhouse}), /names no version; give the exact one: pypi:my-server==<version>/);
    await assert.rejects(resolveSource({type: 'pypi', name: 'my-server', version: '1.0.0'}, {findLinks: wheelhouse, indexUrl: base}), /exclude each other/);
  });

  test('an index URL must be http(s), without credentials or whitespace', () => {
    assert.equal(checkIndexUrl('https://pypi.example.org/simple/'), 'https://pypi.example.org/simple');
    assert.throws(() => checkIndexUrl('file:///srv/index'), /http: or https:/);
    assert.throws(() => checkIndexUrl('https://user:secret@pypi.example.org/simple'), /user name or password/);
    assert.throws(() => checkIndexUrl('not a url'), /is not a URL/);
  });
});
