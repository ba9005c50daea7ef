#!/usr/bin/env bash
# MCP conformance suite (server scenarios) against `toolcell serve --http`:
#   1. builds the content fixture server's image (test/fixtures/content-server, FROM toolcell/node,
#      labelled toolcell.test=conformance, removed at exit; deadline CONFORMANCE_BUILD_TIMEOUT s),
#      writes its hosted package "conformance-content" (resources, a template, prompts; pins from
#      its definitions.json) under OUT/tools, and starts `toolcell serve --http 127.0.0.1:0
#      --unprefixed conformance --unprefixed conformance-content` with the isolate fixture package
#      (test/fixtures/tools/conformance) and that hosted package (bundled profiles; no
#      authentication: loopback only). Needs the Docker engine and toolcell/node (`images build`);
#   2. runs `conformance server --url … --suite all -o OUT/results`
#      (node_modules/.bin/conformance when installed, else `npx -y` of the pinned version);
#   3. reads every scenario's checks.json (not just the summary: a missing fixture can make a
#      summary look fine) and compares it with test/conformance/expected-failures.yml:
#      a scenario fails when it has a FAILURE or WARNING check, or no SUCCESS check at all.
#      Exit 1 on a failure that is not listed, on a listed scenario that now passes (stale
#      entry), on an entry without a reason, or on a listed scenario that did not run.
#   4. stops the server with SIGTERM and requires exit code 0.
#
#   scripts/conformance.sh [OUT_DIR]      default: a new directory under ${TMPDIR:-/tmp}
# Env: TOOLCELL_CLI (default dist/cli.js: run `npm run build` first), CONFORMANCE_BUILD_TIMEOUT
#      (default 300 s), CONFORMANCE_VERSION
#      (default 0.1.16), CONFORMANCE_SUITE (default all), EXPECTED (default
#      test/conformance/expected-failures.yml).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE=node_modules/.bin/node
CLI=${TOOLCELL_CLI:-dist/cli.js}
VERSION=${CONFORMANCE_VERSION:-0.1.16}
SUITE=${CONFORMANCE_SUITE:-all}
EXPECTED=${EXPECTED:-test/conformance/expected-failures.yml}
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/toolcell-conformance.XXXXXX")}
mkdir -p "$OUT"
LOG="$OUT/server.log"

[ -x "$NODE" ] || { echo "conformance: $NODE missing; run npm ci" >&2; exit 2; }
[ -f "$CLI" ] || { echo "conformance: $CLI missing; run npm run build (or set TOOLCELL_CLI)" >&2; exit 2; }

# The hosted fixture server of the resources and prompts scenarios: its image, then its package.
FIXTURE_IMAGE="toolcell-conformance/content-server:$$"
remove_image() { docker image rm -f "$FIXTURE_IMAGE" >/dev/null 2>&1 || true; }
SERVER=""
stop_server() {
  [ -n "$SERVER" ] || return 0
  if kill -0 "$SERVER" 2>/dev/null; then kill -TERM "$SERVER" 2>/dev/null || true; fi
  wait "$SERVER" 2>/dev/null
}
trap 'stop_server || true; remove_image' EXIT
if ! timeout "${CONFORMANCE_BUILD_TIMEOUT:-300}" docker build -q --label toolcell.test=conformance -t "$FIXTURE_IMAGE" \
    test/fixtures/content-server >"$OUT/fixture-build.log" 2>&1; then
  echo "conformance: building the content fixture image failed or took over ${CONFORMANCE_BUILD_TIMEOUT:-300} s (needs toolcell/node: toolcell images build):" >&2
  cat "$OUT/fixture-build.log" >&2
  exit 2
fi
FIXTURE_ID=$(docker image inspect -f '{{.Id}}' "$FIXTURE_IMAGE")
"$NODE" --no-node-snapshot test/fixtures/content-server/write-package.ts "$OUT/tools" conformance-content "$FIXTURE_IMAGE" "$FIXTURE_ID" >/dev/null

TOOLCELL_LOG_LEVEL=${TOOLCELL_LOG_LEVEL:-warn} "$NODE" --no-node-snapshot "$CLI" serve --http 127.0.0.1:0 \
  --no-bundled-tools --tools test/fixtures/tools/conformance --tools "$OUT/tools" --unprefixed conformance --unprefixed conformance-content \
  --audit-log off 2>"$LOG" &
SERVER=$!

