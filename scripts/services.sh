#!/usr/bin/env bash
# Starts and stops the real services Helios talks to, on loopback, as processes this script owns.
#   scripts/services.sh start [redis|postgres|kafka ...]   (default: all three)
#   scripts/services.sh stop  [...]
#   scripts/services.sh status
# State lives under $HELIOS_RUN/<service>; each service's PID is in $HELIOS_RUN/<service>.pid
# and `stop` kills exactly that PID. Ports come from scripts/env.sh.
# HELIOS_SERVICES_TLS=1: Redis and PostgreSQL serve TLS only, with a dev CA of this run dir
# ($HELIOS_CERTS, default $HELIOS_RUN/certs, made by scripts/dev-certs.sh; clients trust
# ca.crt): Redis listens with TLS on $HELIOS_REDIS_PORT (no plain port; clients need no
# certificate), PostgreSQL has ssl=on and an hba file that accepts TCP only over TLS
# (scram-sha-256) and refuses plain TCP; its bootstrap uses the Unix socket. Clients then use
# rediss://localhost:PORT/ and postgres://…?sslmode=verify-full&sslrootcert=…/ca.crt. Default
# off. A service already running keeps the mode it was started in. Kafka (Tansu) is unchanged.
# HELIOS_PG_EXTRA: more PostgreSQL options, as `-c name=value` words (benchmarks, e.g.
# "-c shared_preload_libraries=pg_stat_statements"); empty by default.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
mkdir -p "$HELIOS_RUN"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
TLS=${HELIOS_SERVICES_TLS:-0}
certs_dir() { # the dev CA and server certificate for TLS mode (created when missing)
  HELIOS_CERTS=${HELIOS_CERTS:-$HELIOS_RUN/certs} "$here/dev-certs.sh"
}

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "services: $1 did not open port $2 within $3 s (log: $HELIOS_RUN/$1.log)" >&2
  tail -20 "$HELIOS_RUN/$1.log" >&2 || true
  return 1
}

alive() { [[ -f "$HELIOS_RUN/$1.pid" ]] && kill -0 "$(cat "$HELIOS_RUN/$1.pid")" 2>/dev/null; }

start_redis() {
  alive redis && return 0
  mkdir -p "$HELIOS_RUN/redis"
  local listen=(--port "$HELIOS_REDIS_PORT")
  if [[ "$TLS" == 1 ]]; then
    local c
    c=$(certs_dir)
    listen=(--port 0 --tls-port "$HELIOS_REDIS_PORT" --tls-cert-file "$c/server.crt"
      --tls-key-file "$c/server.key" --tls-ca-cert-file "$c/ca.crt" --tls-auth-clients no)
  fi
  redis-server "${listen[@]}" --bind 127.0.0.1 --dir "$HELIOS_RUN/redis" \
    --save "" --appendonly yes --daemonize no --maxclients 1000 >"$HELIOS_RUN/redis.log" 2>&1 &
  echo $! >"$HELIOS_RUN/redis.pid"
  wait_port redis "$HELIOS_REDIS_PORT" 10
}

