#!/usr/bin/env bash
# Runs the end-to-end load tool against DurableSessions (SQLite, fsync before acknowledgement) and against the
# Node.js reference server (@durable-streams/server, file-backed), one after the other on this machine, and prints
# both result tables. Loopback only; every scenario is bounded by --duration.
#   usage: benchmarks/run-comparison.sh [duration-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
WORK="$(mktemp -d)"
PID=""
stop() { if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi; }
trap 'stop; rm -rf "$WORK"' EXIT

wait_ready() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "server at $1 did not start" >&2; exit 1; }

dotnet build src/DurableSessions.Server -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet
(cd benchmarks/reference-server && npm install --no-audit --no-fund --loglevel=error)
LOAD="dotnet benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll"

echo "== DurableSessions (SQLite, durability Fsync)"
dotnet src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll --urls http://127.0.0.1:4437 \
  --data "$WORK/ds" --Logging:LogLevel:Default=Warning > "$WORK/ds.log" 2>&1 &
PID=$!
wait_ready http://127.0.0.1:4437/health
$LOAD --url http://127.0.0.1:4437 --scenario all --duration "$DURATION" --label DurableSessions | tee "$WORK/ds.txt"
stop

echo "== reference server (@durable-streams/server, file-backed)"
node benchmarks/reference-server/start.mjs --port 4439 --data "$WORK/ref" > "$WORK/ref.log" 2> "$WORK/ref.err" &
PID=$!
wait_ready http://127.0.0.1:4439/
$LOAD --url http://127.0.0.1:4439 --scenario all --duration "$DURATION" --label reference | tee "$WORK/ref.txt"
stop

echo
grep '^|' "$WORK/ds.txt" | head -2
grep -h '^| [a-z]' "$WORK/ds.txt" "$WORK/ref.txt" | grep -v '^| scenario' | sort
