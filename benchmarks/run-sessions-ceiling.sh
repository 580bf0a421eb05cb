#!/usr/bin/env bash
# Sessions answered by the demo model: the server against bare Kestrel (benchmarks/DurableSessions.Ceiling, which runs
# the same model with the same 30 ms linger in process and writes each event to the session's SSE readers, storing
# nothing), in one run. Each round starts both fresh (the server with a fresh data directory, fsync before every
# acknowledgement, its built-in agent at 50 tokens/s) and loads each with the load tool's sessions scenario: N sessions,
# each with 2 SSE clients, a new question as soon as a reply finishes. Prints token->client p50/p99 per line.
# Usage: benchmarks/run-sessions-ceiling.sh [sessions, default 300] [rounds, default 2] [seconds per line, default 12] [extra server arguments...]
SESSIONS=${1:-300}
ROUNDS=${2:-2}
SECONDS_PER=${3:-12}
shift $(( $# > 3 ? 3 : $# ))
source "$(dirname "$0")/ceiling-common.sh"
LOAD_ARGS="--scenario sessions --streams $SESSIONS --readers 2 --duration $SECONDS_PER"
for round in $(seq 1 "$ROUNDS"); do
  run_line "bare Kestrel" "$LOAD_ARGS" "$CEILING" --TokensPerSecond=50
  run_line "DurableSessions" "$LOAD_ARGS" "$SERVER" --data "$(fresh_data)" --Agent:TokensPerSecond=50 "$@"
done
