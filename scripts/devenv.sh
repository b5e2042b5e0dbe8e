#!/usr/bin/env bash
# Brings up what Agora needs on a fresh Debian machine: PostgreSQL and Redis from Debian's packages
# (installed when absent), private instances on loopback with their data under .dev/ (kept between
# runs), and, for tests, Chromium with its driver. Sourced by the Makefile's targets; it prints the
# exports the app and the tests read.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$ROOT/.dev"
PG_PORT="${AGORA_PG_PORT:-54329}"
REDIS_PORT="${AGORA_REDIS_PORT:-63799}"
mkdir -p "$DEV"

log() { printf '\033[1;34m[agora]\033[0m %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]}"
    log "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
  log "installing ${missing[*]} from Debian's packages"
  if [ ! -f "$DEV/.apt-updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && touch "$DEV/.apt-updated"
  fi
  # policy-rc.d keeps the packages' own services from starting: we run private instances.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  [ "$created_policy" = 1 ] && rm -f "$policy"
  return 0
}

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$dir" ] || { log "PostgreSQL binaries not found under /usr/lib/postgresql"; exit 1; }
  echo "$dir"
}

# initdb refuses to run as root, so as root the cluster belongs to the 'postgres' user.
as_pg_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin data="$DEV/pg"
  bin="$(pg_bin)"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "creating a private PostgreSQL cluster in .dev/pg"
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$data"
    as_pg_owner "$bin/initdb" -D "$data" -U agora --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='' -c max_connections=300 -c shared_buffers=256MB" >/dev/null
  fi
  # The server on our port must be this checkout's cluster: another checkout's (or one whose
  # folder is gone) would be used by mistake and vanish under the tests.
  local serving
  serving="$(psql "postgres://agora@127.0.0.1:$PG_PORT/postgres" -qtAc 'SHOW data_directory' 2>/dev/null || true)"
  if [ "$(readlink -f "$serving" 2>/dev/null)" != "$(readlink -f "$data")" ]; then
    log "port $PG_PORT is served by another PostgreSQL (${serving:-unknown}), not .dev/pg"
    log "stop it, or choose another port for this checkout: AGORA_PG_PORT=54330 AGORA_REDIS_PORT=63800 make test"
    exit 1
  fi
}

stop_postgres() {
  local bin; bin="$(pg_bin)"
  [ -f "$DEV/pg/postmaster.pid" ] && as_pg_owner "$bin/pg_ctl" -D "$DEV/pg" -m fast -w stop >/dev/null 2>&1 || true
}

start_redis() {
  mkdir -p "$DEV/redis"
  if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    # volatile-lru: under memory pressure only keys with a TTL (cache entries) are evicted;
    # counters and anything else without one are never dropped. Append-only, fsynced every
    # second: the chat stream survives a restart (README: the loss window).
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DEV/redis" --save "" --appendonly yes --appendfsync everysec \
      --maxmemory 256mb --maxmemory-policy volatile-lru \
      --daemonize yes --pidfile "$DEV/redis/redis.pid" --logfile "$DEV/redis/redis.log"
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    log "Redis did not start; see .dev/redis/redis.log"; exit 1
  fi
}

stop_redis() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

# Servers named by DATABASE_URL / REDIS_URL are used as they are; otherwise private ones start.
services() {
  apt_install libpq-dev
  if [ -z "${DATABASE_URL:-}" ]; then
    apt_install postgresql
    start_postgres
    echo "export AGORA_ADMIN_DATABASE_URL=postgres://agora@127.0.0.1:$PG_PORT/postgres"
    echo "export DATABASE_URL=postgres://agora@127.0.0.1:$PG_PORT/agora"
  else
    # Tests create their databases on the same server, through its maintenance database.
    echo "export AGORA_ADMIN_DATABASE_URL=${AGORA_ADMIN_DATABASE_URL:-${DATABASE_URL%/*}/postgres}"
    echo "export DATABASE_URL=$DATABASE_URL"
  fi
  apt_install redis-server # its redis-server binary also serves the tests' own throwaway instances
  if [ -z "${REDIS_URL:-}" ]; then
    start_redis
    echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  else
    echo "export REDIS_URL=$REDIS_URL"
  fi
}

