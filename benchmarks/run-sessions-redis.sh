#!/usr/bin/env bash
# The sessions scenario (many conversations answered by the demo agent at 50 tokens/s, each watched by 2 SSE clients)
# on two server nodes sharing one redis-server (appendonly yes, appendfsync always). Both nodes host the demo agent, as
# workers of the same agent sharing its turns; the clients connect to node A. Loopback only; bounded by the duration.
#   usage: benchmarks/run-sessions-redis.sh [sessions, default 300] [duration-seconds, default 10] [server dll]
# Pass another build's DurableSessions.Server.dll (e.g. one built from an older commit) to measure it the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${1:-300}"
DURATION="${2:-10}"
WORK="$(mktemp -d)"
PIDS=()
stop_all() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
wait_ready() { for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "server at $1 did not start" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is required (Debian package redis-server)" >&2; exit 1; }

dotnet build src/DurableSessions.Server -c Release -nologo -v quiet >/dev/null
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet >/dev/null
SERVER="dotnet ${3:-src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll}"
LOAD="dotnet benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll"

mkdir -p "$WORK/redis"
redis-server --port 6481 --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly yes --appendfsync always --loglevel warning > "$WORK/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 50); do redis-cli -p 6481 ping >/dev/null 2>&1 && break; sleep 0.1; done

for node in a b; do
  port=$([[ $node == a ]] && echo 4441 || echo 4442)
  $SERVER --urls "http://127.0.0.1:$port" --store redis --redis 127.0.0.1:6481 --Agent:TokensPerSecond=50 --Logging:LogLevel:Default=Warning > "$WORK/$node.log" 2>&1 &
  PIDS+=("$!")
  wait_ready "http://127.0.0.1:$port/health"
done

$LOAD --url http://127.0.0.1:4441 --scenario sessions --streams "$SESSIONS" --readers 2 --duration "$DURATION" --label "Redis, 2 nodes" | grep '^#'
