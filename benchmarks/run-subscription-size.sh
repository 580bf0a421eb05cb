#!/usr/bin/env bash
# A subscription at its default limit of linked streams (Subscriptions:MaxStreamsPerSubscription, 10,000): creates N
# JSON streams, then a pull-wake subscription whose pattern links them all, and measures its create, a claim (which
# describes every link) and an ack, beside the same on a subscription of 3 streams in the same run; then checks that a
# pattern over N + 1 streams is refused with 403.
#
#   benchmarks/run-subscription-size.sh [streams, default 10000] [server dll, default this checkout's Release build]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
DLL="${2:-}"
if [[ -z "$DLL" ]]; then
  dotnet build DurableSessions.slnx -c Release -nologo -v quiet >/dev/null
  DLL=src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll
fi
DATA="$(mktemp -d)"
WORK="$(mktemp -d)"
PORT="$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
B="http://127.0.0.1:$PORT/v1/stream"
PID=""
cleanup() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA" "$WORK"; }
trap cleanup EXIT

dotnet "$DLL" --urls "http://127.0.0.1:$PORT" --data "$DATA" --no-agent > "$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break; sleep 0.2; done

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }

# Seeded by one curl over kept-alive connections (a process per request would cost more than the server does).
for i in $(seq 1 "$N"); do printf 'url = "%s/jobs/s%d"\n' "$B" "$i"; done > "$WORK/streams.cfg"
t0=$(now)
curl -s --no-progress-meter --parallel --parallel-max 16 -X PUT -H 'Content-Type: application/json' -d '[{"n":0}]' -o /dev/null -K "$WORK/streams.cfg"
t1=$(now)
echo "$N streams created in $(ms "$t0" "$t1") ms"
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' -d '[]' "$B/wake/w"

t0=$(now)
code=$(curl -s -o "$WORK/put.json" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
  -d '{"type":"pull-wake","pattern":"jobs/*","wake_stream":"wake/w"}' "$B/__ds/subscriptions/big")
t1=$(now)
echo "create, the pattern linking $N existing streams: $code in $(ms "$t0" "$t1") ms, $(wc -c < "$WORK/put.json") bytes answered"

# The same three appends wake a subscription of N links and one of 3 (explicit streams of their own).
for i in 1 2 3; do curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' -d '[]' "$B/few/s$i"; done
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' -d '[]' "$B/wake/f"
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' \
  -d '{"type":"pull-wake","streams":["few/s1","few/s2","few/s3"],"wake_stream":"wake/f"}' "$B/__ds/subscriptions/small"
for i in 1 2 3; do
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"n":1}' "$B/jobs/s$i"
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"n":1}' "$B/few/s$i"
done

claim_and_ack() {
  local id=$1 links=$2
  for _ in $(seq 1 100); do
    t0=$(now)
    code=$(curl -s -o "$WORK/claim.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{"worker":"w"}' "$B/__ds/subscriptions/$id/claim")
    t1=$(now)
    [[ "$code" == 200 ]] && break
    sleep 0.05
  done
  echo "$id: claim (describes $links links): $code in $(ms "$t0" "$t1") ms, $(wc -c < "$WORK/claim.json") bytes answered"
  python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
claim = json.load(open(f"{work}/claim.json"))
acks = [{"stream": s["path"], "offset": s["tail_offset"]} for s in claim["streams"] if s["has_pending"]]
json.dump({"wake_id": claim["wake_id"], "generation": claim["generation"], "acks": acks, "done": True}, open(f"{work}/ack.json", "w"))
open(f"{work}/token", "w").write(claim["token"])
PY
  t0=$(now)
  answer=$(curl -s -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $(cat "$WORK/token")" --data @"$WORK/ack.json" "$B/__ds/subscriptions/$id/ack")
  t1=$(now)
  echo "$id: ack of the 3 streams appended to, done: $(ms "$t0" "$t1") ms: $answer"
}
claim_and_ack big "$N"
claim_and_ack small 3

curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' -d '[{"n":0}]' "$B/jobs/s$((N + 1))"
code=$(curl -s -o "$WORK/refused.json" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
  -d '{"type":"pull-wake","pattern":"jobs/*","wake_stream":"wake/w"}' "$B/__ds/subscriptions/bigger")
echo "create, the pattern matching $((N + 1)) streams: $code $(cat "$WORK/refused.json")"
echo "server RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$PID/status")"
