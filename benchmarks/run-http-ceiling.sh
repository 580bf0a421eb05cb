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
# The server's data goes on the repository's disk (a tmpfs /tmp would make fsync free).
WORK=$(mktemp -d -p "$PWD" .bench-XXXXXX)
PID=
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
echo "data on: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}')"

dotnet build src/DurableSessions.Server -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.Ceiling -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet
LOAD=benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll

run() {
  local label=$1 port
  shift
  port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
  dotnet "$@" --urls "http://127.0.0.1:$port" > "$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do
    curl -s -m 1 -o /dev/null "http://127.0.0.1:$port/" && break
    kill -0 "$PID" 2>/dev/null || { echo "$label did not start:"; tail -20 "$WORK/server.log"; exit 1; }
    sleep 0.1
  done
  dotnet "$LOAD" --url "http://127.0.0.1:$port" --scenario append --streams 100 --connections 64 --duration "$SECONDS_PER" --label "$label" | grep '^|'
  kill "$PID"; wait "$PID" 2>/dev/null || true
  PID=
}

for round in $(seq 1 "$ROUNDS"); do
  run "bare Kestrel" benchmarks/DurableSessions.Ceiling/bin/Release/net10.0/DurableSessions.Ceiling.dll --Logging:LogLevel:Default=Warning
  run "DurableSessions" src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll \
    --data "$(mktemp -d -p "$WORK")" --no-agent --Logging:LogLevel:Default=Warning "$@"
done
