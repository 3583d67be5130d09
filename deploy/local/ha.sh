#!/usr/bin/env bash
# The replicated deployment on this machine (`make up-ha`): 3 Kafka brokers in KRaft, 3
# Cassandra nodes on 3 loopback addresses, and the project's services twice over: 2 gateways,
# 2 Faust workers (with standby replicas), 2 projectors.
#
#   ha.sh up     [kafka|cassandra|apps ...]  start what is not running yet (default: all three
#                                            groups, in that order) and wait until it is healthy
#   ha.sh down   [kafka|cassandra|apps ...]  stop what this script started, by recorded pid
#                                            (apps first; default: everything in $HA_RUN_DIR)
#   ha.sh status                             one line per process; exit 3 if one is not running
#   ha.sh start  NAME                        start one component and wait until it is healthy:
#                                            kafkaN, cassandraN, processorN, projectorN, gatewayN
#   ha.sh stop   NAME                        SIGTERM one component (SIGKILL after the grace time)
#   ha.sh env                                the resolved settings as KEY=VALUE lines
#   ha.sh clean                              down, then delete the data (logs are kept)
#
# Every address is configurable; the defaults are the issue's. Environment (default):
#   HA_RUN_DIR                pid files, config, data, logs    (<repo>/.run/ha)
#   HA_KAFKA_HOST             broker address                   (127.0.0.1)
#   HA_KAFKA_PORTS            client ports, one per broker     ("9092 9094 9096")
#   HA_KAFKA_CONTROLLER_PORTS KRaft controller ports           ("9093 9095 9097")
#   HA_CASSANDRA_IPS          one address per node, 1st = seed ("127.0.0.1 127.0.0.2 127.0.0.3")
#   HA_CASSANDRA_PORT / HA_CASSANDRA_STORAGE_PORT              (9042 / 7000)
#   HA_CASSANDRA_JMX_PORTS    one per node                     ("7199 7299 7399": 7199 + 100 i)
#   HA_GATEWAY_PORTS          one gateway per port             ("8000 8001")
#   HA_PROCESSOR_WEB_PORTS    one Faust worker per port        ("6066 6067")
#   HA_PROJECTORS             number of projectors             (2)
#   HA_KAFKA_HEAP / HA_CASSANDRA_HEAP                          (384m / 768m)
#   HA_CLUSTER_NAME           Cassandra cluster name           (clap-ha)
#   KAFKA_RF / CASSANDRA_RF   replication of topics / keyspace (3 / 3)
#   CLAP_SECRET, CLAP_EPOCH, and CLAP_TOPIC, COUNTS_TOPIC, ARTICLES_TOPIC, CLAP_PARTITIONS, CASSANDRA_KEYSPACE,
#   PROCESSOR_APP_PREFIX, PROJECTOR_GROUP, CLAP_WINDOW_MS, CLAPS_PER_SECOND, CLAP_BURST,
#   NEW_IDENTITIES_PER_MINUTE, NEW_IDENTITY_BURST when set.
# `up apps` alone runs the services against an existing Cassandra: set HA_CASSANDRA_IPS to it.
set -euo pipefail

