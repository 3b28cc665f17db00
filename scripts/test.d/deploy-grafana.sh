#!/usr/bin/env bash
# Grafana dashboard checks, offline (Grafana is not installable here): deploy/grafana/*.json is
# well-formed, laid out on the grid, every query valid PromQL (promtool), every metric of the
# contract in docs/OPERATIONS.md shown; and the checker itself rejects a broken dashboard.
# (The live run of every query against a real Prometheus is in deploy-prometheus.sh.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"
checker=$root/deploy/grafana/check_dashboard.py
metrics=(helios_bid_requests_total helios_bids_total helios_responses_total helios_no_bids_total
  helios_request_duration_seconds helios_pipeline_spool_bytes helios_profile_replica_lag_seconds helios_reporter_consumer_lag helios_campaign_spend_micros helios_campaign_budget_micros)
margs=(--rules "$root/deploy/prometheus/rules/helios-recording.yml")
for m in "${metrics[@]}"; do margs+=(--metric "$m"); done

echo "-- grafana: dashboards"
for d in "$root"/deploy/grafana/*.json; do
  echo "   $d"
  /usr/bin/python3 "$checker" "$d" "${margs[@]}" && rc=0 || rc=$?
  dl_check "$(basename "$d") passes every check" 0 "$rc"
done
dash=$root/deploy/grafana/helios-overview.json
for t in "per core" "percentiles" "No-bids/s by reason" "Spend vs budget" "replica lag" "consumer lag"; do
  dl_check "overview has a panel on '$t'" 1 "$(jq --arg t "$t" '[.panels[].title | ascii_downcase | select(contains($t | ascii_downcase))] | length > 0 | if . then 1 else 0 end' "$dash")"
done

echo "-- grafana: the checker rejects broken dashboards"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
jq '.panels[1].targets[0].expr = "sum(rate(helios_bid_requests_total[1m]"' "$dash" >"$tmp/badql.json"
dl_check "invalid PromQL is rejected" 1 "$(/usr/bin/python3 "$checker" "$tmp/badql.json" >/dev/null 2>&1; echo $?)"
jq '.panels[1].targets[0].expr = "sum(rate(helios_bid_requests_total{instance=~\"$nosuchvar\"}[1m]))"' "$dash" >"$tmp/badvar.json"
dl_check "undefined variable is rejected" 1 "$(/usr/bin/python3 "$checker" "$tmp/badvar.json" >/dev/null 2>&1; echo $?)"
jq '.panels[2].gridPos = .panels[1].gridPos' "$dash" >"$tmp/overlap.json"
dl_check "overlapping panels are rejected" 1 "$(/usr/bin/python3 "$checker" "$tmp/overlap.json" >/dev/null 2>&1; echo $?)"
jq 'del(.panels[] | select(.title | test("Spool|spool")))' "$dash" >"$tmp/nospool.json"
dl_check "a contract metric left out is reported" 1 "$(/usr/bin/python3 "$checker" "$tmp/nospool.json" "${margs[@]}" >/dev/null 2>&1; echo $?)"
head -c 500 "$dash" >"$tmp/truncated.json"
dl_check "malformed JSON is rejected" 1 "$(/usr/bin/python3 "$checker" "$tmp/truncated.json" >/dev/null 2>&1; echo $?)"
dl_summary
