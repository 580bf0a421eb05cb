#!/usr/bin/env bash
# The fan-out: the server against bare Kestrel (benchmarks/DurableSessions.Ceiling, which writes each append's bytes to
# every open SSE reader from the appending request and stores nothing), in one run. Each round starts each fresh (the
# server with a fresh data directory, fsync before every acknowledgement, no agent) and loads it with the load tool's
# latency scenario: one stream, N readers from the tail, one writer appending 20 events/s. The server runs twice, with
# SSE readers and with WebSocket subscribers (bare Kestrel has SSE only); first, the server with no readers at all, for
# the writer's acknowledgement time on its own. Prints delivery p50/p99 and the writer's acknowledgement p50/p99.
# Usage: benchmarks/run-fanout-ceiling.sh [readers, default 5000] [rounds, default 2] [seconds per line, default 10] [extra server arguments...]
READERS=${1:-5000}
ROUNDS=${2:-2}
SECONDS_PER=${3:-10}
shift $(( $# > 3 ? 3 : $# ))
source "$(dirname "$0")/ceiling-common.sh"
load_args() { echo "--scenario latency --streams 1 --readers $1 --rate 20 --connections 1 --duration $SECONDS_PER --transport $2"; }
for round in $(seq 1 "$ROUNDS"); do
  run_line "DurableSessions, no readers" "$(load_args 0 sse)" "$SERVER" --data "$(fresh_data)" --no-agent "$@"
  run_line "bare Kestrel, SSE" "$(load_args "$READERS" sse)" "$CEILING"
  run_line "DurableSessions, SSE" "$(load_args "$READERS" sse)" "$SERVER" --data "$(fresh_data)" --no-agent "$@"
  run_line "DurableSessions, WebSocket" "$(load_args "$READERS" websocket)" "$SERVER" --data "$(fresh_data)" --no-agent "$@"
done
