import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import {test} from 'node:test';

const VALUE = 'sk-live-"quoted"\\and-0123456789';

// invariant: egress:secret:never-in-output
test('a registered secret value never reaches a log line, raw or JSON-escaped, in json or pretty format', () => {
  for (const format of ['json', 'pretty']) {
    const script = `
      import {log, registerLogSecrets, setLogFormat} from './src/log.ts';
      setLogFormat(${JSON.stringify(format)});
      registerLogSecrets([process.env.V]);
      log.warn({headers: {'x-key': process.env.V}, nested: {deep: [process.env.V]}}, 'upstream said ' + process.env.V);
      log.error({err: new Error('token ' + process.env.V)}, 'failed');
    `;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {env: {...process.env, V: VALUE, TOOLCELL_LOG_LEVEL: 'info'}, encoding: 'utf8', timeout: 30_000});
    assert.equal(child.status, 0, child.stderr);
    assert.ok(child.stderr.includes('[secret]'), `${format}: the value was replaced`);
    assert.ok(!child.stderr.includes(VALUE), `${format}: raw value absent`);
    assert.ok(!child.stderr.includes(JSON.stringify(VALUE).slice(1, -1)), `${format}: escaped value absent`);
    assert.ok(!child.stderr.includes('sk-live-'), `${format}: no part of the value`);
  }
});