start_postgres() {
  alive postgres && return 0
  local data="$HELIOS_RUN/postgres"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    mkdir -p "$data" && chown postgres:postgres "$data" && chmod 700 "$data"
    runuser -u postgres -- "$PGBIN/initdb" -D "$data" -A trust -U postgres >"$HELIOS_RUN/postgres.log" 2>&1
  fi
  chown postgres:postgres "$HELIOS_RUN/postgres.log" 2>/dev/null || touch "$HELIOS_RUN/postgres.log"
  chown postgres:postgres "$HELIOS_RUN/postgres.log"
  local tls=() host=127.0.0.1
  if [[ "$TLS" == 1 ]]; then
    local c
    c=$(certs_dir)
    # PostgreSQL wants its key owned by its user and private: copies in the data directory.
    install -o postgres -g postgres -m 600 "$c/server.key" "$data/tls-server.key"
    install -o postgres -g postgres -m 644 "$c/server.crt" "$data/tls-server.crt"
    printf '%s\n' '# scripts/services.sh, HELIOS_SERVICES_TLS=1: TCP only over TLS' \
      'local all all trust' 'hostssl all all 127.0.0.1/32 scram-sha-256' \
      'hostnossl all all all reject' >"$data/pg_hba_tls.conf"
    chown postgres:postgres "$data/pg_hba_tls.conf"
    tls=(-c ssl=on -c ssl_cert_file="$data/tls-server.crt" -c ssl_key_file="$data/tls-server.key"
      -c hba_file="$data/pg_hba_tls.conf")
    host=$data # the bootstrap below goes through the Unix socket
  fi
  # Settings for the reporter's ingest (a sustained stream of large write transactions; measured
  # in bench/RESULTS.md, "Reporter", session 5). Durability is unchanged: fsync, full_page_writes
  # and synchronous_commit stay at their safe defaults. Checkpoints come from WAL volume at ingest
  # rates (~0.5 KB of WAL per event), and each checkpoint makes the next change of every page a
  # full-page image: allow more WAL between checkpoints (max_wal_size 1 GB → 2 GB: more to replay
  # after a crash, bounded) and time them less often (5 → 15 min); compress the full-page images
  # (lz4: cheap CPU, fewer WAL bytes to write and fsync); a larger WAL buffer (8 → 32 MB at these
  # shared_buffers) so a 50,000-event batch does not wait for WAL writes while it inserts.
  local ingest=(-c max_wal_size=2GB -c checkpoint_timeout=15min -c wal_compression=lz4
    -c wal_buffers=32MB)
  local extra=()
  read -ra extra <<<"${HELIOS_PG_EXTRA:-}"
  runuser -u postgres -- "$PGBIN/postgres" -D "$data" -p "$HELIOS_PG_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$data" -c max_connections=200 -c fsync=on \
    -c shared_buffers=256MB "${ingest[@]}" "${tls[@]}" "${extra[@]}" >>"$HELIOS_RUN/postgres.log" 2>&1 &
  echo $! >"$HELIOS_RUN/postgres.pid"
  wait_port postgres "$HELIOS_PG_PORT" 30
  local i
  for ((i = 0; i < 50; i++)); do
    psql -h "$host" -p "$HELIOS_PG_PORT" -U postgres -tAc 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  psql -h "$host" -p "$HELIOS_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -q <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'helios') THEN
    CREATE ROLE helios LOGIN PASSWORD 'helios' CREATEDB;
  END IF;
END \$\$;
SQL
  psql -h "$host" -p "$HELIOS_PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='helios'" | grep -q 1 ||
    psql -h "$host" -p "$HELIOS_PG_PORT" -U postgres -qc "CREATE DATABASE helios OWNER helios"
}

start_kafka() {
  alive kafka && return 0
  mkdir -p "$HELIOS_RUN/kafka"
  # Tansu joins a relative sqlite path onto its working directory: run it from its state dir.
  (cd "$HELIOS_RUN/kafka" && exec tansu broker \
    --listener-url "tcp://127.0.0.1:$HELIOS_KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$HELIOS_KAFKA_PORT" \
    --storage-engine "sqlite://tansu.db" >"$HELIOS_RUN/kafka.log" 2>&1) &
  echo $! >"$HELIOS_RUN/kafka.pid"
  wait_port kafka "$HELIOS_KAFKA_PORT" 30
}

stop_one() {
  local name=$1 pid
  [[ -f "$HELIOS_RUN/$name.pid" ]] || return 0
  pid=$(cat "$HELIOS_RUN/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$HELIOS_RUN/$name.pid"
}

cmd=${1:-status}; shift || true
names=("$@"); ((${#names[@]})) || names=(redis postgres kafka)
case "$cmd" in
  start) for n in "${names[@]}"; do "start_$n"; echo "services: $n up"; done ;;
  stop) for n in "${names[@]}"; do stop_one "$n"; done; echo "services: stopped ${names[*]}" ;;
  status) for n in "${names[@]}"; do alive "$n" && echo "$n: running (pid $(cat "$HELIOS_RUN/$n.pid"))" || echo "$n: stopped"; done ;;
  *) echo "usage: $0 start|stop|status [redis|postgres|kafka ...]" >&2; exit 2 ;;
esac
