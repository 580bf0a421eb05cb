#!/usr/bin/env bash
# Single-event appends pipelined over WebSockets: the server against bare Kestrel (benchmarks/DurableSessions.Ceiling,
# whose /v1/ws acknowledges each append from the loop that received it and stores nothing), in one run. Each round
# starts both fresh (the server with a fresh data directory, fsync before every acknowledgement, no agent) and loads
# each with the load tool's ws-append scenario: 100 streams, 64 connections, 256 B events, P appends in flight per
# connection. Prints appends/s and acknowledgement p50/p99 per line.
# Usage: benchmarks/run-ws-ceiling.sh [in flight per connection, default 8] [rounds, default 2] [seconds per line, default 10] [extra server arguments...]
PIPELINE=${1:-8}
ROUNDS=${2:-2}
SECONDS_PER=${3:-10}
shift $(( $# > 3 ? 3 : $# ))
source "$(dirname "$0")/ceiling-common.sh"
LOAD_ARGS="--scenario ws-append --streams 100 --connections 64 --pipeline $PIPELINE --duration $SECONDS_PER"
for round in $(seq 1 "$ROUNDS"); do
  run_line "bare Kestrel" "$LOAD_ARGS" "$CEILING"
  run_line "DurableSessions" "$LOAD_ARGS" "$SERVER" --data "$(fresh_data)" --no-agent "$@"
done
