#!/usr/bin/env bash
# Runs every test: the .NET unit, storage (SQLite and a real redis-server), functional and multi-node tests, the
# official Durable Streams conformance suite (against the SQLite and the Redis store), the Vercel AI SDK suites, the
# TypeScript client's tests and the browser tests (headless Chromium), against freshly started servers. Installs what
# it needs: npm packages from each suite's lock file, and Debian's chromium, redis-server and postgresql when missing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(pwd)"
CONFIGURATION="${CONFIGURATION:-Release}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

require() { command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' is required ($2)" >&2; exit 1; }; }
require dotnet "install the .NET 10 SDK"
require node "install Node.js 20 or newer"
require npm "install npm"

# Debian packages the tests need: chromium (browser tests), redis-server (the Redis store and multi-node tests) and
# postgresql (the strategy app on PostgreSQL; the tests start a scratch cluster of their own).
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
MISSING=()
[[ -x "$CHROMIUM" ]] || MISSING+=(chromium)
command -v redis-server >/dev/null 2>&1 || MISSING+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || MISSING+=(postgresql)
if [[ ${#MISSING[@]} -gt 0 ]]; then
  echo "==> installing ${MISSING[*]} (Debian packages)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi
export CHROMIUM_PATH="$CHROMIUM"
export DURABLE_SESSIONS_SERVER_DLL="$ROOT/src/DurableSessions.Server/bin/$CONFIGURATION/net10.0/DurableSessions.Server.dll"

echo "==> build"
dotnet build DurableSessions.slnx -c "$CONFIGURATION" -nologo -v quiet
SERVER_DLL="src/DurableSessions.Server/bin/$CONFIGURATION/net10.0/DurableSessions.Server.dll"

free_port() { node --input-type=module -e "import { freePort } from './tests/server-process.mjs'; console.log(await freePort())"; }

# start_server NAME PORT ARGS...: starts the built server in the background and waits for /health; sets LAST_PID.
start_server() {
  local name=$1 port=$2; shift 2
  dotnet "$SERVER_DLL" --urls "http://127.0.0.1:$port" --long-poll-timeout-ms 1000 "$@" > "$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    if ! kill -0 "$LAST_PID" 2>/dev/null; then cat "$WORK/$name.log"; echo "error: $name did not start" >&2; exit 1; fi
    sleep 0.1
  done
  echo "error: $name did not answer /health" >&2; exit 1
}

# run_suite NAME DIR [ENV=VALUE...]: runs a vitest suite and adds its counts to the totals under NAME.
SUMMARY=()
PASSED=0
FAILED=0
STATUS=0
run_suite() {
  local name=$1 dir=$2; shift 2
  set +e
  (cd "$dir" && env "$@" npx vitest run 2>&1) | tee "$WORK/suite.log"
  local status=${PIPESTATUS[0]}
  set -e
  local line passed failed
  line=$(sed -r 's/\x1b\[[0-9;]*m//g' "$WORK/suite.log" | grep -E '^\s+Tests\s' | tail -1)
  passed=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
  failed=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
  # A suite that ran nothing is a failure too.
  if [[ $status -ne 0 || $passed -eq 0 ]]; then STATUS=1; fi
  PASSED=$((PASSED + passed)); FAILED=$((FAILED + failed))
  SUMMARY+=("$name $passed passed, $failed failed")
}

# run_dotnet NAME [ENV=VALUE...] -- DOTNET_TEST_ARGS...: runs dotnet test, adds its counts to the totals under NAME and
# keeps its output in $WORK/dotnet-test.log for the failure list at the end.
DOTNET_FAILED=0
run_dotnet() {
  local name=$1; shift
  local environment=()
  while [[ $1 != -- ]]; do environment+=("$1"); shift; done
  shift
  set +e
  env "${environment[@]}" dotnet test "$@" -c "$CONFIGURATION" --no-build 2>&1 | tee "$WORK/run.log"
  local status=${PIPESTATUS[0]}
  set -e
  cat "$WORK/run.log" >> "$WORK/dotnet-test.log"
  local passed failed
  passed=$(grep -E '^\s+succeeded: [0-9]+' "$WORK/run.log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  failed=$(grep -E '^\s+failed: [0-9]+' "$WORK/run.log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  if [[ $status -ne 0 || $passed -eq 0 ]]; then STATUS=1; fi
  PASSED=$((PASSED + passed)); FAILED=$((FAILED + failed)); DOTNET_FAILED=$((DOTNET_FAILED + failed))
  SUMMARY+=("$name $passed passed, $failed failed")
}

echo "==> .NET tests"
run_dotnet ".NET tests" -- --solution DurableSessions.slnx

echo "==> the strategy app's tests again, on PostgreSQL (a scratch cluster the tests start and remove)"
run_dotnet "strategy app on PostgreSQL" STRATEGY_TEST_DATABASE=postgres -- --project apps/StrategyExecution/StrategyExecution.Tests

echo "==> conformance suite (@durable-streams/server-conformance-tests, pinned in tests/conformance/package-lock.json)"
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
PORT=$(free_port)
# The suite's webhook receivers listen on loopback, which a server refuses by default.
start_server server "$PORT" --data "$WORK/data" --Agent:TokensPerSecond=100 --Subscriptions:AllowLocalhostWebhooks=true
run_suite conformance tests/conformance CONFORMANCE_BASE_URL="http://127.0.0.1:$PORT" CONFORMANCE_LONG_POLL_TIMEOUT_MS=1000

echo "==> conformance suite again, against a server on the Redis store (a scratch redis-server with appendfsync always)"
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly yes --appendfsync always --loglevel warning > "$WORK/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_NODE_PORT=$(free_port)
start_server server-redis "$REDIS_NODE_PORT" --store redis --redis "127.0.0.1:$REDIS_PORT" --no-agent --Subscriptions:AllowLocalhostWebhooks=true
run_suite "conformance on Redis" tests/conformance CONFORMANCE_BASE_URL="http://127.0.0.1:$REDIS_NODE_PORT" CONFORMANCE_LONG_POLL_TIMEOUT_MS=1000

for suite in aisdk aisdk7; do
  echo "==> Vercel AI SDK chat tests, tests/$suite (unmodified ai + @ai-sdk/react, pinned in its package-lock.json)"
  (cd "tests/$suite" && npm ci --no-audit --no-fund --loglevel=error)
  run_suite "AI SDK ($suite)" "tests/$suite" AISDK_BASE_URL="http://127.0.0.1:$PORT"
done

echo "==> TypeScript client (clients/typescript): type-check, build, tests against the server"
(cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && npx tsc -p tsconfig.json)
run_suite "TypeScript client" clients/typescript CLIENT_TEST_BASE_URL="http://127.0.0.1:$PORT"
# Again with a WebSocket global (Node 20 needs the flag): sessions follow over one WebSocket, as in a browser.
run_suite "TypeScript client over WebSocket" clients/typescript CLIENT_TEST_BASE_URL="http://127.0.0.1:$PORT" NODE_OPTIONS=--experimental-websocket

echo "==> packages: dotnet pack of every library and npm pack of the TypeScript client; samples/PackageConsumer, a project outside the solution, restores them from that local feed, builds and asks the server's agent a question"
PACKAGE_VERSION="0.9.0-ci.$(date +%s)"
PACKAGES_OK=1
dotnet pack DurableSessions.slnx -c "$CONFIGURATION" --no-build -o "$WORK/feed" -p:VersionSuffix="ci.${PACKAGE_VERSION##*-ci.}" -nologo -v quiet || PACKAGES_OK=0
ls "$WORK/feed"/*.nupkg 2>/dev/null | sed 's|.*/|  |'
(cd clients/typescript && npm pack --pack-destination "$WORK/feed" --silent >/dev/null) || PACKAGES_OK=0
TARBALL=$(ls "$WORK/feed"/*.tgz 2>/dev/null | head -1)
# Listed once: `tar | grep -q` under pipefail fails when grep stops reading early and tar gets SIGPIPE.
LISTING=$(tar -tzf "$TARBALL" 2>/dev/null || true)
for entry in package/dist/index.js package/dist/index.d.ts package/package.json; do
  grep -qx "$entry" <<< "$LISTING" || { echo "error: $entry is missing from the npm package" >&2; PACKAGES_OK=0; }
done
dotnet run --project samples/PackageConsumer -c "$CONFIGURATION" -p:DurableSessionsVersion="$PACKAGE_VERSION" \
  -p:RestoreAdditionalProjectSources="$WORK/feed" -- "http://127.0.0.1:$PORT" || PACKAGES_OK=0
if [[ $PACKAGES_OK -eq 1 ]]; then PASSED=$((PASSED + 1)); SUMMARY+=("packages 1 passed, 0 failed"); else FAILED=$((FAILED + 1)); STATUS=1; SUMMARY+=("packages 0 passed, 1 failed"); fi

echo "==> browser tests (tests/browser): the demo page and the strategy execution app in headless Chromium ($CHROMIUM), served by the output of dotnet publish, at a 1280 px desktop and a 390 px phone; playwright-core pinned in its package-lock.json"
dotnet publish src/DurableSessions.Server -c "$CONFIGURATION" --no-build -o "$WORK/publish" -nologo -v quiet
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
run_suite browser tests/browser DURABLE_SESSIONS_SERVER_DLL="$WORK/publish/DurableSessions.Server.dll"
[[ -f tests/browser/artifacts/demo-page.png ]] && echo "screenshot: tests/browser/artifacts/demo-page.png"

echo
# The failures again at the end, where a log cut to its tail still shows them.
if [[ $DOTNET_FAILED -ne 0 ]]; then
  echo "Failed .NET tests:"
  sed -r 's/\x1b\[[0-9;]*m//g' "$WORK/dotnet-test.log" | grep -E -A 15 '^\s*failed [^:]' | head -120 || true
fi
echo "Summary: $(IFS=';'; echo "${SUMMARY[*]}" | sed 's/;/; /g')"
echo "$PASSED passed, $FAILED failed"
if [[ $STATUS -ne 0 || $FAILED -ne 0 ]]; then
  exit 1
fi
