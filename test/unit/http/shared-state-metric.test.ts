// toolcell_shared_state_reachable: 1 / 0 from the shared store's report, absent when no shared store is watched.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';

test('the shared-state gauge follows the store and is absent without one', async () => {
  const metrics = new ServiceMetrics({defaultMetrics: false});
  assert.doesNotMatch((await metrics.render()).body, /^toolcell_shared_state_reachable/m);
  let reachable = true;
  metrics.watchSharedState(() => reachable);
  assert.match((await metrics.render()).body, /^toolcell_shared_state_reachable\{store="redis"\} 1$/m);
  reachable = false;
  assert.match((await metrics.render()).body, /^toolcell_shared_state_reachable\{store="redis"\} 0$/m);
});
