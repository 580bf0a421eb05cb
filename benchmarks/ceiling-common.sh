# Shared by the run-*-ceiling.sh scripts: builds the server, the ceiling and the load tool, and runs one line of a
# comparison against a fresh process. Source it; then call
#   run_line "<label>" "<load tool arguments>" <dll> [server arguments...]
# which starts <dll> on a free loopback port, runs the load tool against it and prints the result line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The server's data goes on the repository's disk (a tmpfs /tmp would make fsync free).
WORK=$(mktemp -d -p "$PWD" .bench-XXXXXX)
PID=
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
echo "data on: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}')"

dotnet build src/DurableSessions.Server -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.Ceiling -c Release -nologo -v quiet
dotnet build benchmarks/DurableSessions.LoadTest -c Release -nologo -v quiet
LOAD=benchmarks/DurableSessions.LoadTest/bin/Release/net10.0/DurableSessions.LoadTest.dll
CEILING=benchmarks/DurableSessions.Ceiling/bin/Release/net10.0/DurableSessions.Ceiling.dll
SERVER=src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll

# A fresh data directory for one server run, removed with the rest on exit.
fresh_data() { mktemp -d -p "$WORK"; }

run_line() {
  local label=$1 load_args=$2 port
  shift 2
  port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
  dotnet "$@" --urls "http://127.0.0.1:$port" --Logging:LogLevel:Default=Warning > "$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do
    curl -s -m 1 -o /dev/null "http://127.0.0.1:$port/" && break
    kill -0 "$PID" 2>/dev/null || { echo "$label did not start:"; tail -20 "$WORK/server.log"; exit 1; }
    sleep 0.1
  done
  # shellcheck disable=SC2086 # the load arguments are a word list
  dotnet "$LOAD" --url "http://127.0.0.1:$port" $load_args --label "$label" --server-pid "$PID" | grep '^| [A-Za-z0-9]' | grep -v '^| scenario '
  kill "$PID"; wait "$PID" 2>/dev/null || true
  PID=
}
