#!/usr/bin/env bash
# Runs every test: the .NET unit, storage and functional tests, the official Durable Streams conformance suite, the
# Vercel AI SDK suites, the TypeScript client's tests and the browser tests (headless Chromium), against freshly
# started servers. Installs what it needs: npm packages from each suite's lock file, and Debian's chromium if missing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(pwd)"
CONFIGURATION="${CONFIGURATION:-Release}"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

require() { command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' is required ($2)" >&2; exit 1; }; }
require dotnet "install the .NET 10 SDK"
require node "install Node.js 20 or newer"
require npm "install npm"

# Debian packages the tests need: chromium (browser tests) and redis-server (the Redis store and multi-node tests).
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
MISSING=()
[[ -x "$CHROMIUM" ]] || MISSING+=(chromium)
command -v redis-server >/dev/null 2>&1 || MISSING+=(redis-server)
if [[ ${#MISSING[@]} -gt 0 ]]; then
  echo "==> installing ${MISSING[*]} (Debian packages)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi
export CHROMIUM_PATH="$CHROMIUM"
export DURABLE_SESSIONS_SERVER_DLL="$ROOT/src/DurableSessions.Server/bin/$CONFIGURATION/net10.0/DurableSessions.Server.dll"

echo "==> build"
dotnet build DurableSessions.slnx -c "$CONFIGURATION" -nologo -v quiet

echo "==> .NET tests"
set +e
dotnet test --solution DurableSessions.slnx -c "$CONFIGURATION" --no-build 2>&1 | tee "$WORK/dotnet-test.log"
DOTNET_STATUS=${PIPESTATUS[0]}
set -e
DOTNET_PASSED=$(grep -E '^\s+succeeded: [0-9]+' "$WORK/dotnet-test.log" | tail -1 | grep -oE '[0-9]+' || echo 0)
DOTNET_FAILED=$(grep -E '^\s+failed: [0-9]+' "$WORK/dotnet-test.log" | tail -1 | grep -oE '[0-9]+' || echo 0)

echo "==> conformance suite (@durable-streams/server-conformance-tests, pinned in tests/conformance/package-lock.json)"
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
dotnet "src/DurableSessions.Server/bin/$CONFIGURATION/net10.0/DurableSessions.Server.dll" \
  --urls "http://127.0.0.1:$PORT" --data "$WORK/data" --long-poll-timeout-ms 1000 --Agent:TokensPerSecond=100 > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$WORK/server.log"; echo "error: server did not start" >&2; exit 1; fi
  sleep 0.1
done
set +e
(cd tests/conformance && CONFORMANCE_BASE_URL="http://127.0.0.1:$PORT" CONFORMANCE_LONG_POLL_TIMEOUT_MS=1000 npx vitest run 2>&1) | tee "$WORK/conformance.log"
CONFORMANCE_STATUS=${PIPESTATUS[0]}
set -e
CONF_LINE=$(sed -r 's/\x1b\[[0-9;]*m//g' "$WORK/conformance.log" | grep -E '^\s+Tests\s' | tail -1)
CONF_PASSED=$(echo "$CONF_LINE" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
CONF_FAILED=$(echo "$CONF_LINE" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)

AISDK_PASSED=0
AISDK_FAILED=0
AISDK_STATUS=0
for suite in aisdk aisdk7; do
  echo "==> Vercel AI SDK chat tests, tests/$suite (unmodified ai + @ai-sdk/react, pinned in its package-lock.json)"
  (cd "tests/$suite" && npm ci --no-audit --no-fund --loglevel=error)
  set +e
  (cd "tests/$suite" && AISDK_BASE_URL="http://127.0.0.1:$PORT" npx vitest run 2>&1) | tee "$WORK/$suite.log"
  status=${PIPESTATUS[0]}
  set -e
  if [[ $status -ne 0 ]]; then AISDK_STATUS=$status; fi
  line=$(sed -r 's/\x1b\[[0-9;]*m//g' "$WORK/$suite.log" | grep -E '^\s+Tests\s' | tail -1)
  AISDK_PASSED=$((AISDK_PASSED + $(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)))
  AISDK_FAILED=$((AISDK_FAILED + $(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)))
done

echo "==> TypeScript client (clients/typescript): type-check, build, tests against the server"
(cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && npx tsc -p tsconfig.json)
set +e
(cd clients/typescript && CLIENT_TEST_BASE_URL="http://127.0.0.1:$PORT" npx vitest run 2>&1) | tee "$WORK/ts-client.log"
TS_STATUS=${PIPESTATUS[0]}
set -e
TS_LINE=$(sed -r 's/\x1b\[[0-9;]*m//g' "$WORK/ts-client.log" | grep -E '^\s+Tests\s' | tail -1)
TS_PASSED=$(echo "$TS_LINE" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
TS_FAILED=$(echo "$TS_LINE" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)

echo "==> browser tests (tests/browser): the demo page in headless Chromium ($CHROMIUM), playwright-core pinned in its package-lock.json"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
set +e
(cd tests/browser && npx vitest run 2>&1) | tee "$WORK/browser.log"
BROWSER_STATUS=${PIPESTATUS[0]}
set -e
BROWSER_LINE=$(sed -r 's/\x1b\[[0-9;]*m//g' "$WORK/browser.log" | grep -E '^\s+Tests\s' | tail -1)
BROWSER_PASSED=$(echo "$BROWSER_LINE" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
BROWSER_FAILED=$(echo "$BROWSER_LINE" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
[[ -f tests/browser/artifacts/demo-page.png ]] && echo "screenshot: tests/browser/artifacts/demo-page.png"

echo
echo "Summary: .NET tests $DOTNET_PASSED passed, $DOTNET_FAILED failed; conformance $CONF_PASSED passed, $CONF_FAILED failed; AI SDK $AISDK_PASSED passed, $AISDK_FAILED failed; TypeScript client $TS_PASSED passed, $TS_FAILED failed; browser $BROWSER_PASSED passed, $BROWSER_FAILED failed"
PASSED=$((DOTNET_PASSED + CONF_PASSED + AISDK_PASSED + TS_PASSED + BROWSER_PASSED))
FAILED=$((DOTNET_FAILED + CONF_FAILED + AISDK_FAILED + TS_FAILED + BROWSER_FAILED))
echo "$PASSED passed, $FAILED failed"
if [[ $DOTNET_STATUS -ne 0 || $CONFORMANCE_STATUS -ne 0 || $AISDK_STATUS -ne 0 || $TS_STATUS -ne 0 || $BROWSER_STATUS -ne 0 || $FAILED -ne 0 || $CONF_PASSED -eq 0 || $DOTNET_PASSED -eq 0 || $AISDK_PASSED -eq 0 || $TS_PASSED -eq 0 || $BROWSER_PASSED -eq 0 ]]; then
  exit 1
fi
