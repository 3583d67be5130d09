# shellcheck shell=bash
# Shared helpers for deploy/local/services.sh and deploy/local/proc.sh. Source it; do not run it.
#
# Pid files: $CLAP_RUN_DIR/NAME.pid holds the pid of a process we started and, on its second
# line, that process's start time in clock ticks since boot (/proc/PID/stat, field 22). We only
# ever signal that pid, and only after checking it is still the process we started (not a
# zombie, and not a newer process that happens to reuse the number: its start time differs).

# Repo root = two levels above this file, whatever the caller's cwd.
# shellcheck disable=SC2034  # the variables below are used by the scripts that source this
CLAP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLAP_DEPLOY="$CLAP_ROOT/deploy/local"
CLAP_LIB_DIR=${CLAP_LIB_DIR:-$CLAP_ROOT/.lib}
CLAP_RUN_DIR=${CLAP_RUN_DIR:-$CLAP_ROOT/.run}
CLAP_LOG_DIR="$CLAP_RUN_DIR/logs"

log() { printf '%s\n' "$*"; }
err() { printf '%s\n' "$*" >&2; }
die() { err "error: $*"; exit 1; }

now_s() { date +%s; }
# Seconds since an epoch-with-nanoseconds timestamp (from `date +%s.%N`), one decimal.
elapsed_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

pid_file() { printf '%s/%s.pid' "$CLAP_RUN_DIR" "$1"; }

# Start time of PID in clock ticks since boot (empty if gone). Fields are counted after the
# command's closing parenthesis, as the command itself may hold spaces.
start_ticks() {
  local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  awk '{ print $20 }' <<<"$stat"
}

# record_pid NAME PID: write NAME's pid file for a process just started.
record_pid() { printf '%s\n%s\n' "$2" "$(start_ticks "$2")" >"$(pid_file "$1")"; }

# Print the pid recorded for NAME (empty if no pid file or garbage in it).
recorded_pid() {
  local f; f=$(pid_file "$1")
  [[ -f "$f" ]] || return 0
  local p; p=$(head -n1 "$f" 2>/dev/null | tr -d '[:space:]')
  [[ "$p" =~ ^[0-9]+$ ]] && printf '%s' "$p"
  return 0
}

# True if PID is a live (non-zombie) process. The VM's init may not reap orphans, so a dead
# daemon can linger as a zombie that `kill -0` still reports as present.
pid_alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n "$st" && "$st" != Z* ]]
}

# True if NAME's pid file names a live process that we started: the same start time as
# recorded. A pid file without one (written before it was recorded) falls back to the process
# having started no later than the file was written (+2 s slack); that compares wall-clock
# times, which a clock step moves (it once called a running Kafka stale).
is_running() {
  local pid; pid=$(recorded_pid "$1")
  [[ -n "$pid" ]] && pid_alive "$pid" || return 1
  local recorded; recorded=$(sed -n 2p "$(pid_file "$1")" 2>/dev/null | tr -d '[:space:]')
  if [[ "$recorded" =~ ^[0-9]+$ ]]; then
    [[ "$(start_ticks "$pid")" == "$recorded" ]]
    return
  fi
  local etimes started written
  etimes=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ') || return 1
  [[ -n "$etimes" ]] || return 1
  started=$(( $(now_s) - etimes ))
  written=$(stat -c %Y "$(pid_file "$1")")
  (( started <= written + 2 ))
}

# Resident memory of PID in MB (empty if gone).
rss_mb() { { ps -o rss= -p "$1" 2>/dev/null || true; } | awk '{ printf "%d", $1 / 1024 }'; }

# True if something accepts TCP connections on HOST:PORT (bash /dev/tcp, 2 s cap).
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# wait_port HOST PORT SECONDS
wait_port() {
  local deadline=$(( $(now_s) + $3 ))
  while (( $(now_s) < deadline )); do
    port_open "$1" "$2" && return 0
    sleep 0.5
  done
  return 1
}

# stop_pid NAME GRACE_SECONDS: SIGTERM the recorded pid, wait, then SIGKILL that same pid.
# Removes the pid file. Never signals anything but the recorded pid.
stop_pid() {
  local name=$1 grace=$2 pid
  pid=$(recorded_pid "$name")
  if [[ -z "$pid" ]]; then
    log "$name: not running (no pid file)"
    rm -f "$(pid_file "$name")"
    return 0
  fi
  if ! is_running "$name"; then
    log "$name: not running (stale pid file for pid $pid removed)"
    rm -f "$(pid_file "$name")"
    return 0
  fi
  local t0; t0=$(date +%s.%N)
  log "$name: stopping pid $pid (SIGTERM, up to ${grace}s) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(now_s) + grace ))
  while pid_alive "$pid" && (( $(now_s) < deadline )); do sleep 0.5; done
  if pid_alive "$pid"; then
    err "$name: pid $pid still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    local _
    for _ in {1..20}; do pid_alive "$pid" || break; sleep 0.25; done
  fi
  if pid_alive "$pid"; then
    err "$name: pid $pid did not die; pid file kept"
    return 1
  fi
  rm -f "$(pid_file "$name")"
  log "$name: stopped in $(elapsed_since "$t0") s"
}

# Print the last N lines of a log with a header (for failures).
show_tail() {
  local file=$1 n=${2:-40}
  err "----- last $n lines of $file -----"
  tail -n "$n" "$file" >&2 2>/dev/null || err "(no log)"
  err "-----"
}
