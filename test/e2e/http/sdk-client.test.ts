/**
 * A real MCP client (SDK v2 `Client` over `StreamableHTTPClientTransport`) against the HTTP
 * service on 127.0.0.1, in both protocol eras (2025-11-25 initialize + session; 2026-07-28
 * per-request): it lists and calls tools, receives progress notifications, and cancels a long
 * call, after which the sandbox is stopped and the server keeps answering.
 */
import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import type {HttpService} from '../../../src/frontend/http/serve-http.ts';
import {hashApiKey} from '../../../src/policy/service-config.ts';
import {anyRuntime, connectHttp, KEYS, RUNTIME_KINDS, startService, until, useFixtures} from './support.ts';

const fixtures = useFixtures();

for (const kind of RUNTIME_KINDS) {
  describe(`${kind} runtime`, () => {
    let env: Awaited<ReturnType<typeof anyRuntime>>;
    let service: HttpService;
    before(async () => {
      env = await anyRuntime(kind, fixtures);
      service = await startService(env.runtime, {
        apiKeys: [{name: 'alice', sha256: hashApiKey(KEYS.alice)}],
        grants: [{principal: 'key:alice', packages: '*'}],
        metrics: {principals: ['key:alice']},
      });
    });
    after(async () => {
      await service.shutdown({drainMs: 0});
    });

    for (const era of ['legacy', 'modern'] as const) {
      test(`${era}: lists tools and calls one`, async () => {
        const {client, close} = await connectHttp(service.url, {token: KEYS.alice, era});
        try {
          const names = (await client.listTools()).tools.map((t) => t.name).sort();
          assert.deepEqual(names, ['fixture__double', 'fixture__echo', 'fixture__spin', 'other__shout']);
          const result = await client.callTool({name: 'fixture__double', arguments: {x: 21}});
          assert.deepEqual(result.content, [{type: 'text', text: '42'}]);
          assert.equal((result._meta?.['toolcell/usage'] as {backend: string}).backend, 'isolate');
          const invalid = await client.callTool({name: 'fixture__double', arguments: {x: 'nope'}});
          assert.equal(invalid.isError, true, 'invalid arguments are a tool error');
        } finally {
          await close();
        }
      });

      test(`${era}: progress notifications reach the client over HTTP`, async () => {
        const {client, close} = await connectHttp(service.url, {token: KEYS.alice, era});
        try {
          const progress: Array<{progress: number; total?: number; message?: string}> = [];
          const result = await client.callTool({name: 'fixture__echo', arguments: {text: 'hi'}}, {onprogress: (p) => progress.push(p)});
          assert.deepEqual(result.content, [{type: 'text', text: 'hi'}]);
          assert.ok(progress.length >= 1, 'at least one progress notification');
          for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.progress > progress[i - 1]!.progress, 'progress increases');
          // The server sends all three before the result (checked on the raw SSE stream in
          // transport-guards.test.ts); the SDK client may drop the last one if it handles it after
          // the response, so here the received ones must be a prefix of the stages.
          const stages = ['queued', 'running in a fresh sandbox', 'finished'];
          assert.ok(progress.length >= 2, `progress: ${JSON.stringify(progress)}`);
          assert.deepEqual(progress.map((p) => p.message), stages.slice(0, progress.length));
        } finally {
          await close();
        }
      });

      test(`${era}: cancelling a long call stops its sandbox; the call ends as cancelled and the server stays responsive`, async () => {
        const {client, close} = await connectHttp(service.url, {token: KEYS.alice, era});
        try {
          const before = (await env.auditEvents()).length;
          const controller = new AbortController();
          const started = performance.now();
          const call = client.callTool({name: 'fixture__spin', arguments: {}}, {signal: controller.signal});
          await until(() => env.runtime.dispatcher.stats().isolate.running > 0, 5000, 'the spin call to start');
          controller.abort();
          await assert.rejects(call, (err: Error) => /abort/i.test(`${err.name} ${err.message}`));
          // The sandbox is stopped well before the profile's 2 s time limit would have stopped it.
          await until(() => env.runtime.dispatcher.stats().isolate.running === 0, 1900, 'the sandbox to stop after cancellation');
          await until(async () => (await env.auditEvents()).length > before, 3000, 'the audit event of the cancelled call');
          const event = (await env.auditEvents()).slice(before).find((e) => e.tool === 'fixture__spin');
          assert.ok(event, 'the cancelled call was audited');
          assert.equal(event.outcome, 'canceled');
          assert.ok(event.durationMs < 2000, `ended by cancellation after ${event.durationMs} ms, not by the 2 s limit`);
          assert.ok(performance.now() - started < 5000);
          const next = await client.callTool({name: 'fixture__double', arguments: {x: 2}});
          assert.deepEqual(next.content, [{type: 'text', text: '4'}], 'the server still answers');
        } finally {
          await close();
        }
      });
    }

    test('a long call that is not cancelled ends with TIMEOUT at its profile limit', async () => {
      const {client, close} = await connectHttp(service.url, {token: KEYS.alice, era: 'modern'});
      try {
        const result = await client.callTool({name: 'fixture__spin', arguments: {}});
        assert.equal(result.isError, true);
        assert.equal((result._meta?.['toolcell/error'] as {code: string}).code, 'TIMEOUT');
      } finally {
        await close();
      }
    });

    test('/healthz, /readyz and /metrics answer', async () => {
      const health = await fetch(`${service.origin}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), {status: 'ok'});
      const ready = await fetch(`${service.origin}/readyz`);
      const report = await ready.json() as {ready: boolean; tools: number; backends: Record<string, string>};
      assert.equal(ready.status, 200, JSON.stringify(report));
      assert.equal(report.ready, true);
      assert.equal(report.tools, 4);
      assert.equal(report.backends.isolate, 'ok');
      const metrics = await fetch(`${service.origin}/metrics`, {headers: {Authorization: `Bearer ${KEYS.alice}`}});
      assert.equal(metrics.status, 200);
      const text = await metrics.text();
      assert.match(text, /toolcell_dispatch_queue_depth\{backend="isolate",state="running"\} \d/);
      assert.match(text, /toolcell_http_responses_total\{route="mcp",status="200"\} [1-9]/);
      assert.match(text, /process_cpu_user_seconds_total/);
    });
  });
}
