// What a call with secrets hands back is scrubbed: each real value (raw or JSON-escaped) becomes the call's placeholder, in a server's JSON result (strings and keys), a container's stdout/stderr, error text and relayed notifications.
// invariant: egress:secret:scrubbed-from-output
import assert from 'node:assert/strict';
import {chmod} from 'node:fs/promises';
import {after, before, test} from 'node:test';
import {makeResult, type ContainerJob, type ServerJob} from '../../../src/backends/backend.ts';
import {boundedJsonText, boundedScrubbedText, MAX_LOG_DATA_CHARS} from '../../../src/backends/server/bounded-json.ts';
import {outputScrubber} from '../../../src/egress/output-scrub.ts';
import {SecretStore, type CallSecrets} from '../../../src/egress/secrets.ts';
import {tempDir} from '../../support/temp.ts';

/** A value with characters JSON escapes, so that its form inside JSON text differs. */
const VALUE = 'tc-"quoted"\\value-0123';
let dir: Awaited<ReturnType<typeof tempDir>>;
let store: SecretStore;
before(async () => {
  dir = await tempDir();
  const file = await dir.write('secrets.json', {API: {env: 'TC_SCRUB_API', hosts: ['api.example.com'], header: 'Authorization'}});
  await chmod(file, 0o600);
  store = await SecretStore.load(file, {TC_SCRUB_API: VALUE});
});
after(() => dir.dispose());

const grant = {allow: ['api.example.com'], maxRequests: 1, maxBytesOut: 1, maxBytesIn: 1, requestTimeoutMs: 1000} as never;
const sandbox = (secrets?: CallSecrets): ContainerJob => ({kind: 'container', id: 'j', image: 'i', argv: ['/bin/x'], limits: {timeoutMs: 1, memoryMb: 1, cpus: 1, pids: 1, outputBytes: 1},
  network: {egress: grant}, readOnlyRoot: true, tmpfs: {}, mounts: [], runtime: 'runc', profile: 'p',
  egress: {callId: 'j', principal: 'local', tool: 't', profile: 'p', grant, ...(secrets ? {secrets} : {})}});
const serverJob = (secrets?: CallSecrets) => ({kind: 'server', id: 'j', sandbox: sandbox(secrets), tool: 't', args: {}, verifyListing: () => ({ok: true}), limits: sandbox().limits, packageName: 'p'}) as ServerJob;

test('no secrets, no scrubber', () => {
  assert.equal(outputScrubber(sandbox()), undefined);
  assert.equal(outputScrubber(serverJob()), undefined);
  assert.equal(outputScrubber({kind: 'isolate'} as never), undefined);
});

test('a hosted server\'s JSON result: the value in strings and keys becomes the placeholder; the JSON stays valid', () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  secrets.close(); // the call is over when its output is read: scrubbing still works
  const scrub = outputScrubber(serverJob(secrets))!;
  const result = {content: [{type: 'text', text: `got ${VALUE}!`}], structuredContent: {[VALUE]: [VALUE, 1, null]}};
  const out = scrub.execution(makeResult(1, {stdout: JSON.stringify(result), error: {name: 'E', message: `bad ${VALUE}`}}));
  assert.ok(!out.stdout.includes(JSON.stringify(VALUE).slice(1, -1)) && !out.stdout.includes(VALUE), out.stdout);
  assert.deepEqual(JSON.parse(out.stdout), {content: [{type: 'text', text: `got ${ph}!`}], structuredContent: {[ph]: [ph, 1, null]}});
  assert.equal(out.error?.message, `bad ${ph}`);
});

test('a container\'s stdout and stderr, raw or JSON-escaped, and relayed notifications', () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  const scrub = outputScrubber(sandbox(secrets))!;
  const out = scrub.execution(makeResult(1, {stdout: `a ${VALUE} b`, stderr: `{"k":${JSON.stringify(VALUE)}}`}));
  assert.equal(out.stdout, `a ${ph} b`);
  assert.equal(out.stderr, `{"k":"${ph}"}`);
  const serverScrub = outputScrubber(serverJob(secrets))!;
  assert.deepEqual(serverScrub.event({type: 'progress', progress: 1, message: `m ${VALUE}`}), {type: 'progress', progress: 1, message: `m ${ph}`});
  // Relayed log data is one-line JSON text: the escaped form is found there.
  assert.deepEqual(serverScrub.event({type: 'log', level: 'info', data: JSON.stringify({v: VALUE})}), {type: 'log', level: 'info', data: JSON.stringify({v: ph})});
  // Text that is not JSON in a server's stdout is still scrubbed as text.
  assert.equal(serverScrub.execution(makeResult(1, {stdout: `not json ${VALUE}`})).stdout, `not json ${ph}`);
});

test('a "__proto__" key is kept as a key, scrubbed, and sets no prototype', () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  const scrub = outputScrubber(serverJob(secrets))!;
  const stdout = `{"__proto__":{"polluted":${JSON.stringify(VALUE)}},"k":${JSON.stringify(VALUE)}}`;
  const out = scrub.execution(makeResult(1, {stdout})).stdout;
  assert.equal(out, `{"__proto__":{"polluted":"${ph}"},"k":"${ph}"}`);
  assert.ok(!out.includes(VALUE) && !out.includes(JSON.stringify(VALUE).slice(1, -1)));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  secrets.close();
});

