import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {accessSync, constants, existsSync} from 'node:fs';
import {join} from 'node:path';
import {test} from 'node:test';
import {IMAGES, nodeBinaryPath, SANDBOXES_DIR} from '../../../../src/backends/container/images.ts';

test('toolcell/node is a Dockerfile image FROM the base, built after it, with Node staged (never downloaded)', () => {
  const node = IMAGES.find((i) => i.name === 'node');
  assert.ok(node);
  assert.equal(node.tag, 'toolcell/node');
  assert.equal(node.kind, 'dockerfile');
  assert.equal(node.from, 'toolcell/base');
  assert.equal(node.stage, 'node');
  assert.ok(IMAGES.findIndex((i) => i.name === 'base') < IMAGES.indexOf(node));
  assert.ok(existsSync(join(SANDBOXES_DIR, 'node', 'Dockerfile')));
});

test('nodeBinaryPath finds the Node 24 binary of the node npm dependency', () => {
  const path = nodeBinaryPath();
  assert.match(path, /node_modules\/node\//);
  accessSync(path, constants.X_OK);
  assert.match(execFileSync(path, ['--version'], {encoding: 'utf8'}), /^v24\./);
});
