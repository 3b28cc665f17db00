#!/usr/bin/env bash
# Budgets hold across nodes (issues 5 and 11): three appliance nodes, each in its own network
# namespace (scripts/netns-nodes.sh), behind one HAProxy gateway, share one campaign's budget in
# Redis. The exchange simulator (helios-exchange, first price, rivals, 95% of wins billed) sends
# bids through the gateway; the nodes sign notice URLs that point at the gateway too, so a
# billing or loss notice reaches any node (least-conn), not necessarily the one that bid.
# Checked: every node bids; the campaign stops bidding (budget_exhausted); the billed spend the
# exchange counted is ≤ budget + 1% and ≥ 80% of it (5% of wins are never billed and their
# reservations are held for 30–60 s); Redis holds remaining + leases = budget − what the nodes
# reported, and the nodes' reports match the exchange's billing.
# Needs root (network namespaces), redis-server, haproxy, and helios and helios-exchange
# (HELIOS_BIN / HELIOS_EXCHANGE_BIN, else this tree's newest build, built here); prints
# `skipped:` otherwise. Every process is stopped by PID, then the namespaces are deleted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/e2e-lib.sh"

export HELIOS_NETNS_PREFIX=${HELIOS_NETNS_PREFIX:-hb$(($$ % 100000))}
export HELIOS_NETNS_NET=${HELIOS_NETNS_NET:-10.214.$((($$ % 200) + 20))}
e2e_netns_or_skip
# This tree's binaries: built here (fast after make test's build), so a stale build never runs.
[[ -n "${HELIOS_BIN:-}" && -n "${HELIOS_EXCHANGE_BIN:-}" ]] || (cd "$root" && cargo build --workspace --bins --quiet)
if ! helios=$(dl_find_helios); then
  echo "skipped: the helios binary is not built (cargo build --release -p helios-appliance)"
  exit 0
fi
exchange=${HELIOS_EXCHANGE_BIN:-$(dl_newest_bin helios-exchange)}
if [[ ! -x "$exchange" ]]; then
  echo "skipped: helios-exchange is not built (cargo build --release -p helios-bench)"
  exit 0
fi
for t in redis-server haproxy jq; do
  command -v "$t" >/dev/null || { echo "skipped: $t is not installed"; exit 0; }
done

e2e_three_nodes_up "${HELIOS_BUDGET_TEST_RUN:-$HELIOS_CACHE/run-budget-test/three-nodes-$$}"

CAMPAIGN=301
BUDGET=2000000 # 2 USD: 800 impressions at the 2.50 CPM bid
cat >"$base/campaigns.json" <<EOF
{"version": 1, "campaigns": [
  {"id": $CAMPAIGN, "advertiser_id": 30, "status": "active", "pacing": "asap", "bid_cpm_micros": 2500000,
   "total_budget_micros": $BUDGET,
   "creatives": [
     {"id": 3011, "format": {"type": "banner", "w": 300, "h": 250}, "adomain": ["budget.example"], "adm": "<a>ad</a>"},
     {"id": 3012, "format": {"type": "banner", "w": 728, "h": 90}, "adomain": ["budget.example"], "adm": "<a>ad</a>"},
     {"id": 3013, "format": {"type": "banner", "w": 320, "h": 50}, "adomain": ["budget.example"], "adm": "<a>ad</a>"},
     {"id": 3014, "format": {"type": "native"}, "adomain": ["budget.example"], "adm": "{}"}]}
]}
EOF

echo "-- budget across three nodes: Redis and the gateway in the hub ($NETNS_HUB_ADDR)"
e2e_hub_redis
e2e_hub_wait_port 6390 10 "$NETNS_HUB_ADDR"
redis() { inhub redis-cli -p 6390 "$@"; }

source "$root/scripts/deploy-appliance.sh"
# Budgets in the shared Redis; notices signed to come back through the gateway (any node);
# no broker: events are only counted. An idle core gives its lease back after 1 s.
export HELIOS_BUDGET_REDIS_URL="redis://$NETNS_HUB_ADDR:6390/"
export HELIOS_BUDGET_IDLE_RETURN_MS=1000
# (the exchange runs in the hub, where the gateway's plain port is on loopback)
export HELIOS_NOTICES_BASE_URL="http://127.0.0.1:8088"
export HELIOS_EVENTS_ENABLED=false
export HELIOS_ADMIN_PUBLISH_MS=50
export DA_CAMPAIGNS=$base/campaigns.json
for k in 1 2 3; do
  nsv=NETNS_N$k addrv=NETNS_N${k}_ADDR
  HELIOS_TEST_CORES=$(((k - 1) % $(nproc))) DA_REDIS_URL="redis://$NETNS_HUB_ADDR:6390/" \
    da_start_appliance "$helios" "b$k" "${!addrv}" 8080 9100 "$base/node$k.log" "${!nsv}"
