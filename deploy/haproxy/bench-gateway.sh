#!/usr/bin/env bash
# What the gateway costs per request: HAProxy's CPU time (utime+stime from /proc) divided by the
# requests it forwarded, plain HTTP and TLS (keep-alive), in front of the appliance in --null mode
# (answers 204 without bidding), and the same load sent straight to the appliance. wrk: 1 thread,
# 16 connections, 10 s, pinned to CPU 0; HAProxy (1 thread) and the appliance pinned to CPU 1.
#   deploy/haproxy/bench-gateway.sh        (HELIOS_BIN: the helios binary; default the debug build)
# Bounded: three 10 s runs; everything started here is stopped by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"
H=${HELIOS_BIN:-$CARGO_TARGET_DIR/debug/helios}
work=$(mktemp -d)
export HELIOS_GW_RUN=$work/gw HELIOS_CERTS=$work/certs HELIOS_JWT_SECRET=bench-secret-bench-secret-bench-secret
HELIOS_GW_TLS_PORT=$(dl_free_port 24443) HELIOS_GW_HTTP_PORT=$(dl_free_port 24088) HELIOS_GW_STATS_PORT=$(dl_free_port 24404)
bid=$(dl_free_port 24080) admin=$(dl_free_port 24100)
export HELIOS_GW_TLS_PORT HELIOS_GW_HTTP_PORT HELIOS_GW_STATS_PORT HELIOS_GW_THREADS=1
export HELIOS_GW_APPLIANCES=127.0.0.1:$bid/$admin
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Api-Key"] = "dev-key-sim-0001"
local f = io.open("$root/deploy/testing/bid-request.json", "r")
wrk.body = f:read("*a")
f:close()
LUA
"$H" --null --listen "127.0.0.1:$bid" --admin "127.0.0.1:$admin" --cores 1 >"$work/helios.log" 2>&1 &
hp=$!
trap '"$root/scripts/gateway.sh" stop >/dev/null; kill "$hp"; wait "$hp" 2>/dev/null || true; rm -rf "$work"' EXIT
dl_wait_port "$admin" 10
"$root/scripts/gateway.sh" start >/dev/null
gp=$(cat "$work/gw/haproxy.pid")
taskset -pc 1 "$gp" >/dev/null
sleep 2
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
echo "$(date -u +%F) $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), appliance $H --null"
for target in "direct http://127.0.0.1:$bid/openrtb2/bid" "gateway-http http://127.0.0.1:$HELIOS_GW_HTTP_PORT/openrtb2/bid" \
  "gateway-tls https://localhost:$HELIOS_GW_TLS_PORT/openrtb2/bid"; do
  name=${target%% *} url=${target#* }
  g0=$(cpu "$gp") a0=$(cpu "$hp")
  out=$(taskset -c 0 wrk -t1 -c16 -d10s -s "$work/post.lua" --latency "$url")
  g1=$(cpu "$gp") a1=$(cpu "$hp")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  printf '%-13s req/s %9s  p50 %8s  p99 %8s  HAProxy CPU/req %5.1f µs  appliance CPU/req %5.1f µs  non-2xx %s\n' "$name" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")" \
    "$(echo "($g1 - $g0) * 1000000 / $tck / $reqs" | bc -l)" "$(echo "($a1 - $a0) * 1000000 / $tck / $reqs" | bc -l)" \
    "$(awk '/Non-2xx/ {print $4}' <<<"$out" | grep . || echo 0)"
done