test('values that contain one another: the longer is replaced whole, not its remainder left beside the shorter one\'s placeholder', async () => {
  const SHORT = 'tc-prefix-value-01';
  const LONG = `${SHORT}-and-the-secret-tail-99`;
  const file = await dir.write('overlap.json', {
    SHORT: {env: 'TC_OV_SHORT', hosts: ['a.example.com'], header: 'X-A'},
    LONG: {env: 'TC_OV_LONG', hosts: ['b.example.com'], header: 'X-B'},
  });
  await chmod(file, 0o600);
  // Declared both ways round: the order of declaration must not matter.
  for (const env of [{TC_OV_SHORT: SHORT, TC_OV_LONG: LONG}, {TC_OV_SHORT: LONG, TC_OV_LONG: SHORT}]) {
    const overlapping = await SecretStore.load(file, env);
    const secrets = overlapping.forCall(['SHORT', 'LONG']);
    const longPh = env.TC_OV_LONG === LONG ? secrets.placeholders.LONG! : secrets.placeholders.SHORT!;
    const shortPh = env.TC_OV_LONG === LONG ? secrets.placeholders.SHORT! : secrets.placeholders.LONG!;
    const out = outputScrubber(sandbox(secrets))!.execution(makeResult(1, {stdout: `[${LONG}] [${SHORT}]`})).stdout;
    assert.equal(out, `[${longPh}] [${shortPh}]`);
    // The proxy's response scrubber, across chunks too.
    const stream = secrets.scrubber();
    const body = Buffer.from(`x${LONG}y${SHORT}z`);
    const streamed = Buffer.concat([stream.chunk(body.subarray(0, 7)), stream.chunk(body.subarray(7, 30)), stream.chunk(body.subarray(30)), stream.flush()]).toString();
    assert.equal(streamed, `x${longPh}y${shortPh}z`);
    assert.ok(!streamed.includes('secret-tail'));
    secrets.close();
  }
});

test('cost: a result of many tiny strings is searched once per value, not walked string by string (walked only on a hit)', () => {
  let calls = 0;
  let chars = 0;
  const counted = (s: string) => {
    calls++;
    chars += s.length;
    return s.split(VALUE).join('PLACEHOLDER').split(JSON.stringify(VALUE).slice(1, -1)).join('PLACEHOLDER');
  };
  const secrets = {carries: () => false, outputScrubber: () => counted} as unknown as CallSecrets;
  const scrub = outputScrubber(serverJob(secrets))!;
  const tiny = JSON.stringify({content: [{type: 'text', text: 'x'}], structuredContent: {items: Array.from({length: 200_000}, (_, i) => String(i % 10))}});
  const out = scrub.execution(makeResult(1, {stdout: tiny}));
  assert.equal(out.stdout, tiny);
  // One search of the whole text (plus stderr), not one per string: 200 000 strings would be 200 000 calls.
  assert.ok(calls <= 3, `${calls} scrub calls`);
  assert.ok(chars <= tiny.length + 100, `${chars} characters searched for ${tiny.length}`);
  // Log data (structured) likewise.
  calls = 0;
  const data = {items: Array.from({length: 50_000}, () => 'y')};
  assert.equal(scrub.event({type: 'log', level: 'info', data}).type, 'log');
  assert.ok(calls <= 1, `${calls} scrub calls for log data`);
  // A hit is still found inside one of the tiny strings, and only then walked.
  calls = 0;
  const hit = JSON.stringify({items: [...Array.from({length: 1000}, () => 'z'), `a${VALUE}b`]});
  assert.deepEqual(JSON.parse(scrub.execution(makeResult(1, {stdout: hit})).stdout), {items: [...Array.from({length: 1000}, () => 'z'), 'aPLACEHOLDERb']});
  assert.ok(calls > 1000, 'walked on a hit');
});

test('log data cut to its bound after the scrub: a value straddling the 8 KiB cut leaves no prefix (before: the cut kept one)', () => {
  const secrets = store.forCall(['API']);
  const ph = secrets.placeholders.API!;
  const scrub = outputScrubber(serverJob(secrets))!;
  const escaped = JSON.stringify(VALUE).slice(1, -1);
  const prefix = escaped.slice(0, 12);
  // A string: cut at MAX_LOG_DATA_CHARS - 1 characters, with 12 characters of the value before the cut.
  const text = `${'a'.repeat(MAX_LOG_DATA_CHARS - 1 - 12)}${VALUE}`;
  assert.ok(scrub.text(boundedJsonText(text)).includes(VALUE.slice(0, 12)), 'cutting first leaves the prefix (the attack)');
  const out = boundedScrubbedText(text, scrub.text);
  assert.equal(out.length, MAX_LOG_DATA_CHARS);
  assert.ok(!out.includes(VALUE.slice(0, 12)) && out.endsWith('…'), out.slice(-40));
  // Structured data: the JSON-escaped form straddles the cut.
  const data = {k: `${'b'.repeat(MAX_LOG_DATA_CHARS - 1 - 12 - '{"k":"'.length)}${VALUE}`};
  assert.ok(scrub.text(boundedJsonText(data)).includes(prefix), 'cutting first leaves the escaped prefix (the attack)');
  const structured = boundedScrubbedText(data, scrub.text);
  assert.ok(!structured.includes(prefix) && !structured.includes(VALUE.slice(0, 12)), structured.slice(-40));
  // Short data is whole, the value replaced; without a scrubber it is exactly boundedJsonText.
  assert.equal(boundedScrubbedText({k: VALUE}, scrub.text), JSON.stringify({k: ph}));
  assert.equal(boundedScrubbedText(data, undefined), boundedJsonText(data));
  secrets.close();
});
