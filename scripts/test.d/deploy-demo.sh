#!/usr/bin/env bash
# `make demo` smoke test: scripts/demo.sh start on its own ports and state dir (its own Redis,
# PostgreSQL and broker too), traffic from the exchange simulator through the gateway, then
# scripts/demo.sh stop — and nothing it started is left running. Uses the binaries `make test`
# already built (HELIOS_DEMO_BUILD=0); runs when the appliance binary exists, pieces whose binaries
# are missing are skipped by demo.sh and here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"

if ! helios=$(dl_find_helios); then
  echo "skipped: make demo smoke test (the helios binary is not built)"
  exit 0
fi
bindir=$(dirname "$helios")
base=${HELIOS_DEPLOY_TEST_RUN:-$HELIOS_CACHE/run-deploy-test/demo-$$}
rm -rf "$base"
mkdir -p "$base"
export HELIOS_RUN=$base HELIOS_CERTS=$base/certs HELIOS_JWT_SECRET_FILE=$base/jwt.secret
HELIOS_DEMO_PROFILE=$(basename "$bindir")
export HELIOS_DEMO_BUILD=0 HELIOS_DEMO_PROFILE HELIOS_DEMO_PROFILES=20000 HELIOS_DEMO_RATE=100
for v in HELIOS_REDIS_PORT:26390 HELIOS_PG_PORT:26440 HELIOS_KAFKA_PORT:26092 HELIOS_DEMO_BID_PORT:26080 \
  HELIOS_DEMO_ADMIN_PORT:26100 HELIOS_DEMO_REPORTER_PORT:26090 HELIOS_GW_TLS_PORT:26443 HELIOS_GW_HTTP_PORT:26088 \
  HELIOS_GW_STATS_PORT:26404 HELIOS_PROM_PORT:26091 HELIOS_REDIS_EXPORTER_PORT:26121 HELIOS_PG_EXPORTER_PORT:26187; do
  p=$(dl_free_port "${v#*:}")
  export "${v%%:*}=$p"
done
# The URLs env.sh derived from the default ports: derive them again from these.
export HELIOS_REDIS_URL=redis://127.0.0.1:$HELIOS_REDIS_PORT/
export HELIOS_PG_URL=postgres://helios:helios@127.0.0.1:$HELIOS_PG_PORT/helios
export HELIOS_KAFKA_BROKERS=127.0.0.1:$HELIOS_KAFKA_PORT

cleanup() {
  "$root/scripts/demo.sh" stop >/dev/null 2>&1 || true
  if [[ -n "${clean_base:-}" ]]; then rm -rf "$base"; fi
}
trap cleanup EXIT

echo "-- demo: start"
timeout 300 "$root/scripts/demo.sh" start >"$base/start.out" 2>&1 && rc=0 || rc=$?
sed 's/^/   /' "$base/start.out" | grep -v 'operator token' || true
dl_check "scripts/demo.sh start" 0 "$rc"
dl_check "the appliance is ready" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HELIOS_DEMO_ADMIN_PORT/readyz")"
dl_check_true "the appliance's event loop is pinned to the last core" \
  bash -c "grep -q 'Cpus_allowed_list:[[:space:]]*$(($(nproc) - 1))\$' /proc/\$(cat $base/demo/helios.pid)/task/*/status"
stats=http://127.0.0.1:$HELIOS_GW_STATS_PORT/metrics
if dl_workspace_has_bin helios-exchange && [[ -x "$bindir/helios-exchange" ]]; then
  served=0
  for _ in $(seq 1 50); do
    served=$(curl -s "$stats" | awk '/^haproxy_server_http_responses_total\{proxy="be_appliances".*code="2xx"/ {n += $2} END {print n + 0}')
    ((served > 100)) && break
    sleep 0.2
  done
  dl_check_true "simulator traffic reaches the appliance through the gateway ($served answers)" test "$served" -gt 100
  # Notices follow the answers they belong to (the simulator fires them once the auction has
  # closed, and wins depend on its rival bidders): wait for the first rather than sample once.
  notices=0
  for _ in $(seq 1 100); do
    notices=$(curl -s "http://127.0.0.1:$HELIOS_DEMO_ADMIN_PORT/metrics" | awk '/^helios_notices_total\{.*kind="win"/ {n += $2} END {print n + 0}')
    ((notices > 0)) && break
    sleep 0.3
  done
  dl_check_true "win notices come back through the gateway ($notices)" test "$notices" -gt 0
else
  echo "skipped: simulator traffic (no helios-exchange binary)"
fi
if dl_workspace_has_bin helios-reporter && [[ -x "$bindir/helios-reporter" ]]; then
  tok=$("$bindir/helios-reporter" token --role operator --ttl 10m --sub demo-test)
  api() { curl -s --cacert "$HELIOS_CERTS/ca.crt" -H "Authorization: Bearer $tok" "https://localhost:$HELIOS_GW_TLS_PORT$1"; }
  dl_check "reporter API through the gateway with an operator token" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$HELIOS_CERTS/ca.crt" -H "Authorization: Bearer $tok" "https://localhost:$HELIOS_GW_TLS_PORT/api/v1/campaigns")"
  if dl_workspace_has_bin helios-exchange; then
    # The whole chain: simulator → gateway → appliance → Kafka → reporter → PostgreSQL → API → gateway.
    imps=0
    for _ in $(seq 1 60); do
      imps=$(api /api/v1/campaigns | jq '[.items[]?.figures.impressions // 0] | add // 0' 2>/dev/null || echo 0)
      ((imps > 0)) && break
      sleep 0.5
    done
    dl_check_true "impressions reach the reporter's API through the whole chain ($imps)" test "$imps" -gt 0
  fi
else
  echo "skipped: reporter (no helios-reporter binary)"
fi
P=http://127.0.0.1:$HELIOS_PROM_PORT
for _ in $(seq 1 200); do
  [[ "$(curl -s --get --data-urlencode 'query=up{job="helios-appliance"}' "$P/api/v1/query" | jq -r '.data.result[0].value[1] // empty')" == 1 ]] && break
  sleep 0.3
done
dl_check "Prometheus scrapes the appliance" 1 "$(curl -s --get --data-urlencode 'query=up{job="helios-appliance"}' "$P/api/v1/query" | jq -r '.data.result[0].value[1] // empty')"

echo "-- demo: stop"
pids=$(cat "$base"/demo/*.pid "$base"/gateway/haproxy.pid "$base"/monitoring/*.pid "$base"/*.pid 2>/dev/null | sort -u)
"$root/scripts/demo.sh" stop >/dev/null
left=0
for p in $pids; do kill -0 "$p" 2>/dev/null && left=$((left + 1)); done
dl_check "scripts/demo.sh stop leaves none of the $(wc -w <<<"$pids") processes it started" 0 "$left"
dl_summary && clean_base=1
