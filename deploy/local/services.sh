#!/usr/bin/env bash
# Local infrastructure for the clap counter: one real Apache Kafka 4.1 node (KRaft, broker +
# controller) on 127.0.0.1:9092 and one real Apache Cassandra 5.0 node on 127.0.0.1:9042,
# run on the machine's Java 17 from jars that Maven resolves from Maven Central.
#
#   services.sh resolve                    fetch the jars into $CLAP_LIB_DIR/{kafka,cassandra}
#   services.sh up     [kafka|cassandra|all]   resolve if needed, start, wait until healthy
#   services.sh down   [kafka|cassandra|all]   stop (SIGTERM, up to 30 s, then SIGKILL)
#   services.sh status [kafka|cassandra|all]   exit 0 only if all named services run
#   services.sh clean  [kafka|cassandra|all]   down, then delete their data (logs are kept)
#
# Environment (all optional):
#   CLAP_LIB_DIR   resolved jars           default <repo>/.lib
#   CLAP_RUN_DIR   pid files, config, data default <repo>/.run   (logs in $CLAP_RUN_DIR/logs)
#   CLAP_JAVA      java binary (17+)       default: java on PATH
#   CLAP_KAFKA_HEAP / CLAP_CASSANDRA_HEAP  default 512m / 1G
#   CLAP_KAFKA_TIMEOUT / CLAP_CASSANDRA_TIMEOUT  seconds to become healthy, default 120 / 240
#   CLAP_CASSANDRA_NICE  CPU niceness of Cassandra, default 0; `make up` runs it at 10 (see there)
#   CLAP_KAFKA_PORT / CLAP_KAFKA_CONTROLLER_PORT  Kafka's client / KRaft ports, default 9092 / 9093
#                  (with a CLAP_RUN_DIR of its own, a second broker beside the usual one)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAVA=${CLAP_JAVA:-java}
KAFKA_HEAP=${CLAP_KAFKA_HEAP:-512m}
CASSANDRA_HEAP=${CLAP_CASSANDRA_HEAP:-1G}
KAFKA_TIMEOUT=${CLAP_KAFKA_TIMEOUT:-120}
CASSANDRA_TIMEOUT=${CLAP_CASSANDRA_TIMEOUT:-240}
KAFKA_PORT=${CLAP_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${CLAP_KAFKA_CONTROLLER_PORT:-9093}

KAFKA_DIR="$CLAP_RUN_DIR/kafka"          # server.properties, admin.properties, data/
CASSANDRA_DIR="$CLAP_RUN_DIR/cassandra"  # cassandra.yaml, data/, commitlog/, ...
KAFKA_LOG="$CLAP_LOG_DIR/kafka.log"
CASSANDRA_LOG="$CLAP_LOG_DIR/cassandra.log"
KAFKA_PORTS=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")   # client, controller
CASSANDRA_PORTS=(9042 7000 7199)   # CQL, storage/gossip, JMX

declare -A STARTED_AT=()           # service -> `date +%s.%N` of its JVM launch (for timings)
declare -A ALREADY=()              # service -> 1 if `up` found it running already

# Usage = the header comment of this file (line 2 up to the first non-comment line).
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}" >&2; exit 64; }

# ---------------------------------------------------------------------------------------------
# Prerequisites

check_java() {
  command -v "$JAVA" >/dev/null || die "java not found (need Java 17+; set CLAP_JAVA)"
  local v major
  v=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')
  major=${v%%.*}; [[ "$major" == 1 ]] && major=$(cut -d. -f2 <<<"$v")   # "1.8.0" style
  if ! [[ "$major" =~ ^[0-9]+$ ]] || (( major < 17 )); then die "need Java 17+, $JAVA is '$v'"; fi
}

# One lock for commands that change state, so two concurrent `up`s cannot both start Kafka.
# Long-lived children must not inherit fd 9 (they would hold the lock): see `9>&-` below.
take_lock() {
  mkdir -p "$CLAP_RUN_DIR" "$CLAP_LOG_DIR"
  exec 9>"$CLAP_RUN_DIR/.services.lock"
  if ! flock -n 9; then
    log "waiting for another services.sh run to finish (lock $CLAP_RUN_DIR/.services.lock) ..."
    flock -w 600 9 || die "could not take the lock in 600 s"
  fi
}

