#!/usr/bin/env bash
# Paired pipeline runs of two projector versions against one `make up` (BENCHMARKS §4.13):
#
#   loadtest/paired_projector.sh ROUNDS TREE_A TREE_B
#
# TREE_A and TREE_B are checkouts of this repository (e.g. `git worktree add /tmp/a <commit>`).
# Each round restarts `make up`'s projector from TREE_A, waits until it has caught up
# (loadtest.projector_caught_up), runs §4.7's ingest command, then does the same from TREE_B.
# At the end the projector runs from this checkout again. Only the projector's recorded pid is
# stopped (deploy/local/proc.sh).
set -euo pipefail
(( $# == 3 )) || { sed -n '2,10p' "$0" >&2; exit 64; }
rounds=$1; shift
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
dist_env=(CLAP_MODE=distributed KAFKA_BOOTSTRAP=127.0.0.1:9092 CASSANDRA_HOSTS=127.0.0.1
          "CLAP_SECRET=${CLAP_SECRET:-local-dev-secret-change-me}")

projector_from() {  # the tree's own code: started in it, with it first on the path
  local tree; tree=$(cd "$1" && pwd)
  bash deploy/local/proc.sh stop projector
  (cd "$tree" && bash "$repo/deploy/local/proc.sh" start projector "$repo/.run/logs/projector.log" -- \
      nice -n "${DURABLE_NICE:-10}" env "${dist_env[@]}" PYTHONPATH="$tree" "$repo/.venv/bin/python" -m projector)
  .venv/bin/python -m loadtest.projector_caught_up
}

for (( round = 1; round <= rounds; round++ )); do
  for tree in "$@"; do
    projector_from "$tree"
    echo "=== round $round: projector from $tree"
    .venv/bin/python -m loadtest ingest --start-distributed 2 --duration 30 --clap-rate 5000 --clap-count 1 \
        --click-rate 10 --clapper-procs 2 --close-sessions-at-end --settle-timeout 180
  done
done
projector_from "$repo"