HA_RUN_DIR=${HA_RUN_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.run/ha}
# Absolute, whatever the caller passed (make passes .run/ha): Cassandra reads its config from a
# file:// URL, which a relative path does not make.
mkdir -p "$HA_RUN_DIR" && HA_RUN_DIR=$(cd "$HA_RUN_DIR" && pwd)
export CLAP_RUN_DIR=$HA_RUN_DIR   # lib.sh and proc.sh keep pid files there
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAVA=${CLAP_JAVA:-java}
PY=${HA_PYTHON:-$CLAP_ROOT/.venv/bin/python}
KAFKA_HOST=${HA_KAFKA_HOST:-127.0.0.1}
read -r -a KAFKA_PORTS <<<"${HA_KAFKA_PORTS:-9092 9094 9096}"
read -r -a KAFKA_CONTROLLER_PORTS <<<"${HA_KAFKA_CONTROLLER_PORTS:-9093 9095 9097}"
read -r -a CASSANDRA_IPS <<<"${HA_CASSANDRA_IPS:-127.0.0.1 127.0.0.2 127.0.0.3}"
CASSANDRA_PORT=${HA_CASSANDRA_PORT:-9042}
CASSANDRA_STORAGE_PORT=${HA_CASSANDRA_STORAGE_PORT:-7000}
default_jmx_ports() { local i; for i in "${!CASSANDRA_IPS[@]}"; do printf '%s ' $(( 7199 + 100 * i )); done; }
read -r -a CASSANDRA_JMX_PORTS <<<"${HA_CASSANDRA_JMX_PORTS:-$(default_jmx_ports)}"
read -r -a GATEWAY_PORTS <<<"${HA_GATEWAY_PORTS:-8000 8001}"
read -r -a PROCESSOR_WEB_PORTS <<<"${HA_PROCESSOR_WEB_PORTS:-6066 6067}"
PROJECTORS=${HA_PROJECTORS:-2}
KAFKA_HEAP=${HA_KAFKA_HEAP:-384m}
CASSANDRA_HEAP=${HA_CASSANDRA_HEAP:-768m}
CLUSTER_NAME=${HA_CLUSTER_NAME:-clap-ha}
KAFKA_RF=${KAFKA_RF:-3}
CASSANDRA_RF=${CASSANDRA_RF:-3}
LOGS="$CLAP_LOG_DIR"

