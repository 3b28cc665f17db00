#!/usr/bin/env bash
# Normal-path latency with kernel receive stamps on and off (bidding.rx_timestamps), one release
# binary, back to back: capacity (closed loop, 64 connections, 4 s), then open loop at 50% and 80%
# of it (64 connections, 5 s, coordinated-omission corrected), shed counts by reason after.
# Binaries from $RX_BIN_DIR (helios, helios-load); ORDER="true false" sets the order; own ports
# 17522/17523. Results in $RX_RUN (default $HELIOS_CACHE/run-rx-stamps). Run from the repo root.
set -u
cd "$(dirname "$0")/../.."
b=${RX_BIN_DIR:?set RX_BIN_DIR to a folder with helios and helios-load}
out=${RX_RUN:-${HELIOS_CACHE:-/var/cache/helios}/run-rx-stamps}; mkdir -p "$out"
for st in ${ORDER:-true false}; do
  HELIOS_BIDDING_RX_TIMESTAMPS=$st HELIOS_EVENTS_ENABLED=false $b/helios --cores 1 --listen 127.0.0.1:17522 --admin 127.0.0.1:17523 \
    --campaigns bench/data/campaigns.json --node norm --log-level warn > $out/helios-$st.log 2>&1 &
  hp=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:17523/readyz >/dev/null && break; sleep 0.1; done
  $b/helios-load --url http://127.0.0.1:17522/openrtb2/bid --cpu 0 --server-pid $hp --label cap-$st --json $out/cap-$st.json --closed -c 64 --warmup 1 -d 4 > /dev/null
  cap=$(jq '.achieved_rps|floor' $out/cap-$st.json)
  for pct in 50 80; do
    $b/helios-load --url http://127.0.0.1:17522/openrtb2/bid --cpu 0 --server-pid $hp --label p$pct-$st --json $out/p$pct-$st.json --rate $((cap*pct/100)) -c 64 --warmup 1 -d 5 --timeout-ms 250 > /dev/null
    echo "stamps=$st cap=$cap pct=$pct $(jq -c '{rps:(.achieved_rps|floor), p50:.latency.p50_us, p99:.latency.p99_us, p999:.latency.p999_us}' $out/p$pct-$st.json) load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
  echo "stamps=$st shed: $(curl -s http://127.0.0.1:17523/metrics | grep -E "^helios_shed_total" | awk "{printf \"%s \", \$NF}") statuses: $(jq -c .statuses $out/p80-$st.json)"
  kill -TERM $hp; wait $hp
done
