import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';

test('/metrics counts egress decisions per tool and outcome (toolcell_egress_total), never a host', async () => {
  const metrics = new ServiceMetrics({defaultMetrics: false});
  metrics.egress('web__fetch', 'allowed');
  metrics.egress('web__fetch', 'allowed');
  metrics.egress('web__fetch', 'denied');
  const {body} = await metrics.render();
  assert.match(body, /^toolcell_egress_total\{tool="web__fetch",outcome="allowed"\} 2$/m);
  assert.match(body, /^toolcell_egress_total\{tool="web__fetch",outcome="denied"\} 1$/m);
});