URL=""
for _ in $(seq 1 300); do
  URL=$(grep -o 'serving MCP over Streamable HTTP at [^ ]*' "$LOG" 2>/dev/null | awk '{print $NF}' || true)
  [ -n "$URL" ] && break
  kill -0 "$SERVER" 2>/dev/null || { echo "conformance: the server exited:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "conformance: the server did not start within 30 s:" >&2; cat "$LOG" >&2; exit 1; }
echo "conformance: server at $URL; results in $OUT"

if [ -x node_modules/.bin/conformance ]; then
  CONFORMANCE=(node_modules/.bin/conformance)
else
  CONFORMANCE=(npx -y "@modelcontextprotocol/conformance@$VERSION")
fi
# The suite needs Node >= 22: node_modules/.bin first puts Node 24 on PATH.
# Its own exit code is not used: the check below reads every checks.json instead.
PATH="$PWD/node_modules/.bin:$PATH" "${CONFORMANCE[@]}" server --url "$URL" --suite "$SUITE" -o "$OUT/results" \
  > "$OUT/conformance.log" 2>&1 || true
grep -E '^(✓|✗)|^Total' "$OUT/conformance.log" || true

STATUS=0
"$NODE" --input-type=module - "$OUT/results" "$EXPECTED" <<'CHECK' || STATUS=$?
import {readdirSync, readFileSync, existsSync} from 'node:fs';
import {join} from 'node:path';
const [resultsDir, expectedFile] = process.argv.slice(2);

// expected-failures.yml: "server:" then "  - scenario   # reason" lines (the conformance CLI's
// baseline format; the reason is a YAML comment). Parsed here without a YAML dependency.
const expected = new Map();
let section = '';
const problems = [];
for (const [n, line] of readFileSync(expectedFile, 'utf8').split('\n').entries()) {
  const head = /^([a-z]+):\s*(#.*)?$/.exec(line);
  if (head) { section = head[1]; continue; }
  const item = /^\s+-\s+([A-Za-z0-9._\/-]+)\s*(?:#\s*(.*))?$/.exec(line);
  if (item && section === 'server') {
    if (!item[2] || item[2].trim().length < 10) problems.push(`${expectedFile}:${n + 1}: "${item[1]}" has no reason (add "# why")`);
    expected.set(item[1], item[2]?.trim() ?? '');
  }
}

if (!existsSync(resultsDir)) { console.error(`no results in ${resultsDir}`); process.exit(1); }
const results = new Map();
for (const dir of readdirSync(resultsDir)) {
  const file = join(resultsDir, dir, 'checks.json');
  if (!existsSync(file)) continue;
  const scenario = dir.replace(/^server-/, '').replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, '');
  const checks = JSON.parse(readFileSync(file, 'utf8'));
  const count = (s) => checks.filter((c) => c.status === s).length;
  const failed = count('FAILURE') > 0 || count('WARNING') > 0 || count('SUCCESS') === 0;
  const why = checks.filter((c) => c.status === 'FAILURE' || c.status === 'WARNING')
    .map((c) => `${c.status} ${c.name}: ${(c.errorMessage || c.description || '').slice(0, 160)}`);
  results.set(scenario, {failed, success: count('SUCCESS'), failure: count('FAILURE'), warning: count('WARNING'), why});
}

console.log('\nscenario                              result   S/F/W   note');
for (const [scenario, r] of [...results].sort()) {
  const listed = expected.has(scenario);
  const verdict = r.failed ? (listed ? 'expected' : 'FAILED') : (listed ? 'STALE' : 'pass');
  console.log(`${scenario.padEnd(38)}${verdict.padEnd(9)}${`${r.success}/${r.failure}/${r.warning}`.padEnd(8)}${listed ? expected.get(scenario) : ''}`);
  if (r.failed && !listed) problems.push(`${scenario} failed and is not in ${expectedFile}:\n    ${r.why.join('\n    ') || 'no SUCCESS check'}`);
  if (!r.failed && listed) problems.push(`${scenario} now passes: remove it from ${expectedFile}`);
}
for (const scenario of expected.keys()) if (!results.has(scenario)) problems.push(`${scenario} is listed in ${expectedFile} but did not run`);
if (results.size === 0) problems.push('no scenario ran');
if (problems.length > 0) {
  console.error(`\nconformance check FAILED:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`\nconformance check passed: ${results.size} scenarios, ${[...results.values()].filter((r) => !r.failed).length} pass, ${expected.size} expected failures (with reasons)`);
CHECK

CODE=0
stop_server || CODE=$?
trap - EXIT
remove_image
if [ "$CODE" -ne 0 ]; then echo "conformance: the server exited with $CODE after SIGTERM (expected 0)" >&2; cat "$LOG" >&2; STATUS=1; fi
exit "$STATUS"
