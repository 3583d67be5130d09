#!/usr/bin/env bash
# Paired runs of one loadtest command against `make up`, whose processor is restarted before each
# run: first with the BEFORE settings (environment assignments), then with the defaults; ROUNDS
# rounds of the pair. Prints a CPU probe before each run (the machine's speed varies between
# sittings and within one), then the command's output. `make up` must be running; at the end its
# processor is left running with the defaults. Used by docs/BENCHMARKS.md §4.5:
#
#   bash loadtest/paired_processor.sh 2 "PROCESSOR_STREAM_BUFFER=4096 PROCESSOR_RECENT_RECORDS=0" -- \
#       hot --start-distributed --readers 5000 --duration 30 --clap-rate 1000 --clap-count 1 --close-sessions-at-end
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
(( $# >= 4 )) && [[ "$3" == "--" ]] || { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 64; }
rounds=$1 before=$2; shift 3
# `make up`'s distributed settings (the Makefile's DIST_ENV).
dist_env=(CLAP_MODE=distributed KAFKA_BOOTSTRAP=127.0.0.1:9092 CASSANDRA_HOSTS=127.0.0.1
          "CLAP_SECRET=${CLAP_SECRET:-local-dev-secret-change-me}" "PYTHONPATH=$PWD")

restart_processor() {  # extra environment assignments, if any
  bash deploy/local/proc.sh stop processor >/dev/null
  bash deploy/local/proc.sh start processor .run/logs/processor.log -- \
    env "${dist_env[@]}" "$@" .venv/bin/python -m processor worker -l info >/dev/null
  bash deploy/local/proc.sh wait-http "http://127.0.0.1:${PROCESSOR_WEB_PORT:-6066}/ready" 300 >/dev/null
}

for round in $(seq 1 "$rounds"); do
  for side in before after; do
    if [[ $side == before ]]; then read -r -a extra <<<"$before"; restart_processor "${extra[@]}"
    else restart_processor; fi
    sleep 3
    probe=$(python3 -m timeit -n 3 -r 3 "sum(i*i for i in range(10**6))")
    echo "== round $round, $side ($([[ $side == before ]] && echo "$before" || echo defaults)), $(date -u +%H:%M:%S) UTC, probe: $probe"
    timeout 600 .venv/bin/python -m loadtest "$@" || echo "(exit $?)"
  done
done
restart_processor
