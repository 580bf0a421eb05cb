#!/usr/bin/env bash
# Stored sessions at product size: seeds N sessions (each with one answered question) through the public API, restarts
# the default server (embedded storage, built-in agent on) on them, and measures: time to healthy; descriptors, RSS and
# CPU 30 s later; the first reply delta of 100 questions posted into random stored sessions.
#
#   benchmarks/run-stored-sessions.sh [sessions, default 100000] [server dll, default this checkout's Release build]
#
# Pass another build's DurableSessions.Server.dll (e.g. one built from an older commit) to measure it the same way.
# SERVER_ARGS adds settings to the restarted server (e.g. SERVER_ARGS=--Agent:DeltaLinger=00:00:00); ASK_AGAIN=1 asks
# 100 more questions on the warmed-up server.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
DLL="${2:-}"
if [[ -z "$DLL" ]]; then
  dotnet build DurableSessions.slnx -c Release -nologo -v quiet >/dev/null
  DLL=src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll
fi
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet >/dev/null
LOAD="dotnet benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll"
DATA="$(mktemp -d)"
PORT="$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
URL="http://127.0.0.1:$PORT"
PID=""
cleanup() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"; }
trap cleanup EXIT

wait_healthy() {
  for _ in $(seq 1 600); do
    curl -sf "$URL/health" >/dev/null 2>&1 && return 0
    kill -0 "$PID" 2>/dev/null || { echo "the server exited: $(tail -3 "$DATA.log")"; return 1; }
    sleep 0.05
  done
  return 1
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$PID/stat"; }

echo "==> seeding $N sessions (server without an agent)"
dotnet "$DLL" --urls "$URL" --data "$DATA" --Agent:Enabled=false > "$DATA.log" 2>&1 & PID=$!
wait_healthy
$LOAD --url "$URL" --scenario seed --streams "$N" --connections 32 | grep '^#'
kill -TERM "$PID"; wait "$PID" || true; PID=""

echo "==> restarting the default server (built-in agent on)"
START=$(date +%s.%N)
dotnet "$DLL" --urls "$URL" --data "$DATA" ${SERVER_ARGS:-} > "$DATA.log" 2>&1 & PID=$!
if wait_healthy; then
  echo "healthy after $(echo "$(date +%s.%N) - $START" | bc) s"
else
  echo "never healthy"; exit 1
fi

for _ in $(seq 1 30); do kill -0 "$PID" 2>/dev/null || { echo "the server died: $(tail -3 "$DATA.log")"; exit 1; }; sleep 1; done
BEFORE=$(cpu_ticks); sleep 5; AFTER=$(cpu_ticks)
echo "30 s later: $(ls /proc/$PID/fd | wc -l) descriptors, RSS $(awk '/VmRSS/{printf "%d MB", $2/1024}' /proc/$PID/status), CPU $(( (AFTER - BEFORE) * 100 / $(getconf CLK_TCK) / 5 ))% of a core over 5 s"
$LOAD --url "$URL" --scenario ask --streams "$N" --questions 100 | grep '^#'
if [[ -n "${ASK_AGAIN:-}" ]]; then $LOAD --url "$URL" --scenario ask --streams "$N" --questions 100 | grep '^#'; fi
echo "after the questions: $(ls /proc/$PID/fd | wc -l) descriptors, RSS $(awk '/VmRSS/{printf "%d MB", $2/1024}' /proc/$PID/status)"
