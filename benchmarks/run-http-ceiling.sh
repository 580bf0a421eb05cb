#!/usr/bin/env bash
# One append per HTTP request: the server against bare Kestrel (benchmarks/DurableSessions.Ceiling, which reads each
# body and answers without storing anything), in one run. Each round starts both fresh, one after the other (the server
# with a fresh data directory, fsync before every acknowledgement, no agent) and loads each with the load tool's append
# scenario: 100 streams, 64 connections, 256 B events. Prints appends/s and acknowledgement p50/p99 per line.
# Usage: benchmarks/run-http-ceiling.sh [seconds per line, default 10] [rounds, default 2] [extra server arguments...]
SECONDS_PER=${1:-10}
ROUNDS=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
source "$(dirname "$0")/ceiling-common.sh"
LOAD_ARGS="--scenario append --streams 100 --connections 64 --duration $SECONDS_PER"
for round in $(seq 1 "$ROUNDS"); do
  run_line "bare Kestrel" "$LOAD_ARGS" "$CEILING"
  run_line "DurableSessions" "$LOAD_ARGS" "$SERVER" --data "$(fresh_data)" --no-agent "$@"
done