done
for k in 1 2 3; do
  nsv=NETNS_N$k addrv=NETNS_N${k}_ADDR
  dl_check_true "node $k is ready (GET /readyz, budget leases answered)" da_wait_ready "${!addrv}" 9100 30 "${!nsv}"
done
export HELIOS_GW_RUN=$base/gateway HELIOS_CERTS=$base/certs HELIOS_JWT_SECRET=budget-three-nodes
export HELIOS_GW_APPLIANCES="$NETNS_N1_ADDR:8080/9100 $NETNS_N2_ADDR:8080/9100 $NETNS_N3_ADDR:8080/9100"
export HELIOS_GW_NOTICE_AUTH=signature HELIOS_GW_NOTICE_RATE=100000
inhub "$root/scripts/gateway.sh" start >/dev/null
node_metric() { # k name [label filter] → sum of that metric on node k
  local nsv=NETNS_N$1 addrv=NETNS_N$1_ADDR
  ip netns exec "${!nsv}" curl -s "http://${!addrv}:9100/metrics" |
    awk -v m="$2" -v f="${3:-}" '($1 == m || index($1, m "{") == 1) && index($1, f) {n += $2} END {print n + 0}'
}
for _ in $(seq 1 50); do
  up=$(inhub curl -s http://127.0.0.1:8404/metrics | grep -c '^haproxy_server_status{proxy="be_appliances".*state="UP"} 1' || true)
  [[ "$up" == 3 ]] && break
  sleep 0.2
done
dl_check "the gateway sees the three nodes up" 3 "$up"

echo "-- budget across three nodes: the exchange simulator through the gateway"
inhub "$exchange" --bidder "http://127.0.0.1:8088/openrtb2/bid/sim?key=dev-key-sim-0001" \
  --rate 300 --duration 25 --seed 7 --report-every 100 >"$base/exchange.json" 2>"$base/exchange.log" || true
summary=$(jq -s 'last' "$base/exchange.json")
spend=$(jq -r '.spend_micros' <<<"$summary")
billed_ok=$(jq -r '.notices.billing.ok // 0' <<<"$summary")
echo "   exchange: $(jq -c '{requests, bids, wins, spend_micros, notices}' <<<"$summary")"
dl_check_true "the exchange billed impressions ($billed_ok)" test "$billed_ok" -gt 0
dl_check "every billing notice was accepted" 0 "$(jq -r '.notices.billing.failed // 0' <<<"$summary")"
dl_check_true "billed spend ≤ budget + 1% ($spend of $BUDGET)" test $((spend * 100)) -le $((BUDGET * 101))
dl_check_true "the budget was spent (≥ 80%: $spend of $BUDGET)" test $((spend * 10)) -ge $((BUDGET * 8))
total_bids=0
for k in 1 2 3; do
  b=$(node_metric "$k" helios_bids_total)
  total_bids=$((total_bids + b))
  echo "   node $k: bids $b, settled here $(node_metric "$k" helios_budget_settled_local_total)," \
    "for another node $(node_metric "$k" helios_budget_charged_remote_total)," \
    "released from elsewhere $(node_metric "$k" helios_budget_releases_total)"
  dl_check_true "node $k bid" test "$b" -gt 0
  dl_check_true "node $k stopped on its budget (budget_exhausted)" \
    test "$(node_metric "$k" helios_no_bids_total 'reason="budget_exhausted"')" -gt 0
done
remote=0
for k in 1 2 3; do remote=$((remote + $(node_metric "$k" helios_budget_charged_remote_total))); done
dl_check_true "notices reached other nodes than the bidder and were settled through Redis ($remote)" test "$remote" -gt 0
# The nodes' own count of billed spend equals the exchange's; Redis accounts for all of it
# (spend is reported within a poll; allow a moment).
node_spend=0
for k in 1 2 3; do node_spend=$((node_spend + $(node_metric "$k" helios_budget_spent_micros_total))); done
dl_check "the nodes counted the billing notices' spend" "$spend" "$node_spend"
conserved=0
for _ in $(seq 1 50); do
  rem=$(redis GET "helios:budget:{$CAMPAIGN}:remaining")
  held=$(redis HVALS "helios:budget:{$CAMPAIGN}:leases" | awk '{n += $1} END {print n + 0}')
  if ((rem + held == BUDGET - spend)); then conserved=1; break; fi
  sleep 0.1
done
echo "   redis: remaining $rem, leases $held, budget − spend $((BUDGET - spend))"
dl_check "Redis: remaining + leases = budget − billed spend" 1 "$conserved"
dl_summary && clean_base=1