# ---------------------------------------------------------------------------------------------
# resolve: jars from Maven Central. A marker holding the pom's sha256 is written on success,
# so a second run is a no-op and an edited pom triggers a fresh resolve.

jar_count() { local jars=("$1"/*.jar); echo "${#jars[@]}"; }

resolve_one() {
  local name=$1
  local pom="$CLAP_DEPLOY/jars/$name/pom.xml" dest="$CLAP_LIB_DIR/$name"
  local sum; sum=$(sha256sum "$pom" | cut -d' ' -f1)
  if [[ -f "$dest/.resolved" && "$(cat "$dest/.resolved")" == "$sum" ]]; then
    log "resolve $name: already resolved ($(jar_count "$dest") jars in $dest)"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  mkdir -p "$CLAP_LIB_DIR" "$CLAP_LOG_DIR"
  # Resolve into a temp dir and swap it in, so an interrupted run never leaves a half set.
  local tmp="$CLAP_LIB_DIR/.$name.tmp" mlog="$CLAP_LOG_DIR/mvn-$name.log" t0; t0=$(date +%s.%N)
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "resolve $name: mvn dependency:copy-dependencies -f $pom ..."
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
         -DoutputDirectory="$tmp" >"$mlog" 2>&1; then
    show_tail "$mlog" 30
    rm -rf "$tmp"
    die "resolve $name failed (full log: $mlog)"
  fi
  echo "$sum" >"$tmp/.resolved"
  rm -rf "$dest"; mv "$tmp" "$dest"
  log "resolve $name: $(jar_count "$dest") jars, $(du -sh "$dest" | cut -f1) in $(elapsed_since "$t0") s -> $dest"
}

cmd_resolve() { take_lock; resolve_one kafka; resolve_one cassandra; }

# ---------------------------------------------------------------------------------------------
# Common start checks

# Refuse to start if a port is taken by something we did not start (another checkout, a
# leftover from an earlier run): our client would silently talk to the wrong server.
check_ports_free() {
  local name=$1; shift
  local p
  for p in "$@"; do
    if port_open 127.0.0.1 "$p"; then
      die "$name: port 127.0.0.1:$p is already in use by a process this script did not start (see: ss -ltnp | grep :$p)"
    fi
  done
}

# "in N s" after a fresh start; "(checked in N s)" when it was running already.
how_long() {
  if [[ -n "${ALREADY[$1]:-}" ]]; then printf '(checked in %s s)' "$(elapsed_since "$2")"
  else printf 'in %s s' "$(elapsed_since "$2")"; fi
}

# Returns 0 if NAME is already running (nothing to start), 1 if it must be started.
already_running() {
  local name=$1
  STARTED_AT[$name]=$(date +%s.%N)
  if is_running "$name"; then
    ALREADY[$name]=1
    log "$name: already running (pid $(recorded_pid "$name")); not starting a second copy"
    return 0
  fi
  if [[ -f "$(pid_file "$name")" ]]; then
    log "$name: stale pid file (pid $(recorded_pid "$name") is not running) removed; starting afresh"
    rm -f "$(pid_file "$name")"
  fi
  return 1
}

# ---------------------------------------------------------------------------------------------
# Kafka

kafka_cp() { printf '%s/kafka/*' "$CLAP_LIB_DIR"; }

# A small JVM for Kafka's CLI tools: quick to start, logs (warnings only) to stderr.
# An array (not only a function) so that `timeout` can run it too.
KAFKA_TOOL=("$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  -Dlog4j2.configurationFile="$CLAP_DEPLOY/kafka/tools-log4j2.properties"
  -cp "$(kafka_cp)")
kafka_tool() { "${KAFKA_TOOL[@]}" "$@"; }

kafka_configure() {
  mkdir -p "$KAFKA_DIR/data"
  # Rendered on every start, so template edits take effect; only the data dir and the ports are
  # substituted.
  # shellcheck disable=SC2016  # envsubst wants the literal variable names
  KAFKA_DATA_DIR="$KAFKA_DIR/data" KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT \
    envsubst '${KAFKA_DATA_DIR} ${KAFKA_PORT} ${KAFKA_CONTROLLER_PORT}' \
    <"$CLAP_DEPLOY/kafka/server.properties.tmpl" >"$KAFKA_DIR/server.properties"
  # Client settings for the health check: fail fast instead of retrying for a minute.
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=10000\n' >"$KAFKA_DIR/admin.properties"
}

# KRaft needs its storage formatted once with a cluster id; the id then lives in
# data/meta.properties. Never re-format existing data (that would wipe the cluster identity).
kafka_format_once() {
  local meta="$KAFKA_DIR/data/meta.properties" flog="$CLAP_LOG_DIR/kafka-format.log"
  if [[ -f "$meta" ]]; then
    log "kafka: storage already formatted (cluster.id $(sed -n 's/^cluster.id=//p' "$meta")), keeping data"
    return 0
  fi
  local id
  id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$flog") || { show_tail "$flog"; die "kafka: random-uuid failed"; }
  kafka_tool kafka.tools.StorageTool format -t "$id" -c "$KAFKA_DIR/server.properties" >>"$flog" 2>&1 \
    || { show_tail "$flog"; die "kafka: storage format failed (log: $flog)"; }
  log "kafka: formatted new storage in $KAFKA_DIR/data (cluster.id $id)"
}

kafka_start() {
  already_running kafka && return 0
  check_ports_free kafka "${KAFKA_PORTS[@]}"
  resolve_one kafka
  kafka_configure
  kafka_format_once
  printf '==== %s services.sh up kafka\n' "$(date -Is)" >>"$KAFKA_LOG"
  # exec: the recorded pid is the JVM itself. 9>&-: do not hold the services lock.
  ( cd "$KAFKA_DIR" && exec nohup "$JAVA" \
      -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 \
      -XX:+ExitOnOutOfMemoryError -XX:ErrorFile="$CLAP_LOG_DIR/kafka-hs_err_pid%p.log" \
      -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$CLAP_DEPLOY/kafka/log4j2.properties" \
      -cp "$(kafka_cp)" kafka.Kafka "$KAFKA_DIR/server.properties"
  ) >>"$KAFKA_LOG" 2>&1 </dev/null 9>&- &
  record_pid kafka $!
  STARTED_AT[kafka]=$(date +%s.%N)
  log "kafka: started pid $! (heap $KAFKA_HEAP); log: $KAFKA_LOG"
}

# Healthy = the client port open AND a real metadata round trip (list topics through the broker).
kafka_wait() {
  local t0=$1 pid; pid=$(recorded_pid kafka)
  local deadline=$(( $(now_s) + KAFKA_TIMEOUT )) port_at="" topics
  while (( $(now_s) < deadline )); do
    if ! pid_alive "$pid"; then
      rm -f "$(pid_file kafka)"
      show_tail "$KAFKA_LOG"
      err "kafka: process $pid exited during startup (log: $KAFKA_LOG)"
      return 1
    fi
    if port_open 127.0.0.1 "$KAFKA_PORT"; then
      [[ -n "$port_at" ]] || port_at=$(elapsed_since "$t0")
      if topics=$(timeout 30 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --list \
                    --bootstrap-server 127.0.0.1:"$KAFKA_PORT" --command-config "$KAFKA_DIR/admin.properties" \
                    2>>"$CLAP_LOG_DIR/kafka-tools.log"); then
        log "kafka: healthy $(how_long kafka "$t0") (port open at ${port_at} s; $(grep -c . <<<"$topics" || true) topics listed) pid $pid, RSS $(rss_mb "$pid") MB"
        log "kafka: bootstrap 127.0.0.1:$KAFKA_PORT; log: $KAFKA_LOG"
        return 0
      fi
    fi
    sleep 1
  done
  show_tail "$KAFKA_LOG"
  err "kafka: not healthy within ${KAFKA_TIMEOUT}s (still running as pid $pid; stop it with: $0 down kafka)"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Cassandra

cassandra_configure() {
  mkdir -p "$CASSANDRA_DIR"/{data,commitlog,saved_caches,hints,cdc_raw,triggers}
  # shellcheck disable=SC2016  # envsubst wants the literal variable name
  CASSANDRA_DIR="$CASSANDRA_DIR" envsubst '${CASSANDRA_DIR}' \
    <"$CLAP_DEPLOY/cassandra/cassandra.yaml.tmpl" >"$CASSANDRA_DIR/cassandra.yaml"
}

cassandra_start() {
  already_running cassandra && return 0
  check_ports_free cassandra "${CASSANDRA_PORTS[@]}"
  resolve_one cassandra
  cassandra_configure
  local jamms=("$CLAP_LIB_DIR"/cassandra/jamm-*.jar) jamm
  jamm=${jamms[0]}
  [[ -f "$jamm" ]] || die "cassandra: no jamm-*.jar in $CLAP_LIB_DIR/cassandra (re-run: $0 resolve)"
  printf '==== %s services.sh up cassandra\n' "$(date -Is)" >>"$CASSANDRA_LOG"
  # Startup-speed flags: a one-node cluster has no peers to wait for, so skip the gossip
  # settle wait, shorten the ring delay and create the default superuser at once.
  # On OutOfMemoryError: one heap dump (a fixed file name, so at most one), then exit rather
  # than limp on with possibly corrupt state (Cassandra's own startup check asks for this).
  ( cd "$CASSANDRA_DIR" && exec nohup nice -n "${CLAP_CASSANDRA_NICE:-0}" "$JAVA" @"$CLAP_DEPLOY/cassandra/jvm17.args" \
      -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 \
      -XX:+ExitOnOutOfMemoryError -XX:HeapDumpPath="$CASSANDRA_DIR/oom.hprof" \
      -XX:ErrorFile="$CLAP_LOG_DIR/cassandra-hs_err_pid%p.log" \
      -Dcassandra.triggers_dir="$CASSANDRA_DIR/triggers" \
      -javaagent:"$jamm" \
      -Dcassandra.config="file://$CASSANDRA_DIR/cassandra.yaml" \
      -Dcassandra.storagedir="$CASSANDRA_DIR" -Dcassandra.logdir="$CLAP_LOG_DIR" \
      -Dlogback.configurationFile="$CLAP_DEPLOY/cassandra/logback.xml" \
      -Dcassandra-foreground=yes -Dcassandra.jmx.local.port=7199 \
      -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1000 \
      -Dcassandra.superuser_setup_delay_ms=0 \
      -cp "$CLAP_LIB_DIR/cassandra/*" org.apache.cassandra.service.CassandraDaemon
  ) >>"$CASSANDRA_LOG" 2>&1 </dev/null 9>&- &
  record_pid cassandra $!
  STARTED_AT[cassandra]=$(date +%s.%N)
  log "cassandra: started pid $! (heap $CASSANDRA_HEAP); log: $CASSANDRA_LOG"
}

# A cqlsh-free CQL check in plain bash: native protocol v4 STARTUP, then
# QUERY "SELECT release_version FROM system.local"; prints the version on success.
# Runs in a child bash under `timeout` (see cassandra_wait), so it cannot hang.
cql_release_version() {
  exec 3<>/dev/tcp/127.0.0.1/9042 || return 1
  local q="SELECT release_version FROM system.local" OPCODE BODY
  be16() { printf '\\x%02x\\x%02x' $(( $1 >> 8 & 255 )) $(( $1 & 255 )); }
  be32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( $1 >> 24 & 255 )) $(( $1 >> 16 & 255 )) $(( $1 >> 8 & 255 )) $(( $1 & 255 )); }
  # send STREAM OPCODE BODY_LENGTH BODY_ESCAPES: request frame header is version 4, flags 0.
  send() { printf '%b' "\\x04\\x00$(be16 "$1")$(printf '\\x%02x' "$2")$(be32 "$3")$4" >&3; }
  # recv: read one response frame byte by byte (dd bs=1 never over-reads the socket);
  # sets OPCODE, and BODY with non-printable bytes shown as dots.
  recv() {
    local h; read -r -a h < <(dd bs=1 count=9 <&3 2>/dev/null | od -An -tu1)
    (( ${#h[@]} == 9 )) || return 1
    OPCODE=${h[4]}
    local len=$(( h[5] << 24 | h[6] << 16 | h[7] << 8 | h[8] ))
    BODY=""
    (( len == 0 )) || BODY=$(dd bs=1 count="$len" <&3 2>/dev/null | tr -c '[:print:]' '.')
  }
  send 1 1 22 "$(be16 1)$(be16 11)CQL_VERSION$(be16 5)3.0.0"                  # STARTUP
  if ! { recv && (( OPCODE == 2 )); }; then                                    # READY
    echo "STARTUP got opcode ${OPCODE:-none}: ${BODY:-}" >&2; return 1
  fi
  send 2 7 $(( 4 + ${#q} + 3 )) "$(be32 ${#q})$q$(be16 1)\\x00"               # QUERY, CL ONE
  if ! { recv && (( OPCODE == 8 )); }; then                                    # RESULT
    echo "QUERY got opcode ${OPCODE:-none}: ${BODY:-}" >&2; return 1
  fi
  grep -oE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$BODY" | tail -n1
}

# Healthy = port 9042 open AND a real CQL query answered.
cassandra_wait() {
  local t0=$1 pid; pid=$(recorded_pid cassandra)
  local deadline=$(( $(now_s) + CASSANDRA_TIMEOUT )) port_at="" version
  while (( $(now_s) < deadline )); do
    if ! pid_alive "$pid"; then
      rm -f "$(pid_file cassandra)"
      show_tail "$CASSANDRA_LOG"
      err "cassandra: process $pid exited during startup (log: $CASSANDRA_LOG)"
      return 1
    fi
    if port_open 127.0.0.1 9042; then
      [[ -n "$port_at" ]] || port_at=$(elapsed_since "$t0")
      if version=$(timeout 10 bash -c "$(declare -f cql_release_version); cql_release_version" \
                   2>>"$CLAP_LOG_DIR/cassandra-check.log") && [[ -n "$version" ]]; then
        log "cassandra: healthy $(how_long cassandra "$t0") (port open at ${port_at} s; CQL says release_version $version) pid $pid, RSS $(rss_mb "$pid") MB"
        log "cassandra: CQL 127.0.0.1:9042; log: $CASSANDRA_LOG"
        return 0
      fi
    fi
    sleep 1
  done
  show_tail "$CASSANDRA_LOG"
  err "cassandra: not healthy within ${CASSANDRA_TIMEOUT}s (still running as pid $pid; stop it with: $0 down cassandra)"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Subcommands

# Expand the optional service argument into a list.
services_of() {
  case "${1:-all}" in
    all)             echo kafka cassandra ;;
    kafka|cassandra) echo "$1" ;;
    *)               usage ;;
  esac
}

cmd_up() {
  local svcs; svcs=$(services_of "${1:-all}")
  check_java
  take_lock
  local t0 s rc=0; t0=$(date +%s.%N)
  # Start everything first, then wait: the two JVMs boot in parallel.
  for s in $svcs; do "${s}_start"; done
  for s in $svcs; do "${s}_wait" "${STARTED_AT[$s]}" || rc=1; done
  if (( rc == 0 )); then
    log "up: $svcs healthy after $(elapsed_since "$t0") s (pids in $CLAP_RUN_DIR, logs in $CLAP_LOG_DIR)"
  else
    err "up: FAILED (logs in $CLAP_LOG_DIR)"
  fi
  return "$rc"
}

cmd_down() {
  local svcs s rc=0; svcs=$(services_of "${1:-all}")
  take_lock
  for s in $svcs; do stop_pid "$s" 30 || rc=1; done
  return "$rc"
}

cmd_status() {
  local svcs s pid rc=0 ports p state; svcs=$(services_of "${1:-all}")
  for s in $svcs; do
    pid=$(recorded_pid "$s")
    if is_running "$s"; then
      if [[ $s == kafka ]]; then ports=("$KAFKA_PORT"); else ports=(9042); fi
      state=""
      for p in "${ports[@]}"; do
        if port_open 127.0.0.1 "$p"; then state+=" port $p open"; else state+=" port $p closed"; fi
      done
      log "$s: running, pid $pid, RSS $(rss_mb "$pid") MB, up $(ps -o etime= -p "$pid" | tr -d ' '),${state}; log: $CLAP_LOG_DIR/$s.log"
    else
      rc=3
      if [[ -n "$pid" ]]; then log "$s: not running (stale pid file for pid $pid)"; else log "$s: not running"; fi
    fi
  done
  return "$rc"
}

cmd_clean() {
  local svcs s; svcs=$(services_of "${1:-all}")
  cmd_down "${1:-all}"
  for s in $svcs; do
    local dir="$CLAP_RUN_DIR/$s"
    if [[ -d "$dir" ]]; then rm -rf "$dir"; log "$s: removed data and config in $dir"; fi
  done
  log "clean: logs kept in $CLAP_LOG_DIR"
}

sub=${1:-}; shift || true
case "$sub" in
  resolve) cmd_resolve ;;
  up)      cmd_up "$@" ;;
  down)    cmd_down "$@" ;;
  status)  cmd_status "$@" ;;
  clean)   cmd_clean "$@" ;;
  *)       usage ;;
esac
