// The container backend on a real Docker engine: normal calls, exit codes, stdin, and the
// ways it refuses to run (engine unreachable, image missing, runtime missing).
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import Docker from 'dockerode';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {ToolcellError} from '../../../src/errors.ts';
import {assertHealthy, containerJob, docker, dockerAvailable, managedContainers, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});

describe('container backend', {skip: !ok && 'no Docker engine'}, () => {
  let backend: ContainerBackend;
  before(() => {
    backend = new ContainerBackend();
  });
  after(async () => {
    await backend.close();
    assert.deepEqual(await managedContainers(`toolcell.owner=${backend.owner}`), []);
  });

  test('a normal call returns stdout, stderr and exit code 0, and its container is removed', async () => {
    const job = python('import sys; print("out"); print("err", file=sys.stderr)');
    const r = await backend.run(job, {signal: noSignal()});
    assert.equal(r.failed, false);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(r.timedOut || r.isCanceled || r.outOfMemory || r.truncated, false);
    assert.ok(r.durationMs > 0);
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
  });

  test('stdin reaches the process and is then closed', async () => {
    const r = await backend.run(python('import sys; d = sys.stdin.read(); print(len(d), d.upper())'), {signal: noSignal()});
    assert.equal(r.stdout, '0 \n');
    const r2 = await backend.run({...python('import sys; d = sys.stdin.read(); print(len(d), d.upper())'), stdin: 'héllo\nworld'}, {signal: noSignal()});
    assert.equal(r2.stdout, '11 HÉLLO\nWORLD\n');
  });

  test('a large stdin (1 MiB) arrives whole', async () => {
    const big = 'x'.repeat(1024 * 1024);
    const r = await backend.run({...python('import sys; print(len(sys.stdin.buffer.read()))'), stdin: big}, {signal: noSignal()});
    assert.equal(r.stdout, `${1024 * 1024}\n`);
  });

  test('a non-zero exit is failed with its exit code and stderr', async () => {
    const r = await backend.run(python('import sys; print("bad input", file=sys.stderr); sys.exit(3)'), {signal: noSignal()});
    assert.equal(r.failed, true);
    assert.equal(r.exitCode, 3);
    assert.equal(r.stderr, 'bad input\n');
    assert.equal(r.timedOut || r.outOfMemory || r.truncated || r.isCanceled, false);
  });

  test('an uncaught exception is a failed call, not a backend error', async () => {
    const r = await backend.run(python('raise ValueError("nope")'), {signal: noSignal()});
    assert.equal(r.failed, true);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /ValueError: nope/);
  });

  test('a command missing from the image fails with 127, not a backend error', async () => {
    const r = await backend.run(containerJob(['/usr/bin/definitely-not-here']), {signal: noSignal()});
    assert.equal(r.failed, true);
    assert.equal(r.exitCode, 127);
    await assertHealthy(backend);
  });

  test('workdir and env of the job apply; the image PATH stays', async () => {
    const r = await backend.run(python('import os; print(os.getcwd(), os.environ["GREETING"], os.environ["PATH"].startswith("/usr/local"))', [], {workdir: '/tmp', env: {GREETING: 'hi'}}), {signal: noSignal()});
    assert.equal(r.stdout, '/tmp hi True\n');
  });

  test('a missing image is BACKEND_UNAVAILABLE naming the image', async () => {
    await assert.rejects(backend.run(containerJob(['/bin/true'], {image: 'toolcell/absent-image'}), {signal: noSignal()}),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && /toolcell\/absent-image/.test(e.message) && /images build/.test(e.message));
    await assertHealthy(backend);
  });

  test('an already aborted signal is canceled without creating a container', async () => {
    const ac = new AbortController();
    ac.abort();
    const job = python('print(1)');
    const r = await backend.run(job, {signal: ac.signal});
    assert.equal(r.isCanceled, true);
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), []);
  });

  test('the shell image runs its utilities', async () => {
    const r = await backend.run(containerJob(['/usr/bin/jq', '-c', '.a | map(. * 2)'], {image: 'toolcell/shell', stdin: '{"a": [1, 2, 3]}', tmpfs: {}}), {signal: noSignal()});
    assert.equal(r.stdout, '[2,4,6]\n');
    const rg = await backend.run(containerJob(['/usr/bin/rg', '--version'], {image: 'toolcell/shell'}), {signal: noSignal()});
    assert.match(rg.stdout, /^ripgrep/);
  });
});

describe('container backend refusals', {skip: !ok && 'no Docker engine'}, () => {
  test('an unreachable engine is BACKEND_UNAVAILABLE saying so', async () => {
    const b = new ContainerBackend({docker: new Docker({socketPath: '/nonexistent/docker.sock'})});
    await assert.rejects(b.run(python('print(1)'), {signal: noSignal()}),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && /unreachable/.test(e.message) && !/nonexistent/.test(e.message));
    await b.close();
  });

  test('runsc asked of an engine without runsc is refused, never run under runc', async () => {
    // The real engine, except that `docker info` lists runc only.
    const noRunsc = new Proxy(docker, {
      get(target, prop, receiver) {
        if (prop === 'info') return async () => ({...(await target.info()), Runtimes: {runc: {path: 'runc'}}});
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const b = new ContainerBackend({docker: noRunsc});
    const job = python('print(1)', [], {runtime: 'runsc'});
    await assert.rejects(b.run(job, {signal: noSignal()}),
      (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE' && /runsc/.test(e.message) && e.data.reason === 'runtime-missing');
    assert.deepEqual(await managedContainers(`toolcell.job=${job.id}`), [], 'no container was created');
    await assertHealthy(b);
    await b.close();
  });

  test('a closed backend refuses new calls', async () => {
    const b = new ContainerBackend();
    await b.close();
    await assert.rejects(b.run(python('print(1)'), {signal: noSignal()}), (e: unknown) => e instanceof ToolcellError && e.code === 'BACKEND_UNAVAILABLE');
  });
});
