#!/usr/bin/env bash
# `make demo`: the whole system on this machine, on loopback, as processes this script owns.
#   scripts/demo.sh start    build, start everything, print where to look
#   scripts/demo.sh stop     stop everything `start` started, by PID (services included)
#   scripts/demo.sh status
# What `start` does, in order (a piece whose binary the workspace does not have yet is skipped
# with a message, so the demo grows as the crates land):
#   1. Redis, PostgreSQL and the Kafka broker (Tansu)           scripts/services.sh
#   2. the workspace's binaries (debug; HELIOS_DEMO_PROFILE=release for release)
#   3. synthetic user profiles into Redis                       helios-profiles load
#   4. the appliance, pinned to the last core, with the bench's campaigns
#   5. the reporter (ingest + API + dashboard)                  helios-reporter
#   6. the gateway (TLS 8443, HTTP 8088, stats 8404)            scripts/gateway.sh
#   7. Prometheus and the Redis/PostgreSQL exporters            scripts/monitoring.sh
#   8. the exchange simulator, through the gateway              helios-exchange
# Settings: HELIOS_DEMO_RATE (auctions/s, 200), HELIOS_DEMO_PROFILES (profiles loaded, 100000),
# HELIOS_DEMO_BUILD=0 (use the binaries already built), ports HELIOS_DEMO_BID_PORT (8080),
# HELIOS_DEMO_ADMIN_PORT (9100), HELIOS_DEMO_REPORTER_PORT (8090), and those of scripts/env.sh,
# scripts/gateway.sh (HELIOS_GW_*) and scripts/monitoring.sh (HELIOS_PROM_PORT, …).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
source "$here/env.sh"
cd "$root"

run=$HELIOS_RUN/demo
profile=${HELIOS_DEMO_PROFILE:-debug}
rate=${HELIOS_DEMO_RATE:-200}
nprofiles=${HELIOS_DEMO_PROFILES:-100000}
bid_port=${HELIOS_DEMO_BID_PORT:-8080}
admin_port=${HELIOS_DEMO_ADMIN_PORT:-9100}
rep_port=${HELIOS_DEMO_REPORTER_PORT:-8090}
gw_http=${HELIOS_GW_HTTP_PORT:-8088}
gw_tls=${HELIOS_GW_TLS_PORT:-8443}
gw_stats=${HELIOS_GW_STATS_PORT:-8404}
prom_port=${HELIOS_PROM_PORT:-9090}
bin=$CARGO_TARGET_DIR/$profile
secret_file=${HELIOS_JWT_SECRET_FILE:-$HELIOS_CACHE/secrets/jwt-hs256.secret}
notice_key_file=$HELIOS_CACHE/secrets/notice-key
exchange_key=dev-key-sim-0001 # deploy/haproxy/dev/api-keys.map

say() { printf 'demo: %s\n' "$*"; }
alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }
# A binary counts when this workspace defines it (the shared target dir may hold other branches')
# and it has been built.
workspace_bins=" $(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
  jq -r '[.packages[].targets[] | select(.kind == ["bin"]) | .name] | join(" ")') "
have() { [[ "$workspace_bins" == *" $1 "* && -x "$bin/$1" ]]; }

