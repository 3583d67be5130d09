#!/usr/bin/env bash
# Generic background-process helper for the project's own apps (gateway, processor, ...).
#
#   proc.sh start NAME LOGFILE -- CMD ARGS...   start CMD in the background (nohup), append its
#                                               output to LOGFILE, record $CLAP_RUN_DIR/NAME.pid;
#                                               exits 2 if NAME is already running
#   proc.sh stop NAME                           SIGTERM the recorded pid, up to 20 s, then SIGKILL it
#   proc.sh status NAME                         exit 0 if running, 1 if not
#   proc.sh wait-http URL SECONDS               poll URL until it answers HTTP 200
#   proc.sh wait-port HOST PORT SECONDS         poll until HOST:PORT accepts TCP connections
#
# CMD runs in the caller's cwd. Only the recorded pid is ever signalled, so CMD should be the
# process itself (use `exec` in wrapper scripts), not a launcher that forks and exits.
# CLAP_RUN_DIR defaults to <repo>/.run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Usage = the header comment of this file (line 2 up to the first non-comment line).
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}" >&2; exit 64; }

check_name() {
  [[ "${1:-}" =~ ^[A-Za-z0-9._-]+$ ]] || die "bad NAME '${1:-}' (letters, digits, . _ - only)"
}

cmd_start() {
  if (( $# < 4 )) || [[ "$3" != "--" ]]; then usage; fi
  local name=$1 logfile=$2; shift 3
  check_name "$name"
  mkdir -p "$CLAP_RUN_DIR" "$(dirname "$logfile")"
  if is_running "$name"; then
    err "$name: already running (pid $(recorded_pid "$name")); not starting a second copy"
    exit 2
  fi
  if [[ -f "$(pid_file "$name")" ]]; then
    log "$name: removing stale pid file (pid $(recorded_pid "$name") is not running)"
    rm -f "$(pid_file "$name")"
  fi
  # Append, with a marker, so a crash's output survives a restart.
  printf '==== %s proc.sh start %s: %s\n' "$(date -Is)" "$name" "$*" >>"$logfile"
  # nohup: survive the caller's terminal going away. stdin from /dev/null: never block on it.
  nohup "$@" >>"$logfile" 2>&1 </dev/null &
  local pid=$!
  record_pid "$name" "$pid"
  # Catch commands that die at once (typo, missing module) instead of reporting success.
  sleep 0.5
  if ! pid_alive "$pid"; then
    rm -f "$(pid_file "$name")"
    err "$name: exited immediately"
    show_tail "$logfile" 30
    exit 1
  fi
  log "$name: started pid $pid; log: $logfile"
}

cmd_stop() {
  (( $# == 1 )) || usage
  check_name "$1"
  stop_pid "$1" 20
}

cmd_status() {
  (( $# == 1 )) || usage
  check_name "$1"
  local pid; pid=$(recorded_pid "$1")
  if is_running "$1"; then
    log "$1: running, pid $pid, RSS $(rss_mb "$pid") MB"
  elif [[ -n "$pid" ]]; then
    log "$1: not running (stale pid file for pid $pid)"; exit 1
  else
    log "$1: not running"; exit 1
  fi
}

cmd_wait_http() {
  (( $# == 2 )) || usage
  local url=$1 secs=$2 code=000 t0; t0=$(date +%s.%N)
  local deadline=$(( $(now_s) + secs ))
  while (( $(now_s) < deadline )); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || true)
    if [[ "$code" == 200 ]]; then
      log "$url answered 200 after $(elapsed_since "$t0") s"; return 0
    fi
    sleep 0.5
  done
  err "$url did not answer 200 within ${secs}s (last status: ${code:-none})"
  exit 1
}

cmd_wait_port() {
  (( $# == 3 )) || usage
  local t0; t0=$(date +%s.%N)
  if wait_port "$1" "$2" "$3"; then
    log "$1:$2 open after $(elapsed_since "$t0") s"
  else
    err "$1:$2 not open within $3s"; exit 1
  fi
}

sub=${1:-}; shift || true
case "$sub" in
  start)     cmd_start "$@" ;;
  stop)      cmd_stop "$@" ;;
  status)    cmd_status "$@" ;;
  wait-http) cmd_wait_http "$@" ;;
  wait-port) cmd_wait_port "$@" ;;
  *)         usage ;;
esac
