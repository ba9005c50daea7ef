// Hazard: reading the host's environment or files. Nothing is passed into a container but
// what the job names.
// invariant: container:host:nothing-passed-in
import assert from 'node:assert/strict';
import {randomUUID} from 'node:crypto';
import {rmSync, writeFileSync} from 'node:fs';
import {hostname} from 'node:os';
import {after, before, describe, test} from 'node:test';
import {ContainerBackend} from '../../../src/backends/container/container-backend.ts';
import {assertHealthy, containerJob, dockerAvailable, noSignal, python} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});

describe('host isolation', {skip: !ok && 'no Docker engine'}, () => {
  const secret = `s3cret-${randomUUID()}`;
  const hostFile = `/tmp/toolcell-host-secret-${randomUUID()}`;
  let backend: ContainerBackend;
  before(() => {
    process.env.TOOLCELL_TEST_SECRET = secret;
    writeFileSync(hostFile, secret);
    backend = new ContainerBackend();
  });
  after(async () => {
    delete process.env.TOOLCELL_TEST_SECRET;
    rmSync(hostFile, {force: true});
    await backend.close();
  });

  test('the host environment is not visible: env of the tool and of PID 1 lack the server\'s variables', async () => {
    const r = await backend.run(containerJob(['/usr/bin/env'], {image: 'toolcell/shell', env: {GRANTED: 'yes'}}), {signal: noSignal()});
    assert.equal(r.failed, false);
    assert.ok(!r.stdout.includes(secret));
    assert.ok(!r.stdout.includes('TOOLCELL_TEST_SECRET'));
    assert.match(r.stdout, /^GRANTED=yes$/m);
    const init = await backend.run(python('print(open("/proc/1/environ", "rb").read().decode(errors="replace"))'), {signal: noSignal()});
    assert.ok(!init.stdout.includes(secret));
    await assertHealthy(backend);
  });

  test('host files are not visible: a file the test wrote, the host name, the host\'s mounts', async () => {
    const r = await backend.run(python(`
import json, os, sys
print(json.dumps({
  "file": os.path.exists(sys.argv[1]),
  "hostname": open("/etc/hostname").read().strip(),
  "mounts": [l.split()[4] for l in open("/proc/self/mountinfo")],
}))
`, [hostFile]), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    const out = JSON.parse(r.stdout) as {file: boolean; hostname: string; mounts: string[]};
    assert.equal(out.file, false);
    assert.equal(out.hostname, 'sandbox');
    assert.notEqual(out.hostname, hostname());
    // Only the image root, /proc, /dev, /sys, the granted tmpfs, Docker's resolv/hostname/hosts files and the init binary.
    for (const m of out.mounts) {
      assert.match(m, /^(\/|\/proc(\/.*)?|\/dev(\/.*)?|\/sys(\/.*)?|\/tmp|\/etc\/(resolv\.conf|hostname|hosts)|(\/usr)?\/sbin\/docker-init)$/, `unexpected mount ${m}`);
    }
    await assertHealthy(backend);
  });
});
