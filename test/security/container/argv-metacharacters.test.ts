// Hazard: shell metacharacters in arguments run commands. There is no shell: every argument
// arrives as one literal argv element.
// invariant: container:argv:no-shell
import assert from 'node:assert/strict';
import {describe, test} from 'node:test';
import {assertHealthy, containerJob, dockerAvailable, HOSTILE_ARGS, noSignal, python, useContainerBackend} from '../../support/docker.ts';

const ok = await dockerAvailable({images: ['toolcell/python', 'toolcell/shell']});

describe('argv metacharacters', {skip: !ok && 'no Docker engine'}, () => {
  const backend = useContainerBackend();

  test('metacharacters in arguments arrive as literal argv elements (python)', async () => {
    const r = await backend.run(python('import json, sys; print(json.dumps(sys.argv[1:]))', HOSTILE_ARGS), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), HOSTILE_ARGS);
    await assertHealthy(backend);
  });

  test('metacharacters in arguments arrive as literal argv elements (printf in the shell image)', async () => {
    const r = await backend.run(containerJob(['/usr/bin/printf', '[%s]\\0', ...HOSTILE_ARGS], {image: 'toolcell/shell'}), {signal: noSignal()});
    assert.equal(r.failed, false, r.stderr);
    assert.deepEqual(r.stdout.split('\0').slice(0, -1), HOSTILE_ARGS.map((a) => `[${a}]`));
    await assertHealthy(backend);
  });

  test('a hostile argv[0] is exec\'d as a file name, never through a shell', async () => {
    const r = await backend.run(containerJob(['/usr/bin/true; touch /tmp/pwned']), {signal: noSignal()});
    assert.equal(r.failed, true);
    assert.equal(r.exitCode, 127);
    await assertHealthy(backend);
  });
});