browser() {
  apt_install chromium chromium-driver
}

# schemathesis, pinned, in a virtualenv under .dev/ from Debian's Python 3: the OpenAPI document is
# checked against the running API by tests/it/api_contract.rs.
SCHEMATHESIS_VERSION=4.32.5
contract_tools() {
  local venv="$DEV/venv"
  if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
    apt_install python3 python3-venv
    log "installing schemathesis $SCHEMATHESIS_VERSION into .dev/venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
  fi
  echo "export AGORA_SCHEMATHESIS=$venv/bin/schemathesis"
}

# Creates the app's database on the private cluster (not on a server named by DATABASE_URL).
ensure_database() {
  local name="$1"
  psql "$AGORA_ADMIN_DATABASE_URL" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 \
    || psql "$AGORA_ADMIN_DATABASE_URL" -qc "CREATE DATABASE \"$name\"" >/dev/null
}

was_running() {
  local pg=0 redis=0
  "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null && pg=1
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && redis=1
  echo "$pg $redis"
}

run() {
  local own_db=0
  [ -z "${DATABASE_URL:-}" ] && own_db=1
  [ -n "${PORT:-}" ] && export PORT
  # Globals, not locals: the exit trap runs after this function has returned.
  BEFORE="$(was_running)"
  SIM_PID=""
  eval "$(services)"
  [ "$own_db" = 1 ] && ensure_database agora
  [ -f "$DEV/session_secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n' >"$DEV/session_secret"
  export SESSION_SECRET="${SESSION_SECRET:-$(cat "$DEV/session_secret")}"
  # What people run is what the benchmarks measure: an optimized build (the tests use debug).
  cargo build --release --bin agora
  local bin="$ROOT/target/release/agora" sim_port="${GATEWAY_SIM_PORT:-8090}"
  "$bin" migrate
  cleanup() {
    trap - EXIT INT TERM
    set +e
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null
    # Stop only what this run started.
    [ "${BEFORE%% *}" = 0 ] && stop_postgres
    [ "${BEFORE##* }" = 0 ] && stop_redis
    log "stopped"
  }
  trap cleanup EXIT INT TERM
  GATEWAY_SIM_PORT="$sim_port" "$bin" gateway-sim &
  SIM_PID=$!
  export GATEWAY_URL="${GATEWAY_URL:-http://127.0.0.1:$sim_port}"
  # After the gateway starts: the seed registers the demo's month of charges with it, so that
  # refunding a demo payment finds its charge.
  "$bin" seed
  log "Agora: http://127.0.0.1:${PORT:-8080}   (gateway ledger: http://127.0.0.1:$sim_port/charges)"
  log "demo logins (password agora-demo): shoppers alice@ and bob@example.com, admin@example.com; merchants' staff books@, coffee@ and finance@example.com (see the README)"
  log "Ctrl-C stops the server and what this command started"
  "$bin" serve
}

run_tests() {
  eval "$(services)"
  browser
  # The rolling-restart test puts PgBouncer (transaction mode) between the processes and PostgreSQL.
  apt_install pgbouncer
  eval "$(contract_tools)"
  cargo test "$@"
}

run_bench() {
  eval "$(services)"
  # BENCH_ONLY=merchants or chat runs that benchmark alone; any other value one throughput section.
  # The scale benchmark runs the cluster's shape: PgBouncer and HAProxy from Debian's packages.
  apt_install pgbouncer haproxy
  case "${BENCH_ONLY:-}" in
    merchants|chat|scale) cargo bench --bench "$BENCH_ONLY" ;;
    "") cargo bench --bench throughput && cargo bench --bench merchants && cargo bench --bench chat && cargo bench --bench scale ;;
    *) cargo bench --bench throughput ;;
  esac
}

case "${1:-}" in
  services) services ;;
  browser) browser ;;
  contract-tools) contract_tools ;;
  run) run ;;
  test) shift; run_tests "$@" ;;
  bench) run_bench ;;
  stop) stop_redis; stop_postgres ;;
  install) shift; apt_install "$@" ;;
  *) echo "usage: $0 services|browser|run|test|stop|install PACKAGE…" >&2; exit 2 ;;
esac
