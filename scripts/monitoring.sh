#!/usr/bin/env bash
# Starts and stops Prometheus and the Redis/PostgreSQL exporters (Debian packages) on loopback, as
# processes this script owns (PIDs in $HELIOS_MON_RUN/<name>.pid, stopped by exactly that PID).
#   scripts/monitoring.sh start [prometheus|redis-exporter|postgres-exporter ...]  (default: all)
#   scripts/monitoring.sh stop  [...]
#   scripts/monitoring.sh status
#   scripts/monitoring.sh render   write the Prometheus config dir only
# The config is deploy/prometheus/ copied to $HELIOS_MON_RUN/prometheus/ with the target files
# rewritten from the environment (defaults in brackets):
#   HELIOS_MON_RUN            state dir [$HELIOS_RUN/monitoring]
#   HELIOS_PROM_PORT          Prometheus [9090]
#   HELIOS_PROM_INTERVAL      scrape and rule interval [15s]
#   HELIOS_PROM_APPLIANCES    appliance admin addresses, space-separated [127.0.0.1:9100]
#   HELIOS_PROM_REPORTER      reporter address [127.0.0.1:8090]
#   HELIOS_PROM_HAPROXY       gateway stats address [127.0.0.1:${HELIOS_GW_STATS_PORT:-8404}]
#   HELIOS_REDIS_EXPORTER_PORT [9121]    (scrapes $HELIOS_REDIS_URL)
#   HELIOS_PG_EXPORTER_PORT    [9187]    (scrapes $HELIOS_PG_URL)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
source "$here/env.sh"

run=${HELIOS_MON_RUN:-$HELIOS_RUN/monitoring}
prom_port=${HELIOS_PROM_PORT:-9090}
redis_exp_port=${HELIOS_REDIS_EXPORTER_PORT:-9121}
pg_exp_port=${HELIOS_PG_EXPORTER_PORT:-9187}
interval=${HELIOS_PROM_INTERVAL:-15s}
timeout=5s
# A scrape must time out within its interval.
if [[ "$interval" =~ ^([0-9]+)s$ ]] && ((BASH_REMATCH[1] < 5)); then timeout=$interval; fi
mkdir -p "$run"

targets() { # file addr...: one file_sd group
  local f=$1
  shift
  {
    printf -- '- targets: ['
    local sep=""
    for a in "$@"; do printf '%s"%s"' "$sep" "$a"; sep=", "; done
    printf ']\n'
  } >"$f"
}

render() {
  local d=$run/prometheus
  rm -rf "$d"
  mkdir -p "$d"
  cp -r "$root/deploy/prometheus/rules" "$root/deploy/prometheus/targets" "$d/"
  sed -e "s/^  scrape_interval: .*/  scrape_interval: $interval/" \
    -e "s/^  evaluation_interval: .*/  evaluation_interval: $interval/" \
    -e "s/^  scrape_timeout: .*/  scrape_timeout: $timeout/" \
    -e "s/^    scrape_interval: 5s/    scrape_interval: $interval/" \
    "$root/deploy/prometheus/prometheus.yml" >"$d/prometheus.yml"
  # shellcheck disable=SC2086 # a space-separated list of addresses
  targets "$d/targets/appliances.yml" ${HELIOS_PROM_APPLIANCES:-127.0.0.1:9100}
  targets "$d/targets/reporter.yml" "${HELIOS_PROM_REPORTER:-127.0.0.1:8090}"
  targets "$d/targets/haproxy.yml" "${HELIOS_PROM_HAPROXY:-127.0.0.1:${HELIOS_GW_STATS_PORT:-8404}}"
  targets "$d/targets/redis-exporter.yml" "127.0.0.1:$redis_exp_port"
  targets "$d/targets/postgres-exporter.yml" "127.0.0.1:$pg_exp_port"
  targets "$d/targets/prometheus.yml" "127.0.0.1:$prom_port"
  promtool check config "$d/prometheus.yml" >/dev/null
}

alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    alive "$1" || break
    sleep 0.1
  done
  echo "monitoring: $1 did not open port $2 (log: $run/$1.log)" >&2
  tail -20 "$run/$1.log" >&2 || true
  return 1
}

start_prometheus() {
  alive prometheus && return 0
  render
  mkdir -p "$run/tsdb"
  prometheus --config.file="$run/prometheus/prometheus.yml" --web.listen-address="127.0.0.1:$prom_port" \
    --storage.tsdb.path="$run/tsdb" --storage.tsdb.retention.time=2d --web.enable-lifecycle \
    >"$run/prometheus.log" 2>&1 &
  echo $! >"$run/prometheus.pid"
  wait_port prometheus "$prom_port" 30
}

start_redis-exporter() {
  alive redis-exporter && return 0
  local addr=${HELIOS_REDIS_URL#redis://}
  addr=${addr%/}
  prometheus-redis-exporter -redis.addr "redis://$addr" -web.listen-address "127.0.0.1:$redis_exp_port" \
    >"$run/redis-exporter.log" 2>&1 &
  echo $! >"$run/redis-exporter.pid"
  wait_port redis-exporter "$redis_exp_port" 10
}

start_postgres-exporter() {
  alive postgres-exporter && return 0
  local dsn=$HELIOS_PG_URL
  [[ "$dsn" == *\?* ]] || dsn="$dsn?sslmode=disable"
  DATA_SOURCE_NAME="$dsn" prometheus-postgres-exporter --web.listen-address="127.0.0.1:$pg_exp_port" \
    >"$run/postgres-exporter.log" 2>&1 &
  echo $! >"$run/postgres-exporter.pid"
  wait_port postgres-exporter "$pg_exp_port" 10
}

stop_one() {
  local name=$1 pid
  [[ -f "$run/$name.pid" ]] || return 0
  pid=$(cat "$run/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$run/$name.pid"
}

cmd=${1:-status}
shift || true
names=("$@")
((${#names[@]})) || names=(redis-exporter postgres-exporter prometheus)
case "$cmd" in
  render) render && echo "$run/prometheus" ;;
  start) for n in "${names[@]}"; do "start_$n"; echo "monitoring: $n up"; done ;;
  stop) for n in "${names[@]}"; do stop_one "$n"; done; echo "monitoring: stopped ${names[*]}" ;;
  status) for n in "${names[@]}"; do if alive "$n"; then echo "$n: running (pid $(cat "$run/$n.pid"))"; else echo "$n: stopped"; fi; done ;;
  *) echo "usage: $0 start|stop|status|render [prometheus|redis-exporter|postgres-exporter ...]" >&2; exit 2 ;;
esac
