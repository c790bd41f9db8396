#!/usr/bin/env bash
# The production engine on one machine: a Temporal server (all four services, built with
# `go install`) on a PostgreSQL cluster of its own (Debian's PostgreSQL, initdb + pg_ctl).
#
#   scripts/cluster.sh up | down | status | kill-server [NODE] | restart-db | ui
#
# DA_CLUSTER_PORT   the frontend's gRPC port (default 7233); every other port derives from it:
#                   node n (0-based) uses PORT+20n (frontend), +1 history, +2 matching, +6 worker,
#                   +10 frontend HTTP, and membership ports 300 lower (ringpop; they go into a
#                   PostgreSQL smallint, so they stay below 32768); PostgreSQL PORT-100; UI PORT+1000
# DA_CLUSTER_DATA   PostgreSQL's data, the server's config, logs and pids (default .data/cluster)
# DA_CLUSTER_NODES  server processes sharing PostgreSQL (default 1; 2 for a ringpop pair)
# DA_CLUSTER_SHARDS history shards (default 4; fixed once the cluster's databases exist)
# DA_CLUSTER_UI     1 (default): also start the Temporal Web UI server when its binary builds
# DA_CLUSTER_PG     HOST:PORT of a PostgreSQL of your own (user temporal, DA_CLUSTER_PG_PASSWORD):
#                   then no PostgreSQL is installed or started here (the compose stack uses this)
# DA_CLUSTER_BIND   the address the server and UI listen on (default 127.0.0.1; 0.0.0.0 in a
#                   container, which then broadcasts its own IP to the other nodes)
#
# `up` installs what is missing (cached in ~/.cache/durable-agents), creates what does not exist and
# starts only what is down: running it twice is harmless.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${DA_CACHE_DIR:-$HOME/.cache/durable-agents}
SERVER_VERSION=v1.29.1
UI_VERSION=v2.42.1
PORT=${DA_CLUSTER_PORT:-7233}
DATA=$(mkdir -p "${DA_CLUSTER_DATA:-.data/cluster}" && cd "${DA_CLUSTER_DATA:-.data/cluster}" && pwd)
NODES=${DA_CLUSTER_NODES:-1}
SHARDS=${DA_CLUSTER_SHARDS:-4}
NAMESPACE=${TEMPORAL_NAMESPACE:-default}
PG_HOST=127.0.0.1
PG_PORT=$((PORT - 100))
if [ -n "${DA_CLUSTER_PG:-}" ]; then PG_HOST=${DA_CLUSTER_PG%:*}; PG_PORT=${DA_CLUSTER_PG##*:}; fi
export PGPASSWORD=${DA_CLUSTER_PG_PASSWORD:-temporal}
BIND=${DA_CLUSTER_BIND:-127.0.0.1}
BROADCAST=$BIND
[ "$BIND" = 0.0.0.0 ] && BROADCAST=$(hostname -i | awk '{print $1}')
UI_PORT=$((PORT + 1000))
SEARCH_ATTRIBUTES=(AgentName SessionStatus AgentVersion ParentSession)  # contracts.SEARCH_ATTRIBUTE_NAMES
BIN=$ROOT/.bin
SERVER=$BIN/temporal-server
SQL_TOOL=$BIN/temporal-sql-tool
UI_SERVER=$BIN/temporal-ui-server
TEMPORAL=$BIN/temporal
SCHEMA=$CACHE/temporal-server-$SERVER_VERSION-schema   # copied from the module cache with the binaries
PG=$DATA/postgres
LOGS=$DATA/logs
PIDS=$DATA/pids

say() { printf '\033[1m[cluster]\033[0m %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# PostgreSQL refuses to run as root: as root, its processes run as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
psql_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U temporal -d "$1" -tAqc "$2"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
node_port() { echo $((PORT + 20 * $1)); }
alive() { local f=$PIDS/$1.pid; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

check_ports() {
  [ "$NODES" -ge 1 ] && [ "$NODES" -le 5 ] || die "DA_CLUSTER_NODES must be 1..5"
  [ $((PORT - 300)) -ge 1024 ] || die "DA_CLUSTER_PORT=$PORT: the membership ports (PORT-300...) must be above 1023"
  local top=$(($(node_port $((NODES - 1))) - 300 + 6))
  [ "$top" -lt 32768 ] || die "DA_CLUSTER_PORT=$PORT: membership port $top must stay below 32768 (a PostgreSQL smallint)"
}

# --- installing ------------------------------------------------------------------------------

install_postgres() {
  [ -n "${DA_CLUSTER_PG:-}" ] || [ -n "$(pg_bin)" ] && return
  say "postgres: installing Debian's postgresql"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
}

# `go install` of one package of a module, cached by version; $1 package, $2 version, $3 cached name.
go_binary() {
  local pkg=$1 version=$2 name=$3 built
  [ -x "$CACHE/$name-$version" ] && return
  command -v go >/dev/null 2>&1 || die "$name: no Go toolchain to build $pkg@$version"
  say "$name: building $pkg@$version with go install (about two minutes on 2 cores, once)"
  built=$(mktemp -d "$CACHE/gobin.XXXXXX")
  GOBIN=$built GOFLAGS=-buildvcs=false go install "$pkg@$version"
  mv "$built"/* "$CACHE/$name-$version"
  rmdir "$built"
}

install_binaries() {
  mkdir -p "$CACHE" "$BIN"
  go_binary go.temporal.io/server/cmd/server "$SERVER_VERSION" temporal-server
  go_binary go.temporal.io/server/cmd/tools/sql "$SERVER_VERSION" temporal-sql-tool
  if [ ! -d "$SCHEMA" ]; then
    local module; module=$(go env GOMODCACHE)/go.temporal.io/server@$SERVER_VERSION
    [ -d "$module/schema/postgresql/v12" ] || go mod download "go.temporal.io/server@$SERVER_VERSION"
    cp -r "$module/schema/postgresql/v12" "$SCHEMA.tmp" && chmod -R u+w "$SCHEMA.tmp" && mv "$SCHEMA.tmp" "$SCHEMA"
  fi
  ln -sf "$CACHE/temporal-server-$SERVER_VERSION" "$SERVER"
  ln -sf "$CACHE/temporal-sql-tool-$SERVER_VERSION" "$SQL_TOOL"
  [ -x "$TEMPORAL" ] || bash scripts/setup.sh temporal   # the CLI: namespace, search attributes
}

# The Web UI server is optional: a failed build is reported once (its log is kept) and not retried.
install_ui() {
  [ "${DA_CLUSTER_UI:-1}" = 1 ] || return 1
  if [ ! -x "$CACHE/temporal-ui-server-$UI_VERSION" ]; then
    [ -f "$CACHE/temporal-ui-server-$UI_VERSION.failed" ] && return 1
    if ! go_binary github.com/temporalio/ui-server/v2/cmd/server "$UI_VERSION" temporal-ui-server \
      >"$CACHE/temporal-ui-server-$UI_VERSION.log" 2>&1; then
      mv "$CACHE/temporal-ui-server-$UI_VERSION.log" "$CACHE/temporal-ui-server-$UI_VERSION.failed"
      say "ui: the UI server did not build; see $CACHE/temporal-ui-server-$UI_VERSION.failed"
      return 1
    fi
  fi
  ln -sf "$CACHE/temporal-ui-server-$UI_VERSION" "$UI_SERVER"
}

# --- PostgreSQL ------------------------------------------------------------------------------

pg_ctl_() { as_pg "$(pg_bin)/pg_ctl" -D "$PG/data" "$@"; }
pg_running() { [ -f "$PG/data/PG_VERSION" ] && pg_ctl_ status >/dev/null 2>&1; }

start_postgres() {
  if [ -n "${DA_CLUSTER_PG:-}" ]; then
    for _ in $(seq 1 120); do psql_q postgres "SELECT 1" >/dev/null 2>&1 && return; sleep 0.5; done
    die "the PostgreSQL at $DA_CLUSTER_PG does not answer"
  fi
  mkdir -p "$PG/run" "$LOGS"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$PG" "$PG/run"
    as_pg test -x "$PG" || die "the postgres user cannot reach $PG: make its parent directories traversable (chmod o+x)"
  fi
  if [ ! -f "$PG/data/PG_VERSION" ]; then
    say "postgres: initdb $PG/data"
    as_pg "$(pg_bin)/initdb" -D "$PG/data" -A trust -U temporal -E UTF8 --no-instructions >"$LOGS/initdb.log" 2>&1 \
      || { cat "$LOGS/initdb.log"; die "initdb failed"; }
  fi
  if pg_running; then say "postgres: running on 127.0.0.1:$PG_PORT"; return; fi
  touch "$LOGS/postgres.log"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$LOGS/postgres.log"
  local options="-p $PG_PORT -k $PG/run -c listen_addresses=127.0.0.1 -c max_connections=400 ${DA_CLUSTER_PG_OPTIONS:-}"
  pg_ctl_ -o "$options" -w -t 60 -l "$LOGS/postgres.log" start >/dev/null || { tail -20 "$LOGS/postgres.log"; die "postgres did not start"; }
  say "postgres: started on 127.0.0.1:$PG_PORT (log $LOGS/postgres.log)"
}

# Both databases, their schema set up once and updated to what this server binary ships.
setup_schema() {
  local sql=("$SQL_TOOL" --plugin postgres12 --ep "$PG_HOST" -p "$PG_PORT" -u temporal --pw "$PGPASSWORD")
  local db dir
  for db in temporal temporal_visibility; do
    dir=$SCHEMA/temporal/versioned; [ "$db" = temporal_visibility ] && dir=$SCHEMA/visibility/versioned
    if [ "$(psql_q postgres "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
      say "schema: creating database $db"
      "${sql[@]}" --db "$db" create-database >>"$LOGS/schema.log" 2>&1
    fi
    if [ -z "$(psql_q "$db" "SELECT to_regclass('schema_version')")" ]; then
      "${sql[@]}" --db "$db" setup-schema -v 0.0 >>"$LOGS/schema.log" 2>&1
    fi
    "${sql[@]}" --db "$db" update-schema -d "$dir" >>"$LOGS/schema.log" 2>&1 \
      || { tail -20 "$LOGS/schema.log"; die "update-schema of $db failed"; }
    say "schema: $db at version $(psql_q "$db" 'SELECT curr_version FROM schema_version')"
  done
}

# --- the Temporal server ---------------------------------------------------------------------

write_node_config() {
  local n=$1 base; base=$(node_port "$1")
  local dir=$DATA/config/node$n
  mkdir -p "$dir"
  cp "$ROOT/deploy/dynamicconfig.yaml" "$DATA/config/dynamicconfig.yaml"
  cat >"$dir/cluster.yaml" <<YAML
# Written by scripts/cluster.sh for node $n; edits are overwritten by the next \`up\`.
log:
  stdout: true
  level: ${DA_CLUSTER_LOG_LEVEL:-warn}
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: $SHARDS
  datastores:
    postgres-default:
      sql: &sql
        pluginName: postgres12
        databaseName: temporal
        connectAddr: "$PG_HOST:$PG_PORT"
        connectProtocol: tcp
        user: temporal
        password: "$PGPASSWORD"
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        <<: *sql
        databaseName: temporal_visibility
        maxConns: 10
        maxIdleConns: 10
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "$BROADCAST"
services:
  frontend:
    rpc: {grpcPort: $base, membershipPort: $((base - 300)), bindOnIP: "$BIND", httpPort: $((base + 10))}
  history:
    rpc: {grpcPort: $((base + 1)), membershipPort: $((base - 299)), bindOnIP: "$BIND"}
  matching:
    rpc: {grpcPort: $((base + 2)), membershipPort: $((base - 298)), bindOnIP: "$BIND"}
  worker:
    rpc: {grpcPort: $((base + 6)), membershipPort: $((base - 294)), bindOnIP: "$BIND"}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "$BROADCAST:$PORT"
      httpAddress: "$BROADCAST:$((PORT + 10))"
dcRedirectionPolicy:
  policy: noop
dynamicConfigClient:
  filepath: "$DATA/config/dynamicconfig.yaml"
  pollInterval: 10s
YAML
}

start_node() {
  local n=$1
  if alive "server-$n"; then say "server node $n: running (pid $(cat "$PIDS/server-$n.pid"))"; return; fi
  port_open "$(node_port "$n")" && die "port $(node_port "$n") is taken by another process (not this cluster's node $n)"
  write_node_config "$n"
  mkdir -p "$PIDS" "$LOGS"
  setsid nohup "$SERVER" --root "$DATA/config" --config "node$n" --env cluster --allow-no-auth start \
    >>"$LOGS/server-$n.log" 2>&1 </dev/null &
  echo $! >"$PIDS/server-$n.pid"
  say "server node $n: started (pid $!, frontend 127.0.0.1:$(node_port "$n"), log $LOGS/server-$n.log)"
}

wait_frontend() {
  local n=$1 address; address=127.0.0.1:$(node_port "$1")
  for _ in $(seq 1 240); do
    "$TEMPORAL" operator cluster health --address "$address" >/dev/null 2>&1 && return
    alive "server-$n" || { tail -30 "$LOGS/server-$n.log"; die "server node $n exited; see $LOGS/server-$n.log"; }
    sleep 0.5
  done
  die "server node $n did not answer on $address in 120 s; see $LOGS/server-$n.log"
}

# The namespace and the project's search attributes (the dev server gets them as flags).
setup_namespace() {
  local t=("$TEMPORAL" --address "127.0.0.1:$PORT")
  if ! "${t[@]}" operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    "${t[@]}" operator namespace create --namespace "$NAMESPACE" --retention 72h >/dev/null
    say "namespace: $NAMESPACE created"
  fi
  # A new namespace reaches the frontends' caches within seconds.
  for _ in $(seq 1 60); do "${t[@]}" workflow count --namespace "$NAMESPACE" >/dev/null 2>&1 && break; sleep 0.5; done
  local listed missing=() name
  listed=$("${t[@]}" operator search-attribute list --namespace "$NAMESPACE" 2>/dev/null || true)
  for name in "${SEARCH_ATTRIBUTES[@]}"; do
    grep -qw "$name" <<<"$listed" || missing+=(--name "$name" --type Keyword)
  done
  if [ ${#missing[@]} -gt 0 ]; then
    "${t[@]}" operator search-attribute create --namespace "$NAMESPACE" "${missing[@]}" >/dev/null
    say "search attributes: ${SEARCH_ATTRIBUTES[*]} registered"
  fi
  # Each frontend maps them to columns from a cache it refreshes every few seconds: until then,
  # starting a session that sets them fails.
  local n query; query=$(printf '%s="" AND ' "${SEARCH_ATTRIBUTES[@]}"); query=${query% AND }
  for n in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 1 120); do
      "$TEMPORAL" --address "127.0.0.1:$(node_port "$n")" workflow count --namespace "$NAMESPACE" \
        --query "$query" >/dev/null 2>&1 && break
      sleep 0.5
    done
  done
}

start_ui() {
  install_ui || return 0
  if alive ui; then return; fi
  mkdir -p "$DATA/config/ui"
  cat >"$DATA/config/ui/cluster.yaml" <<YAML
temporalGrpcAddress: "127.0.0.1:$PORT"
host: "$BIND"
port: $UI_PORT
enableUi: true
defaultNamespace: $NAMESPACE
cors:
  unsafeAllowAllOrigins: true
YAML
  setsid nohup "$UI_SERVER" --root "$DATA/config" --config ui --env cluster start >>"$LOGS/ui.log" 2>&1 </dev/null &
  echo $! >"$PIDS/ui.pid"
  say "ui: http://127.0.0.1:$UI_PORT (pid $!, log $LOGS/ui.log)"
}

# --- commands --------------------------------------------------------------------------------

up() {
  check_ports
  mkdir -p "$LOGS" "$PIDS"
  install_postgres
  install_binaries
  start_postgres
  setup_schema
  local n
  for n in $(seq 0 $((NODES - 1))); do start_node "$n"; done
  for n in $(seq 0 $((NODES - 1))); do wait_frontend "$n"; done
  setup_namespace
  start_ui
  say "up: frontend 127.0.0.1:$PORT, namespace $NAMESPACE, $NODES node(s), data $DATA"
}

stop_pid() {  # $1 pid-file name; SIGTERM, then SIGKILL after 15 s
  alive "$1" || { rm -f "$PIDS/$1.pid"; return; }
  local pid; pid=$(cat "$PIDS/$1.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDS/$1.pid"
  say "$1: stopped"
}

down() {
  stop_pid ui
  local f
  for f in "$PIDS"/server-*.pid; do [ -e "$f" ] && stop_pid "$(basename "$f" .pid)"; done
  if [ -z "${DA_CLUSTER_PG:-}" ] && pg_running; then pg_ctl_ -m fast -w stop >/dev/null; say "postgres: stopped"; fi
}

# In the foreground (a container's command): up, then wait; SIGTERM stops what up started.
run() {
  rm -f "$DATA/ready"
  up
  touch "$DATA/ready"   # the container's health check: the namespace and search attributes are there
  trap 'down; exit 0' TERM INT
  while alive server-0; do sleep 1; done
  die "server node 0 exited; see $LOGS/server-0.log"
}

kill_server() {  # every node, or node $1
  local f killed=0
  for f in "$PIDS"/server-*.pid; do
    [ -e "$f" ] || continue
    [ -n "${1:-}" ] && [ "$(basename "$f" .pid)" != "server-$1" ] && continue
    if kill -9 "$(cat "$f")" 2>/dev/null; then say "$(basename "$f" .pid): SIGKILLed (pid $(cat "$f"))"; killed=1; fi
    rm -f "$f"
  done
  [ "$killed" = 1 ] || die "no server process to kill"
}

restart_db() {
  pg_running || die "postgres is not running"
  pg_ctl_ -m fast -w -t 60 restart >/dev/null
  say "postgres: restarted"
}

status() {
  local n
  if [ -n "${DA_CLUSTER_PG:-}" ]; then echo "postgres      external ($DA_CLUSTER_PG)"
  elif pg_running; then echo "postgres      running (127.0.0.1:$PG_PORT, $PG/data)"; else echo "postgres      stopped"; fi
  for n in $(seq 0 $((NODES - 1))); do
    if alive "server-$n"; then
      local health=not-serving
      "$TEMPORAL" operator cluster health --address "127.0.0.1:$(node_port "$n")" >/dev/null 2>&1 && health=serving
      echo "server-$n      running (pid $(cat "$PIDS/server-$n.pid"), 127.0.0.1:$(node_port "$n"), $health)"
    else
      echo "server-$n      stopped"
    fi
  done
  if alive ui; then echo "ui            running (http://127.0.0.1:$UI_PORT)"; else echo "ui            stopped"; fi
}

case "${1:-}" in
  up) up ;;
  run) run ;;
  down) down ;;
  status) status ;;
  kill-server) kill_server "${2:-}" ;;
  restart-db) restart_db ;;
  install) install_postgres; install_binaries; install_ui || true ;;
  *) echo "usage: $0 up|run|down|status|kill-server [NODE]|restart-db|install" >&2; exit 2 ;;
esac