(( ${#KAFKA_PORTS[@]} == ${#KAFKA_CONTROLLER_PORTS[@]} )) || die "HA_KAFKA_PORTS and HA_KAFKA_CONTROLLER_PORTS differ in length"
(( ${#CASSANDRA_IPS[@]} == ${#CASSANDRA_JMX_PORTS[@]} )) || die "HA_CASSANDRA_IPS and HA_CASSANDRA_JMX_PORTS differ in length"

join_by() { local IFS=$1; shift; echo "$*"; }
KAFKA_BOOTSTRAP=$(join_by , "${KAFKA_PORTS[@]/#/$KAFKA_HOST:}")
CASSANDRA_HOSTS=$(join_by , "${CASSANDRA_IPS[@]}")

# The epoch the processors count at: CLAP_EPOCH if set, else the one a rebuild recorded.
current_epoch() {
  if [[ -n "${CLAP_EPOCH:-}" ]]; then echo "$CLAP_EPOCH"
  elif [[ -f "$HA_RUN_DIR/epoch" ]]; then cat "$HA_RUN_DIR/epoch"
  else echo 1; fi
}

# The environment every service of the deployment gets.
app_env() {
  local v
  printf '%s\n' CLAP_MODE=distributed "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP" "CASSANDRA_HOSTS=$CASSANDRA_HOSTS" \
    "CASSANDRA_PORT=$CASSANDRA_PORT" "CASSANDRA_RF=$CASSANDRA_RF" "KAFKA_RF=$KAFKA_RF" \
    PROCESSOR_STANDBY_REPLICAS=1 "PROCESSOR_STATE_DIR=$HA_RUN_DIR/processor-state" \
    "CLAP_SECRET=${CLAP_SECRET:-local-dev-secret-change-me}" \
    "CLAP_EPOCH=$(current_epoch)" "PYTHONPATH=$CLAP_ROOT" PYTHONUNBUFFERED=1
  for v in CLAP_TOPIC COUNTS_TOPIC ARTICLES_TOPIC CLAP_PARTITIONS CASSANDRA_KEYSPACE PROCESSOR_APP_PREFIX PROJECTOR_GROUP \
           CLAP_WINDOW_MS CLAPS_PER_SECOND CLAP_BURST NEW_IDENTITIES_PER_MINUTE NEW_IDENTITY_BURST; do
    [[ -n "${!v:-}" ]] && printf '%s=%s\n' "$v" "${!v}"
  done
  return 0
}

# What other tools (the chaos suite, the rebuild) need to find this deployment.
cmd_env() {
  app_env | grep -v -e '^PYTHON' -e '^CLAP_MODE='
  printf '%s\n' "HA_RUN_DIR=$HA_RUN_DIR" "KAFKA_NODES=$(seq -s, 1 ${#KAFKA_PORTS[@]})" \
    "KAFKA_HOST=$KAFKA_HOST" "KAFKA_PORTS=$(join_by , "${KAFKA_PORTS[@]}")" \
    "CASSANDRA_NODES=$(seq -s, 1 ${#CASSANDRA_IPS[@]})" \
    "GATEWAY_PORTS=$(join_by , "${GATEWAY_PORTS[@]}")" \
    "PROCESSOR_WEB_PORTS=$(join_by , "${PROCESSOR_WEB_PORTS[@]}")" "PROJECTORS=$PROJECTORS" \
    "CLAP_LIB_DIR=$CLAP_LIB_DIR"
  # The inputs themselves, so a tool can call ha.sh again for this same deployment.
  printf '%s\n' "HA_KAFKA_HOST=$KAFKA_HOST" "HA_KAFKA_PORTS=${KAFKA_PORTS[*]}" \
    "HA_KAFKA_CONTROLLER_PORTS=${KAFKA_CONTROLLER_PORTS[*]}" "HA_CASSANDRA_IPS=${CASSANDRA_IPS[*]}" \
    "HA_CASSANDRA_PORT=$CASSANDRA_PORT" "HA_CASSANDRA_STORAGE_PORT=$CASSANDRA_STORAGE_PORT" \
    "HA_CASSANDRA_JMX_PORTS=${CASSANDRA_JMX_PORTS[*]}" "HA_GATEWAY_PORTS=${GATEWAY_PORTS[*]}" \
    "HA_PROCESSOR_WEB_PORTS=${PROCESSOR_WEB_PORTS[*]}" "HA_PROJECTORS=$PROJECTORS" \
    "HA_KAFKA_HEAP=$KAFKA_HEAP" "HA_CASSANDRA_HEAP=$CASSANDRA_HEAP" "HA_CLUSTER_NAME=$CLUSTER_NAME"
}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}" >&2; exit 64; }

# ---------------------------------------------------------------------------------------------
# Waiting on logs: only what a process wrote after our start counts (logs are appended to).

log_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# wait_log NAME LOGFILE FROM_BYTE NEEDLE SECONDS: until NEEDLE appears after FROM_BYTE.
wait_log() {
  local name=$1 file=$2 from=$3 needle=$4 secs=$5 t0; t0=$(date +%s.%N)
  local deadline=$(( $(now_s) + secs )) pid
  while (( $(now_s) < deadline )); do
    # `|| true`: grep -q quits at the first match, and tail's SIGPIPE must not fail the pipeline.
    if { tail -c +"$(( from + 1 ))" "$file" 2>/dev/null || true; } | grep -qF -- "$needle"; then
      log "$name: ready after $(elapsed_since "$t0") s"; return 0
    fi
    pid=$(recorded_pid "$name")
    if [[ -z "$pid" ]] || ! pid_alive "$pid"; then
      show_tail "$file" 30; err "$name: exited while starting (log: $file)"; return 1
    fi
    sleep 0.5
  done
  show_tail "$file" 30; err "$name: not ready within ${secs}s (log: $file)"; return 1
}

start_java() {   # NAME LOGFILE JAVA_ARGS...: the recorded pid is the JVM itself (exec)
  local name=$1 logfile=$2; shift 2
  printf '==== %s ha.sh start %s\n' "$(date -Is)" "$name" >>"$logfile"
  ( exec nohup "$JAVA" "$@" ) >>"$logfile" 2>&1 </dev/null &
  record_pid "$name" $!
}

# Returns 0 if NAME runs already (nothing to do).
running_already() {
  if is_running "$1"; then log "$1: already running (pid $(recorded_pid "$1"))"; return 0; fi
  rm -f "$(pid_file "$1")"; return 1
}

# ---------------------------------------------------------------------------------------------
# Kafka

kafka_tool() {
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$CLAP_DEPLOY/kafka/tools-log4j2.properties" -cp "$CLAP_LIB_DIR/kafka/*" "$@"
}

kafka_configure() {   # N
  local n=$1 i voters=()
  for i in "${!KAFKA_PORTS[@]}"; do voters+=("$(( i + 1 ))@$KAFKA_HOST:${KAFKA_CONTROLLER_PORTS[$i]}"); done
  local dir="$HA_RUN_DIR/kafka$n"; mkdir -p "$dir/data"
  # shellcheck disable=SC2016
  NODE_ID=$n VOTERS=$(join_by , "${voters[@]}") HOST=$KAFKA_HOST PORT=${KAFKA_PORTS[$((n - 1))]} \
    CONTROLLER_PORT=${KAFKA_CONTROLLER_PORTS[$((n - 1))]} DATA_DIR="$dir/data" \
    envsubst '${NODE_ID} ${VOTERS} ${HOST} ${PORT} ${CONTROLLER_PORT} ${DATA_DIR}' \
    <"$CLAP_DEPLOY/ha/kafka-node.properties.tmpl" >"$dir/server.properties"
  # Every node is formatted once, with the one cluster id of this deployment; never again.
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local idfile="$HA_RUN_DIR/kafka-cluster-id"
    [[ -f "$idfile" ]] || kafka_tool kafka.tools.StorageTool random-uuid >"$idfile" 2>>"$LOGS/kafka-format.log"
    kafka_tool kafka.tools.StorageTool format -t "$(cat "$idfile")" -c "$dir/server.properties" \
      >>"$LOGS/kafka-format.log" 2>&1 || { show_tail "$LOGS/kafka-format.log"; die "kafka$n: storage format failed"; }
  fi
}

kafka_launch() {   # N: start without waiting
  local n=$1 name="kafka$1"
  running_already "$name" && return 0
  local port=${KAFKA_PORTS[$((n - 1))]}
  if port_open "$KAFKA_HOST" "$port"; then die "$name: $KAFKA_HOST:$port is in use by a process this script did not start"; fi
  kafka_configure "$n"
  KAFKA_FROM[$n]=$(log_size "$LOGS/$name.log")
  start_java "$name" "$LOGS/$name.log" -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:ParallelGCThreads=1 -XX:ConcGCThreads=1 \
    -XX:+ExitOnOutOfMemoryError -XX:ErrorFile="$LOGS/$name-hs_err_pid%p.log" -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CLAP_DEPLOY/kafka/log4j2.properties" \
    -cp "$CLAP_LIB_DIR/kafka/*" kafka.Kafka "$HA_RUN_DIR/$name/server.properties"
  log "$name: started pid $(recorded_pid "$name") on $KAFKA_HOST:$port (heap $KAFKA_HEAP)"
}

kafka_wait() {   # N
  local n=$1
  [[ -n "${KAFKA_FROM[$n]:-}" ]] || return 0   # was running already
  wait_log "kafka$n" "$LOGS/kafka$n.log" "${KAFKA_FROM[$n]}" "Kafka Server started" 180
}

declare -A KAFKA_FROM=()

# ---------------------------------------------------------------------------------------------
# Cassandra

declare -A CASSANDRA_FROM=()

cassandra_launch() {   # N: start without waiting
  local n=$1 name="cassandra$1"
  running_already "$name" && return 0
  local ip=${CASSANDRA_IPS[$((n - 1))]} dir="$HA_RUN_DIR/cassandra$1"
  if port_open "$ip" "$CASSANDRA_PORT"; then die "$name: $ip:$CASSANDRA_PORT is in use by a process this script did not start"; fi
  mkdir -p "$dir"/{data,commitlog,saved_caches,hints,cdc_raw,triggers}
  # shellcheck disable=SC2016
  CLUSTER_NAME=$CLUSTER_NAME SEEDS="${CASSANDRA_IPS[0]}:$CASSANDRA_STORAGE_PORT" IP=$ip \
    STORAGE_PORT=$CASSANDRA_STORAGE_PORT NATIVE_PORT=$CASSANDRA_PORT NODE_DIR=$dir \
    envsubst '${CLUSTER_NAME} ${SEEDS} ${IP} ${STORAGE_PORT} ${NATIVE_PORT} ${NODE_DIR}' \
    <"$CLAP_DEPLOY/ha/cassandra-node.yaml.tmpl" >"$dir/cassandra.yaml"
  local jamms=("$CLAP_LIB_DIR"/cassandra/jamm-*.jar)
  [[ -f "${jamms[0]}" ]] || die "no jamm-*.jar in $CLAP_LIB_DIR/cassandra (run: bash deploy/local/services.sh resolve)"
  CASSANDRA_FROM[$n]=$(log_size "$LOGS/$name.log")
  # Unlike services.sh's single node, no -Dcassandra.superuser_setup_delay_ms=0: a node restarted
  # while its peers are down retries that setup with no pause at all, flooding its log.
  start_java "$name" "$LOGS/$name.log" @"$CLAP_DEPLOY/cassandra/jvm17.args" \
    -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" -XX:ParallelGCThreads=1 -XX:ConcGCThreads=1 \
    -XX:+ExitOnOutOfMemoryError -XX:HeapDumpPath="$dir/oom.hprof" -XX:ErrorFile="$LOGS/$name-hs_err_pid%p.log" \
    -Dcassandra.triggers_dir="$dir/triggers" -javaagent:"${jamms[0]}" \
    -Dcassandra.config="file://$dir/cassandra.yaml" -Dcassandra.storagedir="$dir" -Dcassandra.logdir="$LOGS" \
    -Dlogback.configurationFile="$CLAP_DEPLOY/cassandra/logback.xml" -Dcassandra-foreground=yes \
    -Dcassandra.jmx.local.port="${CASSANDRA_JMX_PORTS[$((n - 1))]}" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1000 \
    -cp "$CLAP_LIB_DIR/cassandra/*" org.apache.cassandra.service.CassandraDaemon
  log "$name: started pid $(recorded_pid "$name") on $ip:$CASSANDRA_PORT (heap $CASSANDRA_HEAP)"
}

cassandra_wait() {   # N
  local n=$1 name="cassandra$1"
  [[ -n "${CASSANDRA_FROM[$n]:-}" ]] || return 0   # was running already
  wait_log "$name" "$LOGS/$name.log" "${CASSANDRA_FROM[$n]}" "Startup complete" 300
  wait_port "${CASSANDRA_IPS[$((n - 1))]}" "$CASSANDRA_PORT" 30 || die "$name: port $CASSANDRA_PORT not open"
}

cassandra_bootstrapped() { [[ -d "$HA_RUN_DIR/cassandra$1/data/system" ]]; }


# ---------------------------------------------------------------------------------------------
# The project's services

launch_app() {   # NAME MODULE_ARGS... (env from app_env plus extra KEY=VALUE before --)
  local name=$1; shift
  local extra=()
  while [[ $1 != -- ]]; do extra+=("$1"); shift; done; shift
  running_already "$name" && return 0
  local env_lines; mapfile -t env_lines < <(app_env)
  APP_FROM=$(log_size "$LOGS/$name.log")
  bash "$CLAP_DEPLOY/proc.sh" start "$name" "$LOGS/$name.log" -- env "${env_lines[@]}" "${extra[@]}" "$PY" "$@"
}

start_component() {   # NAME: start one component, wait until healthy
  local name=$1 n=${1//[!0-9]/}
  [[ -n "$n" ]] || die "unknown component '$name'"
  APP_FROM=""
  case "$name" in
    kafka[0-9]*)
      (( n >= 1 && n <= ${#KAFKA_PORTS[@]} )) || die "no $name"
      kafka_launch "$n"; kafka_wait "$n" ;;
    cassandra[0-9]*)
      (( n >= 1 && n <= ${#CASSANDRA_IPS[@]} )) || die "no $name"
      cassandra_launch "$n"; cassandra_wait "$n" ;;
    projector[0-9]*)
      (( n >= 1 && n <= PROJECTORS )) || die "no $name"
      launch_app "$name" -- -m projector
      [[ -z "$APP_FROM" ]] || wait_log "$name" "$LOGS/$name.log" "$APP_FROM" "projector consuming" 120 ;;
    processor[0-9]*)
      (( n >= 1 && n <= ${#PROCESSOR_WEB_PORTS[@]} )) || die "no $name"
      launch_app "$name" "PROCESSOR_WEB_PORT=${PROCESSOR_WEB_PORTS[$((n - 1))]}" -- -m processor worker -l info
      [[ -z "$APP_FROM" ]] || wait_log "$name" "$LOGS/$name.log" "$APP_FROM" "Ready" 180 ;;
    gateway[0-9]*)
      (( n >= 1 && n <= ${#GATEWAY_PORTS[@]} )) || die "no $name"
      local port=${GATEWAY_PORTS[$((n - 1))]}
      launch_app "$name" "PORT=$port" "GATEWAY_NAME=gateway-$n" -- -m gateway
      bash "$CLAP_DEPLOY/proc.sh" wait-http "http://127.0.0.1:$port/healthz" 120 ;;
    *) die "unknown component '$name'" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Groups

up_kafka() {
  local i n
  # All brokers at once: the controller quorum needs two of the three to elect a leader.
  for i in "${!KAFKA_PORTS[@]}"; do kafka_launch $(( i + 1 )); done
  for i in "${!KAFKA_PORTS[@]}"; do kafka_wait $(( i + 1 )); done
}

up_cassandra() {
  local i n all_bootstrapped=1
  for i in "${!CASSANDRA_IPS[@]}"; do cassandra_bootstrapped $(( i + 1 )) || all_bootstrapped=0; done
  if (( all_bootstrapped )); then
    # A restart from disk: every node has its tokens already, so the others start as soon as the
    # seed listens for gossip (a node that finds no peer to gossip with gives up at once).
    cassandra_launch 1
    wait_port "${CASSANDRA_IPS[0]}" "$CASSANDRA_STORAGE_PORT" 180 || die "cassandra1: no gossip port in 180 s"
    for i in "${!CASSANDRA_IPS[@]}"; do cassandra_launch $(( i + 1 )); done
    for i in "${!CASSANDRA_IPS[@]}"; do cassandra_wait $(( i + 1 )); done
  else
    # A new cluster: nodes join one after another (token allocation wants it so).
    for i in "${!CASSANDRA_IPS[@]}"; do n=$(( i + 1 )); cassandra_launch "$n"; cassandra_wait "$n"; done
  fi
}

up_apps() {
  local i env_lines t0 deadline
  mapfile -t env_lines < <(app_env)
  # Topics with replication factor KAFKA_RF and min.insync.replicas 2: retried until every
  # broker has registered (a topic of RF 3 needs 3 live brokers).
  deadline=$(( $(now_s) + 90 )); t0=$(date +%s.%N)
  until env "${env_lines[@]}" "$PY" -m processor.topics >>"$LOGS/topics.log" 2>&1; do
    (( $(now_s) < deadline )) || { show_tail "$LOGS/topics.log"; die "creating topics failed"; }
    sleep 2
  done
  # processor.topics also made this epoch's changelogs, co-partitioned with the clap topic
  # (every worker makes its own epoch's before Faust starts, too: processor/__main__.py).
  log "topics: ready after $(elapsed_since "$t0") s"
  # One projector first: it creates the keyspace and table, so the others never race to
  # create the same table on different coordinators (Cassandra's table id mismatch).
  for (( i = 1; i <= PROJECTORS; i++ )); do start_component "projector$i"; done
  for i in "${!PROCESSOR_WEB_PORTS[@]}"; do start_component "processor$(( i + 1 ))"; done
  for i in "${!GATEWAY_PORTS[@]}"; do start_component "gateway$(( i + 1 ))"; done
}

groups_of() {
  if (( $# == 0 )); then echo kafka cassandra apps; return; fi
  local g; for g in "$@"; do case "$g" in kafka|cassandra|apps) echo "$g" ;; *) usage ;; esac; done
}

take_lock() {
  mkdir -p "$HA_RUN_DIR" "$LOGS"
  exec 9>"$HA_RUN_DIR/.ha.lock"
  flock -w 900 9 || die "another ha.sh holds $HA_RUN_DIR/.ha.lock"
}

cmd_up() {
  local groups g t0; groups=$(groups_of "$@"); t0=$(date +%s.%N)
  take_lock
  # The Kafka and Cassandra jars (a no-op once resolved: services.sh keeps a checksum marker).
  if [[ $groups == *kafka* || $groups == *cassandra* ]]; then bash "$CLAP_DEPLOY/services.sh" resolve 9>&-; fi
  cmd_env >"$HA_RUN_DIR/deployment.env"
  for g in $groups; do "up_$g" 9>&-; done
  log "up: $groups healthy after $(elapsed_since "$t0") s; $(total_rss) MB resident in all (pids and logs in $HA_RUN_DIR)"
  log "gateways: $(printf 'http://127.0.0.1:%s/ ' "${GATEWAY_PORTS[@]}")"
}

names_in_run_dir() {   # every component with a pid file, apps before infrastructure
  local f name apps=() infra=()
  for f in "$HA_RUN_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    name=$(basename "$f" .pid)
    case "$name" in kafka*|cassandra*) infra+=("$name") ;; *) apps+=("$name") ;; esac
  done
  printf '%s\n' "${apps[@]}" "${infra[@]}" | grep . || true
}

stop_all() {   # NAMES...: SIGTERM all at once (three brokers stop together), then wait
  local name pids=()
  for name in "$@"; do stop_pid "$name" 45 & pids+=($!); done
  local rc=0 p; for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

cmd_down() {
  take_lock
  local names; mapfile -t names < <(names_in_run_dir)
  local want; want=$(groups_of "$@")
  local apps=() kafka=() cassandra=() name
  for name in "${names[@]}"; do
    case "$name" in kafka*) kafka+=("$name") ;; cassandra*) cassandra+=("$name") ;; *) apps+=("$name") ;; esac
  done
  # Gateways first (their readers move on), then the processors and projectors.
  if [[ $want == *apps* ]]; then
    local gws=() rest=()
    for name in "${apps[@]}"; do [[ $name == gateway* ]] && gws+=("$name") || rest+=("$name"); done
    (( ${#gws[@]} == 0 )) || stop_all "${gws[@]}"
    (( ${#rest[@]} == 0 )) || stop_all "${rest[@]}"
  fi
  if [[ $want == *kafka* ]] && (( ${#kafka[@]} )); then stop_all "${kafka[@]}"; fi
  if [[ $want == *cassandra* ]] && (( ${#cassandra[@]} )); then stop_all "${cassandra[@]}"; fi
}

total_rss() {
  local name pid sum=0 r
  while read -r name; do
    pid=$(recorded_pid "$name"); [[ -n "$pid" ]] && is_running "$name" || continue
    r=$(rss_mb "$pid"); sum=$(( sum + ${r:-0} ))
  done < <(names_in_run_dir)
  echo "$sum"
}

cmd_status() {
  local name pid rc=0 any=0
  while read -r name; do
    any=1; pid=$(recorded_pid "$name")
    if is_running "$name"; then
      log "$(printf '%-14s running  pid %-7s RSS %5s MB  up %s' "$name" "$pid" "$(rss_mb "$pid")" "$(ps -o etime= -p "$pid" | tr -d ' ')")"
    else
      log "$(printf '%-14s STOPPED  (stale pid file for pid %s)' "$name" "$pid")"; rc=3
    fi
  done < <(names_in_run_dir)
  if (( any == 0 )); then log "ha: nothing running (no pid files in $HA_RUN_DIR)"; return 3; fi
  log "ha: $(total_rss) MB resident in all"
  return "$rc"
}

cmd_clean() {
  cmd_down
  local d
  # The workers' RocksDB state goes with the clusters it was read from: kept, it would claim
  # changelog offsets that a new cluster does not have, and Faust refuses to start on it.
  for d in "$HA_RUN_DIR"/kafka[0-9]* "$HA_RUN_DIR"/cassandra[0-9]* "$HA_RUN_DIR/kafka-cluster-id" "$HA_RUN_DIR/epoch" \
           "$HA_RUN_DIR/processor-state"; do
    [[ -e "$d" ]] && rm -rf "$d"
  done
  log "clean: data removed from $HA_RUN_DIR (logs kept in $LOGS)"
}

sub=${1:-}; shift || true
case "$sub" in
  up)     cmd_up "$@" ;;
  down)   cmd_down "$@" ;;
  status) cmd_status ;;
  start)  (( $# == 1 )) || usage; take_lock; start_component "$1" 9>&- ;;
  stop)   (( $# == 1 )) || usage; stop_pid "$1" 45 ;;
  env)    cmd_env ;;
  clean)  cmd_clean ;;
  *)      usage ;;
esac
