#!/usr/bin/env bash
# One append per HTTP request: the server against bare Kestrel (benchmarks/DurableSessions.Ceiling, which reads each
# body and answers without storing anything), in one run. Each round starts both fresh, one after the other (the server
# with a fresh data directory, fsync before every acknowledgement, no agent) and loads each with the load tool's append
# scenario: 100 streams, 64 connections, 256 B events. Prints appends/s and acknowledgement p50/p99 per line.
# Usage: benchmarks/run-http-ceiling.sh [seconds per line, default 10] [rounds, default 2] [extra server arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-10}
ROUNDS=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

dotnet build src/DurableSessions.Server -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.Ceiling -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet
LOAD=benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll

run() {
  local label=$1 port pid
  shift
  port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
  dotnet "$@" --urls "http://127.0.0.1:$port" > "$WORK/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  dotnet "$LOAD" --url "http://127.0.0.1:$port" --scenario append --streams 100 --connections 64 --duration "$SECONDS_PER" --label "$label" | grep '^|'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$ROUNDS"); do
  run "bare Kestrel" benchmarks/DurableSessions.Ceiling/bin/Release/net10.0/DurableSessions.Ceiling.dll --Logging:LogLevel:Default=Warning
  run "DurableSessions" src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll \
    --data "$(mktemp -d -p "$WORK")" --no-agent --Logging:LogLevel:Default=Warning "$@"
done
