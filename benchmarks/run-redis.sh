#!/usr/bin/env bash
# Runs the end-to-end load tool against DurableSessions on the Redis store, with one node and then with two nodes
# sharing one redis-server (appendonly yes, appendfsync always), and against the SQLite store in the same run, so the
# figures compare on the same machine at the same time. Loopback only; every scenario is bounded by --duration.
#   usage: benchmarks/run-redis.sh [duration-seconds]
# Two nodes: the append scenarios run one load tool per node at the same time (their rates add up); the latency
# scenario writes through node A and reads through node B, so every delivery crosses Redis pub/sub.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
WORK="$(mktemp -d)"
PIDS=()
stop_all() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
wait_ready() { for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "server at $1 did not start" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is required (Debian package redis-server)" >&2; exit 1; }

dotnet build src/DurableSessions.Server -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet
SERVER="dotnet src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll"
LOAD="dotnet benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll"
QUIET="--Logging:LogLevel:Default=Warning --no-agent"

start_redis() {
  rm -rf "$WORK/redis" && mkdir -p "$WORK/redis"
  redis-server --port 6479 --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly yes --appendfsync always --loglevel warning > "$WORK/redis.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 50); do redis-cli -p 6479 ping >/dev/null 2>&1 && return 0; sleep 0.1; done
}

echo "== SQLite, one node (durability Fsync)"
$SERVER --urls http://127.0.0.1:4437 --data "$WORK/sqlite" $QUIET > "$WORK/sqlite.log" 2>&1 &
PIDS+=("$!")
wait_ready http://127.0.0.1:4437/health
$LOAD --url http://127.0.0.1:4437 --scenario all --duration "$DURATION" --label "SQLite, 1 node" | tee "$WORK/sqlite.txt"
stop_all

echo "== Redis, one node"
start_redis
$SERVER --urls http://127.0.0.1:4437 --store redis --redis 127.0.0.1:6479 $QUIET > "$WORK/r1.log" 2>&1 &
PIDS+=("$!")
wait_ready http://127.0.0.1:4437/health
$LOAD --url http://127.0.0.1:4437 --scenario all --duration "$DURATION" --label "Redis, 1 node" | tee "$WORK/r1.txt"
stop_all

echo "== Redis, two nodes"
start_redis
$SERVER --urls http://127.0.0.1:4437 --store redis --redis 127.0.0.1:6479 $QUIET > "$WORK/r2a.log" 2>&1 &
PIDS+=("$!")
$SERVER --urls http://127.0.0.1:4438 --store redis --redis 127.0.0.1:6479 $QUIET > "$WORK/r2b.log" 2>&1 &
PIDS+=("$!")
wait_ready http://127.0.0.1:4437/health
wait_ready http://127.0.0.1:4438/health
$LOAD --url http://127.0.0.1:4437 --read-url http://127.0.0.1:4438 --scenario latency --streams 1000 --duration "$DURATION" --label "Redis, 2 nodes (write A, read B)" | tee "$WORK/r2-latency.txt"
for scenario in "append --streams 100" "batch --streams 100 --batch 100"; do
  $LOAD --url http://127.0.0.1:4437 --scenario $scenario --duration "$DURATION" --label "Redis, 2 nodes: node A" > "$WORK/r2-a.txt" &
  A=$!
  $LOAD --url http://127.0.0.1:4438 --scenario $scenario --duration "$DURATION" --label "Redis, 2 nodes: node B" > "$WORK/r2-b.txt" &
  B=$!
  wait $A $B
  cat "$WORK/r2-a.txt" "$WORK/r2-b.txt"
done
stop_all
