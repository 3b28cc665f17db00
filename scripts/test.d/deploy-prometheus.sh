#!/usr/bin/env bash
# Prometheus tests:
#   1. promtool check config / check rules / test rules on deploy/prometheus.
#   2. A live scrape: this test's own Prometheus (1 s interval, own port and state dir) scrapes its own
#      gateway (HAProxy exporter), the Redis and PostgreSQL exporters against the services `make test`
#      started, and — when the binaries exist — a real appliance (per-core series, with bid traffic
#      and its events to Kafka) and a real reporter (its own database, its own consumer group, one
#      campaign created through its API). Every process started here is stopped by PID. Every
#      query of the Grafana dashboard is run on it.
#   3. Every series the rules and the dashboard read is really exposed: each selector of every rule
#      and panel must select a live series (deploy/prometheus/check_exposed.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"
prom=$root/deploy/prometheus

echo "-- prometheus: static checks"
dl_check "promtool check config" 0 "$(promtool check config "$prom/prometheus.yml" >/dev/null 2>&1; echo $?)"
dl_check "promtool check rules" 0 "$(promtool check rules "$prom"/rules/*.yml >/dev/null 2>&1; echo $?)"
out=$(promtool test rules "$prom"/tests/*.test.yml 2>&1) && rc=0 || rc=$?
[[ $rc == 0 ]] || echo "$out"
dl_check "promtool test rules (every alert fires and stays quiet where it should)" 0 "$rc"
# Every alert in the rules has a unit test that expects it to fire.
for a in $(grep -h '^ *- alert:' "$prom"/rules/*.yml | awk '{print $3}'); do
  dl_check "alert $a has a firing test" 1 "$(grep -A3 "alertname: $a\$" "$prom"/tests/*.test.yml | grep -c 'exp_labels' | awk '{print ($1>0)}')"
done
# Every metric of the contract in docs/OPERATIONS.md is used by the rules or the dashboard.
for m in helios_bid_requests_total helios_bids_total helios_responses_total helios_no_bids_total \
  helios_request_duration_seconds helios_pipeline_spool_bytes helios_profile_replica_lag_seconds \
  helios_reporter_consumer_lag helios_campaign_spend_micros helios_campaign_budget_micros; do
  dl_check "metric $m is in the OPERATIONS.md table" 1 "$(grep -c "^| \`$m" "$root/docs/OPERATIONS.md" | awk '{print ($1>0)}')"
  dl_check "metric $m is used by the rules" 1 "$(grep -c "$m" "$prom"/rules/*.yml | awk -F: '{s+=$2} END {print (s>0)}')"
done

echo "-- prometheus: live scrape"
# Own run dir and free ports: several runs (two worktrees, CI) may share the machine.
base=${HELIOS_DEPLOY_TEST_RUN:-$HELIOS_CACHE/run-deploy-test/prometheus-$$}
export HELIOS_MON_RUN=$base/monitoring
rm -rf "$HELIOS_MON_RUN"
HELIOS_PROM_PORT=$(dl_free_port 29090)
export HELIOS_PROM_PORT
HELIOS_REDIS_EXPORTER_PORT=$(dl_free_port 29121)
export HELIOS_REDIS_EXPORTER_PORT
HELIOS_PG_EXPORTER_PORT=$(dl_free_port 29187)
export HELIOS_PG_EXPORTER_PORT
export HELIOS_PROM_INTERVAL=1s
export HELIOS_GW_RUN=$base/gateway-prom HELIOS_CERTS=$base/certs
HELIOS_GW_TLS_PORT=$(dl_free_port 29443)
HELIOS_GW_STATS_PORT=$(dl_free_port 29404)
HELIOS_GW_HTTP_PORT=$(dl_free_port 29088)
export HELIOS_GW_TLS_PORT HELIOS_GW_STATS_PORT HELIOS_GW_HTTP_PORT
export HELIOS_GW_APPLIANCES="" HELIOS_JWT_SECRET=prom-test-secret
export HELIOS_PROM_HAPROXY=127.0.0.1:$HELIOS_GW_STATS_PORT
HELIOS_PROM_REPORTER=127.0.0.1:$(dl_free_port 29095)
export HELIOS_PROM_REPORTER

cleanup() {
  "$root/scripts/monitoring.sh" stop >/dev/null 2>&1 || true
  "$root/scripts/gateway.sh" stop >/dev/null 2>&1 || true
  dl_stop_all
  if [[ -n "${rep_db:-}" ]]; then
    psql "$HELIOS_PG_URL" -qc "DROP DATABASE IF EXISTS $rep_db WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -u "${HELIOS_REDIS_URL%/}/13" flushdb >/dev/null 2>&1 || true
  fi
  # the run dir (logs) goes only when everything passed
  if [[ -n "${clean_base:-}" ]]; then rm -rf "$base"; fi
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
redis_hp=${HELIOS_REDIS_URL#redis://}; redis_hp=${redis_hp%%/*}
pg_hp=${HELIOS_PG_URL#*@}; pg_hp=${pg_hp%%/*}
services=1
for hp in "$redis_hp" "$pg_hp"; do port_open "${hp%:*}" "${hp##*:}" || services=0; done
if ((services == 0)) && [[ "${HELIOS_REQUIRE_SERVICES:-}" == 1 ]]; then
  echo "FAIL: HELIOS_REQUIRE_SERVICES=1 but Redis ($redis_hp) or PostgreSQL ($pg_hp) is not reachable" >&2
  exit 1
fi

apps=""
if helios=$(dl_find_helios); then
  source "$root/scripts/deploy-appliance.sh"
  bid_port=$(dl_free_port 29180)
  admin_port=$(dl_free_port 29190)
  mkdir -p "$base"
  da_start_appliance "$helios" prom 127.0.0.1 "$bid_port" "$admin_port" "$base/helios-prom.log"
  apps="127.0.0.1:$admin_port"
  # Behind the gateway too, so the gateway's per-server series (be_appliances) exist.
  export HELIOS_GW_APPLIANCES="127.0.0.1:$bid_port/$admin_port"
fi
export HELIOS_PROM_APPLIANCES=${apps:-127.0.0.1:1}

# The reporter, when built and PostgreSQL and the broker run: its own database (dropped at the
# end) and consumer group, so it disturbs no other test; campaign management on its own Redis
# database number (13), so the campaign set it publishes reaches no other appliance.
reporter_up=""
kafka_hp=${HELIOS_KAFKA_BROKERS%%,*}
if reporter=$(dl_find_reporter) && ((services)) && port_open "${kafka_hp%:*}" "${kafka_hp##*:}"; then
  rep_db=helios_promtest_$$
  psql "$HELIOS_PG_URL" -qc "CREATE DATABASE $rep_db" >/dev/null
  rep_url=${HELIOS_PG_URL%/*}/$rep_db
  rep_secret="prom-test-jwt-secret-0123456789abcdef"
  mkdir -p "$base"
  dl_start reporter "$base/reporter.log" env HELIOS_PG_URL="$rep_url" HELIOS_JWT_SECRET="$rep_secret" \
    HELIOS_KAFKA_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_REPORTER_GROUP="helios-promtest-$$" \
    HELIOS_REPORTER_LISTEN="$HELIOS_PROM_REPORTER" HELIOS_CAMPAIGNS_REDIS_URL="${HELIOS_REDIS_URL%/}/13" "$reporter"
  reporter_up=1
fi

"$root/scripts/gateway.sh" start >/dev/null
mon=(prometheus)
((services)) && mon=(redis-exporter postgres-exporter prometheus)
"$root/scripts/monitoring.sh" start "${mon[@]}" >/dev/null

P=http://127.0.0.1:$HELIOS_PROM_PORT
q() { curl -s --get --data-urlencode "query=$1" "$P/api/v1/query" | jq -r '.data.result | map(.value[1]) | join(",")'; }
# Wait until the gateway's target has been scraped and the rules evaluated at least twice.
for _ in $(seq 1 100); do
  [[ "$(q 'up{job="haproxy"}')" == 1 ]] && [[ -n "$(q 'prometheus_rule_group_iterations_total')" ]] && break
  sleep 0.2
done
sleep 2
dl_check "Prometheus scrapes the gateway's exporter (up{job=haproxy})" 1 "$(q 'up{job="haproxy"}')"
dl_check "gateway series present (haproxy_frontend_http_requests_total{proxy=fe_public})" 1 "$(q 'count(haproxy_frontend_http_requests_total{proxy="fe_public"})')"
dl_check "rule groups loaded and healthy" ok "$(curl -s "$P/api/v1/rules" | jq -r '[.data.groups[].rules[].health] | unique | join(",")')"
dl_check "all alert rules loaded" "$(grep -hc '^ *- alert:' "$prom/rules/helios-alerts.yml")" "$(curl -s "$P/api/v1/rules?type=alert" | jq '[.data.groups[].rules[]] | length')"
# Every query of the Grafana dashboard runs on this Prometheus without error.
bad=0 n=0
while IFS= read -r e; do
  n=$((n + 1))
  st=$(curl -s --get --data-urlencode "query=$e" "$P/api/v1/query" | jq -r .status)
  [[ "$st" == success ]] || { bad=$((bad + 1)); echo "  query failed: $e"; }
done < <(/usr/bin/python3 "$root/deploy/grafana/check_dashboard.py" "$root/deploy/grafana/helios-overview.json" --print-exprs)
dl_check "all $n dashboard queries run on the live Prometheus" 0 "$bad"
if ((services)); then
  dl_check "Prometheus scrapes the Redis exporter" 1 "$(q 'up{job="redis"}')"
  dl_check "Redis exporter reaches Redis (redis_up)" 1 "$(q 'redis_up')"
  dl_check "Prometheus scrapes the PostgreSQL exporter" 1 "$(q 'up{job="postgres"}')"
  dl_check "PostgreSQL exporter reaches PostgreSQL (pg_up)" 1 "$(q 'pg_up')"
else
  echo "skipped: exporters (Redis $redis_hp / PostgreSQL $pg_hp not running; make test starts them)"
fi
if [[ -n "$apps" ]]; then
  for _ in $(seq 1 50); do [[ "$(q 'up{job="helios-appliance"}')" == 1 ]] && break; sleep 0.2; done
  dl_check "Prometheus scrapes the appliance's admin port" 1 "$(q 'up{job="helios-appliance"}')"
  dl_check_true "appliance counters are per core" test -n "$(q 'count by (core) ({job="helios-appliance",__name__=~"helios_.*_total"})')"
  # Request-path counters are per core; node-level ones (the pipeline's producer thread) are not.
  dl_check "every request-path counter carries core=\"N\"" 0 "$(q 'count({job="helios-appliance",__name__=~"helios_(responses|bid_requests|bids|no_bids)_total|helios_request_duration_seconds_.*",core!~"[0-9]+"}) or vector(0)')"
  # The exposition is well formed (promtool's parser and linter: names, types, histogram parts).
  out=$(curl -s "http://$apps/metrics" | promtool check metrics 2>&1) && rc=0 || rc=$?
  [[ $rc == 0 ]] || echo "$out" | head -20
  dl_check "the appliance's /metrics passes promtool check metrics" 0 "$rc"
else
  echo "skipped: appliance scrape (the helios binary is not built; runs once the appliance is on main)"
fi
if [[ -n "$reporter_up" ]]; then
  for _ in $(seq 1 150); do [[ "$(q 'up{job="helios-reporter"}')" == 1 ]] && break; sleep 0.2; done
  dl_check "Prometheus scrapes the reporter" 1 "$(q 'up{job="helios-reporter"}')"
  out=$(curl -s "http://$HELIOS_PROM_REPORTER/metrics" | promtool check metrics 2>&1) && rc=0 || rc=$?
  [[ $rc == 0 ]] || echo "$out" | head -20
  dl_check "the reporter's /metrics passes promtool check metrics" 0 "$rc"
fi

echo "-- prometheus: every series the rules and the dashboard read is exposed"
if [[ -n "$apps" && -n "$reporter_up" ]]; then
  # A campaign with a budget, through the reporter's API (its spend and budget series).
  tok=$(HELIOS_JWT_SECRET="$rep_secret" "$reporter" token --role operator --ttl 10m --sub prom-test)
  R=http://$HELIOS_PROM_REPORTER
  post() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -d "$2" "$R$1"; }
  dl_check "advertiser created through the reporter's API" 200 "$(post /api/v1/advertisers '{"advertiser_id":7,"name":"Prom test"}')"
  dl_check "campaign with a budget created through the reporter's API" 200 "$(post /api/v1/campaigns "$(jq -c '.campaigns[0]' "$root/deploy/testing/campaigns.json")")"
  # Traffic: bids straight to the node and through the gateway (events go to Kafka, the reporter
  # reads them), until the recording rules have seen it (rate over two scrapes) and the reporter
  # has partitions (consumer lag series). Bounded: 60 s.
  ( end=$((SECONDS + 60))
    while ((SECONDS < end)); do
      curl -s -o /dev/null -d @"$root/deploy/testing/bid-request.json" "http://127.0.0.1:$bid_port/openrtb2/bid" || true
      curl -s -o /dev/null -H 'X-Api-Key: dev-key-sim-0001' -d @"$root/deploy/testing/bid-request.json" \
        "http://127.0.0.1:$HELIOS_GW_HTTP_PORT/openrtb2/bid" || true
      sleep 0.05
    done ) &
  traffic=$!
  DL_PIDS+=("$traffic")
  for _ in $(seq 1 200); do
    [[ "$(q 'count(job:helios_bid_requests:rate5m > 0)')" == 1 && -n "$(q 'count(helios_reporter_consumer_lag)')" \
      && -n "$(q 'count(helios_campaign_budget_micros)')" && "$(q 'count(helios_request_duration_seconds_count > 0)')" == 1 ]] && break
    sleep 0.25
  done
  out=$(/usr/bin/python3 "$prom/check_exposed.py" --prometheus "$P" --rules "$prom/rules/helios-recording.yml" \
    --rules "$prom/rules/helios-alerts.yml" --dashboard "$root/deploy/grafana/helios-overview.json" 2>&1) && rc=0 || rc=$?
  while IFS= read -r line; do echo "   $line"; done <<<"$out"
  dl_check "every selector of the rules and the dashboard selects a live series" 0 "$rc"
  dl_stop_pid "$traffic"
  # The histogram is consistent with the counters of the same snapshot: every bid is timed once,
  # and the +Inf bucket holds them all.
  m=$(curl -s "http://$apps/metrics")
  val() { awk -v k="$1" '$1 == k {print $2}' <<<"$m"; }
  bids=$(val 'helios_bids_total{core="0"}')
  dl_check_true "bids were timed ($bids)" test "${bids:-0}" -gt 0
  dl_check "helios_request_duration_seconds_count equals helios_bids_total" "$bids" "$(val 'helios_request_duration_seconds_count{core="0"}')"
  dl_check "the +Inf bucket equals the count" "$bids" "$(val 'helios_request_duration_seconds_bucket{core="0",le="+Inf"}')"
  dl_check_true "the sum is positive and below count × 1 s" awk -v s="$(val 'helios_request_duration_seconds_sum{core="0"}')" -v n="$bids" 'BEGIN {exit !(s > 0 && s < n)}'
  # The checker itself: a renamed metric and a wrong label value are caught.
  tmp=$base/broken-rules.yml
  sed -e 's/helios_no_bids_total/helios_nobid_total/' -e 's/reason="overloaded"/reason="overload"/' \
    "$prom/rules/helios-recording.yml" "$prom/rules/helios-alerts.yml" >"$tmp"
  n=$(/usr/bin/python3 "$prom/check_exposed.py" --prometheus "$P" --rules "$tmp" | grep -c '^  FAIL' || true)
  dl_check "the checker catches a renamed metric and a wrong label value" 2 "$n"
elif [[ "${HELIOS_REQUIRE_SERVICES:-}" == 1 ]] && dl_find_helios >/dev/null && dl_find_reporter >/dev/null; then
  dl_check "appliance and reporter running for the exposure check" 1 0
else
  echo "skipped: exposure check (needs the helios and helios-reporter binaries, PostgreSQL and the broker)"
fi
# Logs stay under $base when something failed.
dl_summary && clean_base=1
