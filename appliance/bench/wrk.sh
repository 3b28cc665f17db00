#!/usr/bin/env bash
# Server CPU time per request and syscalls per request of the helios appliance under wrk,
# for --null and the full bid path, with each driver, side by side in one run.
#
#   appliance/bench/wrk.sh [seconds-per-run] [rounds]
#
# Server: `helios --cores 1` (its loop thread pins itself to CPU 1; the process is started under
# `taskset -c 1`). Load: `taskset -c 0 wrk -t1 -c32` keep-alive POSTs of one bid request.
# CPU per request = (utime + stime of the whole server process, /proc/PID/stat) / requests the
# server counted (helios_bid_requests_total), over the timed run. Syscalls per request: a second
# run under `perf stat -e raw_syscalls:sys_enter -p PID`. Events are disabled
# (HELIOS_EVENTS_ENABLED=false): this measures the HTTP stack and the bid path, not Kafka.
# wrk's latency is closed-loop (not corrected for coordinated omission); it is reported only as a
# rough shape. Needs a release build, wrk, perf and taskset.
# WRK_RX_TIMESTAMPS (default "true false"): runs each case with kernel receive stamps on
# (`bidding.rx_timestamps`: SO_TIMESTAMPNS, io_uring RECVMSG multishot / epoll recvmsg) and
# off (RECV multishot / read), side by side. WRK_DRIVERS (default "uring epoll").
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-2}
BIN=${HELIOS_BIN:-${CARGO_TARGET_DIR:-/var/cache/helios/target}/release/helios}
PORT=${BENCH_PORT:-18180}
ADMIN=${BENCH_ADMIN_PORT:-19180}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TCK=$(getconf CLK_TCK)

cat >"$WORK/campaigns.json" <<'J'
{"version":1,"campaigns":[
 {"id":7,"advertiser_id":70,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000000,
  "creatives":[{"id":71,"format":{"type":"banner","w":300,"h":250},"adomain":["shoes.example"],"adm":"<a href=\"https://shoes.example/c\"><img src=\"https://cdn.shoes.example/300x250.png\"></a>"}]},
 {"id":8,"advertiser_id":80,"status":"active","bid_cpm_micros":1500000,"total_budget_micros":1000000000000,"countries":["DEU"],
  "creatives":[{"id":81,"format":{"type":"banner","w":728,"h":90},"adm":"<a>b</a>"}]}]}
J
BODY='{"id":"0b7a1c2e-5d3f-4c1a-9e8b-6f2d4a1b3c5d","imp":[{"id":"1","banner":{"w":300,"h":250,"format":[{"w":300,"h":250},{"w":320,"h":50}]},"bidfloor":0.5,"bidfloorcur":"USD","tagid":"slot-1","secure":1}],"site":{"id":"s1","domain":"news.example","cat":["IAB12"],"page":"https://news.example/a/1","publisher":{"id":"p1"}},"device":{"ua":"Mozilla/5.0 (X11; Linux x86_64)","ip":"203.0.113.7","devicetype":2,"os":"Linux","geo":{"country":"FRA","city":"Paris"}},"user":{"id":"u-42"},"at":1,"tmax":120,"cur":["USD"]}'
cat >"$WORK/post.lua" <<L
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
L
URL="http://127.0.0.1:$PORT/openrtb2/bid/bench"

metric() {
  curl -s "http://127.0.0.1:$ADMIN/metrics" |
    awk -v m="$1" 'index($1, m "{") == 1 { s += $2 } END { printf "%d\n", s }'
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

run() {
  local mode=$1 driver=$2 stamps=$3
  local args=(--cores 1 --driver "$driver" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN"
    --campaigns "$WORK/campaigns.json" --log-level warn)
  [[ $mode == null ]] && args+=(--null)
  HELIOS_BIDDING_RX_TIMESTAMPS=$stamps HELIOS_EVENTS_ENABLED=false HELIOS_NOTICES_KEY=bench taskset -c 1 "$BIN" "${args[@]}" 2>"$WORK/log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.05; done
  taskset -c 0 wrk -t1 -c32 -d2s -s "$WORK/post.lua" "$URL" >/dev/null # warm-up
  sleep 0.3
  local r0 c0 r1 c1 out
  r0=$(metric helios_bid_requests_total); c0=$(ticks "$pid")
  out=$(taskset -c 0 wrk -t1 -c32 -d"${DUR}s" --latency -s "$WORK/post.lua" "$URL")
  sleep 0.3
  r1=$(metric helios_bid_requests_total); c1=$(ticks "$pid")
  local s0 s1 sys
  s0=$(metric helios_bid_requests_total)
  perf stat -e raw_syscalls:sys_enter -p "$pid" -x, -o "$WORK/perf" -- \
    taskset -c 0 wrk -t1 -c32 -d5s -s "$WORK/post.lua" "$URL" >/dev/null 2>&1
  sleep 0.3
  s1=$(metric helios_bid_requests_total)
  sys=$(awk -F, '/sys_enter/ { print $1 }' "$WORK/perf")
  local s200 s204
  s200=$(metric 'helios_responses_total{core="0",status="200"}' 2>/dev/null || true)
  kill -TERM "$pid"; wait "$pid" || true
  local n=$((r1 - r0))
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  awk -v m="$mode" -v d="$driver" -v st="$stamps" -v n="$n" -v c=$((c1 - c0)) -v t="$TCK" -v rps="$rps" \
    -v sys="$sys" -v sn=$((s1 - s0)) -v p50="$p50" -v p99="$p99" 'BEGIN {
      printf "| %-4s | %-5s | %-5s | %9.0f | %8d | %6.2f | %5.2f | %7s | %7s |\n",
        m, d, st, rps, n, (c / t) * 1e6 / n, sys / sn, p50, p99 }'
}

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); kernel $(uname -r); $(date -u +%FT%TZ)"
echo "| mode | driver | rx stamps | req/s (wrk) | requests | server CPU µs/req | syscalls/req | p50 (wrk) | p99 (wrk) |"
echo "|---|---|---|---|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  for mode in null full; do
    for driver in ${WRK_DRIVERS:-uring epoll}; do
      for stamps in ${WRK_RX_TIMESTAMPS:-true false}; do
        run "$mode" "$driver" "$stamps"
      done
    done
  done
done
