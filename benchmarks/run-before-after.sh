#!/usr/bin/env bash
# Compares the server at another commit with this checkout, in one run: both are built in Release, then started in
# turn (ROUNDS times, alternating, each with a fresh data directory and no agent) and loaded with the append scenario
# (one event per request) and the batch scenario (100 events per request), 100 streams, 64 connections. With "sessions"
# as the fourth argument each is started with its built-in agent at 50 tokens/s instead and loaded with the sessions
# scenario: 300 sessions, 2 SSE clients each.
# Usage: benchmarks/run-before-after.sh <commit> [seconds per scenario, default 8] [rounds, default 2] [append|sessions]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: benchmarks/run-before-after.sh <commit> [seconds] [rounds]}
SECONDS_PER=${2:-8}
ROUNDS=${3:-2}
MODE=${4:-append}
[[ $MODE == append || $MODE == sessions ]] || { echo "the fourth argument is append or sessions" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/base" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

git worktree add -q --detach "$WORK/base" "$BASE"
[[ -d clients/typescript/node_modules ]] && cp -r clients/typescript/node_modules "$WORK/base/clients/typescript/"
dotnet build "$WORK/base/src/DurableSessions.Server" -c Release -nologo -v quiet
dotnet build src/DurableSessions.Server -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet
LOAD=benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll

run() {
  local label=$1 dll=$2 port data pid
  port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
  data=$(mktemp -d -p "$WORK")
  if [[ $MODE == sessions ]]; then
    dotnet "$dll" --urls "http://127.0.0.1:$port" --data "$data" --Agent:TokensPerSecond=50 --Logging:LogLevel:Default=Warning > "$WORK/$label.log" 2>&1 &
  else
    dotnet "$dll" --urls "http://127.0.0.1:$port" --data "$data" --no-agent --Logging:LogLevel:Default=Warning > "$WORK/$label.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  if [[ $MODE == sessions ]]; then
    dotnet "$LOAD" --url "http://127.0.0.1:$port" --scenario sessions --streams 300 --readers 2 --duration "$SECONDS_PER" --server-pid "$pid" --label "$label" | grep '^| [0-9]'
  else
    dotnet "$LOAD" --url "http://127.0.0.1:$port" --scenario append --streams 100 --connections 64 --duration "$SECONDS_PER" --label "$label" | grep '^|'
    dotnet "$LOAD" --url "http://127.0.0.1:$port" --scenario batch --streams 100 --connections 64 --batch 100 --duration "$SECONDS_PER" --label "$label" | grep '^|'
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for _ in $(seq 1 "$ROUNDS"); do
  run "before ($BASE)" "$WORK/base/src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll"
  run "after" "src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll"
done
