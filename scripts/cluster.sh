#!/usr/bin/env bash
# The shape Agora is run in past one machine, on loopback, from Debian's packages (for machines
# without Docker; docker-compose.yml has the same shape):
#
#   HAProxy :8088 ──▶ WEB × agora serve (WORKERS=0) :8101…   (health check: GET /readyz)
#                      WORKER × agora worker
#   every agora ──▶ PgBouncer :6432 (transaction mode) ──▶ PostgreSQL primary (.dev/pg)
#   the dashboard's reads ──▶ a streaming replica :54331 (DATABASE_READ_URL)
#   Redis (.dev/redis), gateway-sim :8090 (300 ms)
#
#   scripts/cluster.sh start [WEB] [WORKER]   (3 and 2 by default)
#   scripts/cluster.sh stop
#   scripts/cluster.sh status
#
# Its state (configs, logs, pids, the replica's data) is under .dev/cluster/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.dev/cluster"
PG_PORT="${AGORA_PG_PORT:-54329}"
REPLICA_PORT="${AGORA_REPLICA_PORT:-54331}"
BOUNCER_PORT="${AGORA_BOUNCER_PORT:-6432}"
PROXY_PORT="${AGORA_PROXY_PORT:-8088}"
SIM_PORT="${AGORA_SIM_PORT:-8090}"
WEB_BASE=8100

log() { printf '\033[1;35m[cluster]\033[0m %s\n' "$*" >&2; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }
as_pg_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Waits for a command to succeed: each try is the service answering, not a guess at its speed.
until_ok() {
  local what="$1"; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "$what did not come up; see $DIR/*.log"; exit 1
}

start_replica() {
  local bin data="$DIR/replica"
  bin="$(pg_bin)"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "copying the primary into a streaming replica (.dev/cluster/replica)"
    mkdir -p "$data"; chmod 700 "$data"; [ "$(id -u)" -eq 0 ] && chown postgres: "$data" "$DIR"
    as_pg_owner "$bin/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U agora -D "$data" -R -X stream >/dev/null
  fi
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$REPLICA_PORT"; then
    as_pg_owner "$bin/pg_ctl" -D "$data" -l "$DIR/replica.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$REPLICA_PORT -c unix_socket_directories='' -c hot_standby=on -c max_connections=300" >/dev/null
  fi
}

start_bouncer() {
  cat >"$DIR/pgbouncer.ini" <<EOF
[databases]
agora = host=127.0.0.1 port=$PG_PORT dbname=agora
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 40
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
EOF
  echo '"agora" ""' >"$DIR/userlist.txt"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$DIR/pgbouncer.ini" "$DIR/userlist.txt"
  if ! pg_isready -q -h 127.0.0.1 -p "$BOUNCER_PORT" 2>/dev/null; then
    as_pg_owner pgbouncer -d "$DIR/pgbouncer.ini"
    until_ok PgBouncer psql "postgres://agora@127.0.0.1:$BOUNCER_PORT/agora" -qtAc 'SELECT 1'
  fi
}

start_proxy() {
  local web="$1" servers="" i
  for i in $(seq 1 "$web"); do servers+="    server web$i 127.0.0.1:$((WEB_BASE + i)) check inter 1s fall 2 rise 1"$'\n'; done
  cat >"$DIR/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend agora
    bind 127.0.0.1:$PROXY_PORT
    option forwardfor
    compression algo gzip
    compression type text/html text/css text/javascript application/json text/csv
    default_backend web
backend web
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    # Only a request that never reached a server is sent to another one.
    retry-on conn-failure
    option redispatch
    retries 2
$servers
EOF
  haproxy -c -q -f "$DIR/haproxy.cfg"
  haproxy -D -f "$DIR/haproxy.cfg" -p "$DIR/haproxy.pid"
}

start() {
  local web="${1:-3}" worker="${2:-2}"
  mkdir -p "$DIR"
  bash "$ROOT/scripts/devenv.sh" install pgbouncer haproxy postgresql-client
  eval "$(bash "$ROOT/scripts/devenv.sh" services)"
  psql "$AGORA_ADMIN_DATABASE_URL" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'agora'" | grep -q 1 \
    || psql "$AGORA_ADMIN_DATABASE_URL" -qc 'CREATE DATABASE agora' >/dev/null
  cargo build --release --bin agora
  local bin="$ROOT/target/release/agora"
  # Migrations take a session-level lock: straight to the primary, not through the pooler.
  "$bin" migrate
  start_replica
  start_bouncer
  [ -f "$ROOT/.dev/session_secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n' >"$ROOT/.dev/session_secret"
  export SESSION_SECRET="${SESSION_SECRET:-$(cat "$ROOT/.dev/session_secret")}"
  export DATABASE_URL="postgres://agora@127.0.0.1:$BOUNCER_PORT/agora" DATABASE_PREPARED_STATEMENTS=off
  export DATABASE_READ_URL="postgres://agora@127.0.0.1:$REPLICA_PORT/agora"
  export GATEWAY_URL="http://127.0.0.1:$SIM_PORT" TRUSTED_PROXY_HOPS=1 DB_POOL_SIZE=16 RUST_LOG="${RUST_LOG:-info}"
  GATEWAY_SIM_PORT="$SIM_PORT" GATEWAY_LATENCY_MS=300 nohup "$bin" gateway-sim >"$DIR/gateway-sim.log" 2>&1 &
  echo $! >"$DIR/gateway-sim.pid"
  local i
  for i in $(seq 1 "$web"); do
    PORT=$((WEB_BASE + i)) WORKERS=0 nohup "$bin" serve >"$DIR/web$i.log" 2>&1 &
    echo $! >"$DIR/web$i.pid"
  done
  for i in $(seq 1 "$worker"); do
    nohup "$bin" worker >"$DIR/worker$i.log" 2>&1 &
    echo $! >"$DIR/worker$i.pid"
  done
  for i in $(seq 1 "$web"); do until_ok "web$i" curl -fsS "http://127.0.0.1:$((WEB_BASE + i))/readyz"; done
  start_proxy "$web"
  until_ok HAProxy curl -fsS "http://127.0.0.1:$PROXY_PORT/readyz"
  log "Agora through HAProxy: http://127.0.0.1:$PROXY_PORT   ($web web, $worker worker; PgBouncer :$BOUNCER_PORT; replica :$REPLICA_PORT)"
}

stop_pidfile() {
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$file"
}

stop() {
  [ -d "$DIR" ] || { log "nothing to stop"; return 0; }
  stop_pidfile "$DIR/haproxy.pid"
  local f
  for f in "$DIR"/web*.pid "$DIR"/worker*.pid "$DIR/gateway-sim.pid"; do [ -e "$f" ] && stop_pidfile "$f"; done
  stop_pidfile "$DIR/pgbouncer.pid"
  [ -f "$DIR/replica/postmaster.pid" ] && as_pg_owner "$(pg_bin)/pg_ctl" -D "$DIR/replica" -m fast -w stop >/dev/null 2>&1 || true
  log "stopped (PostgreSQL and Redis stay up: make stop stops them)"
}

status() {
  local f
  for f in "$DIR"/*.pid; do
    [ -e "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f" .pid): running"; else echo "$(basename "$f" .pid): gone"; fi
  done
  curl -fsS "http://127.0.0.1:$PROXY_PORT/readyz" 2>/dev/null && echo || echo "proxy: not answering"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [WEB] [WORKER] | stop | status" >&2; exit 2 ;;
esac