start_bg() { # name cmd...: start in the background, PID in $run/name.pid, output in $run/name.log
  local name=$1
  shift
  alive "$name" && { say "$name already running (pid $(cat "$run/$name.pid"))"; return 0; }
  "$@" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

wait_http() { # url seconds name
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" == 200 ]] && return 0
    sleep 0.2
  done
  say "$3 not ready at $1 after $2 s (log: $run/$3.log)"
  tail -5 "$run/$3.log" >&2 || true
  return 1
}

secret() { # file bytes: create a random secret once
  if [[ ! -s "$1" ]]; then
    mkdir -p "$(dirname "$1")" && chmod 700 "$(dirname "$1")"
    (umask 077 && openssl rand -hex "$2" >"$1")
  fi
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

start() {
  mkdir -p "$run"
  say "services (Redis :$HELIOS_REDIS_PORT, PostgreSQL :$HELIOS_PG_PORT, Kafka :$HELIOS_KAFKA_PORT)"
  scripts/services.sh start >/dev/null

  if [[ "${HELIOS_DEMO_BUILD:-1}" != 0 ]]; then
    say "building the workspace's binaries ($profile)"
    local rel=()
    [[ "$profile" == release ]] && rel=(--release)
    cargo build --workspace --bins --locked "${rel[@]}" --quiet
  fi

  secret "$secret_file" 32
  secret "$notice_key_file" 32
  "$here/dev-certs.sh" >/dev/null

  if have helios-profiles; then
    say "loading $nprofiles synthetic profiles into Redis"
    HELIOS_REDIS_URL=$HELIOS_REDIS_URL "$bin/helios-profiles" load --count "$nprofiles" >"$run/profiles.log" 2>&1 ||
      say "profile load failed (log: $run/profiles.log)"
  else
    say "skipped: profiles (no helios-profiles binary in this workspace yet)"
  fi

  local campaigns=bench/data/campaigns.json
  [[ -f "$campaigns" ]] || campaigns=deploy/testing/campaigns.json
  local core=$(($(nproc) - 1))
  if have helios; then
    say "appliance on core $core (bid 127.0.0.1:$bid_port, admin 127.0.0.1:$admin_port), campaigns $campaigns"
    mkdir -p "$run/spool"
    start_bg helios env \
      HELIOS_PROFILES_REDIS_URL="$HELIOS_REDIS_URL" HELIOS_EVENTS_FREQUENCY_REDIS_URL="$HELIOS_REDIS_URL" \
      HELIOS_EVENTS_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_EVENTS_SPOOL_DIR="$run/spool" \
      HELIOS_NOTICES_KEY="$(<"$notice_key_file")" HELIOS_NOTICES_BASE_URL="http://127.0.0.1:$gw_http" \
      "$bin/helios" --cores "$core" --listen "127.0.0.1:$bid_port" --admin "127.0.0.1:$admin_port" --campaigns "$campaigns" --node demo
    wait_http "http://127.0.0.1:$admin_port/readyz" 60 helios || true
  else
    say "skipped: appliance (no helios binary)"
  fi

  if have helios-reporter; then
    local dash=()
    [[ -f reporter/dashboard/dist/index.html ]] && dash=(HELIOS_DASHBOARD_DIR="$root/reporter/dashboard/dist")
    say "reporter (API and dashboard on 127.0.0.1:$rep_port)"
    start_bg reporter env HELIOS_PG_URL="$HELIOS_PG_URL" HELIOS_KAFKA_BROKERS="$HELIOS_KAFKA_BROKERS" \
      HELIOS_JWT_SECRET_FILE="$secret_file" HELIOS_REPORTER_LISTEN="127.0.0.1:$rep_port" "${dash[@]}" \
      "$bin/helios-reporter"
    wait_http "http://127.0.0.1:$rep_port/healthz" 60 reporter || true
  else
    say "skipped: reporter (no helios-reporter binary)"
  fi

  say "gateway (TLS :$gw_tls, HTTP :$gw_http, stats :$gw_stats)"
  # Notices fired by the simulator carry the bidder's signature, not an exchange key.
  HELIOS_JWT_SECRET_FILE=$secret_file HELIOS_GW_NOTICE_AUTH=signature HELIOS_GW_APPLIANCES="127.0.0.1:$bid_port/$admin_port" \
    HELIOS_GW_REPORTER="127.0.0.1:$rep_port" scripts/gateway.sh start >/dev/null

  say "Prometheus (:$prom_port) and exporters"
  HELIOS_PROM_APPLIANCES="127.0.0.1:$admin_port" HELIOS_PROM_REPORTER="127.0.0.1:$rep_port" scripts/monitoring.sh start >/dev/null

  if have helios-exchange; then
    say "exchange simulator: $rate auctions/s through the gateway"
    start_bg exchange "$bin/helios-exchange" \
      --bidder "http://127.0.0.1:$gw_http/openrtb2/bid/sim?key=$exchange_key" \
      --rate "$rate" --duration 0 --report-every 10
  else
    say "skipped: exchange simulator (no helios-exchange binary)"
  fi

  local token=""
  if have helios-reporter; then
    token=$(HELIOS_JWT_SECRET_FILE=$secret_file "$bin/helios-reporter" token --role operator --ttl 24h --sub demo 2>/dev/null || true)
  fi
  cat <<EOF

Helios demo is running (state and logs: $run; stop: make demo-stop)
  dashboard        https://localhost:$gw_tls/   (CA: ${HELIOS_CERTS:-$HELIOS_CACHE/certs}/ca.crt)
  operator token   ${token:-"(needs helios-reporter)"}
  API              curl --cacert ${HELIOS_CERTS:-$HELIOS_CACHE/certs}/ca.crt -H "Authorization: Bearer \$TOKEN" https://localhost:$gw_tls/api/v1/campaigns
  a bid            curl --cacert ${HELIOS_CERTS:-$HELIOS_CACHE/certs}/ca.crt -H 'X-Api-Key: $exchange_key' -d @deploy/testing/bid-request.json https://localhost:$gw_tls/openrtb2/bid
  Prometheus       http://127.0.0.1:$prom_port/   (alerts: /alerts)
  appliance        http://127.0.0.1:$admin_port/metrics   /readyz
  gateway          http://127.0.0.1:$gw_stats/stats     /metrics
  simulator        tail -f $run/exchange.log
EOF
}

stop() {
  stop_one exchange
  scripts/monitoring.sh stop >/dev/null 2>&1 || true
  scripts/gateway.sh stop >/dev/null 2>&1 || true
  stop_one reporter
  stop_one helios
  scripts/services.sh stop >/dev/null 2>&1 || true
  say "stopped"
}

status() {
  local n
  for n in helios reporter exchange; do
    if alive "$n"; then echo "$n: running (pid $(cat "$run/$n.pid"))"; else echo "$n: stopped"; fi
  done
  scripts/gateway.sh status
  scripts/monitoring.sh status
  scripts/services.sh status
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
