#!/usr/bin/env bash
# Overload (issue 12, docs/RELIABILITY.md §2): offers the real `helios` three times the capacity
# measured a moment before, in one run, and checks what an exchange needs:
#   1. capacity: closed loop (helios-load --closed, 64 connections, 5 s) → C req/s;
#   2. overload: open loop at 3 × C for OVERLOAD_SECONDS (60; --short 10) over 1,024 connections
#      (OVERLOAD_CONNECTIONS), latency measured from each request's intended send time; a request
#      that finds no free connection waits in a backlog of at most 64, else is dropped at the
#      generator and counted (an exchange does not queue either); RSS sampled every 0.5 s;
#   3. recovery: at once afterwards, open loop at C / 2 for 5 s, against the same load measured
#      just before the overload (baseline).
# Checks (PASS/FAIL; exit 1 on any FAIL): during overload every request sent is answered (no
# timeout at the longest tmax of the corpus, 250 ms; no connection error) and within the shortest
# tmax (100 ms) at p99 — what the server cannot decide in time it must answer 204 (shed counts
# from /metrics are reported: no-bids `deadline`/`overloaded`, and `helios_shed_total` by why —
# expired, queue, turn_budget before decoding, late after; reads without a kernel stamp); RSS grows by less than OVERLOAD_RSS_MAX_MIB (96 KiB per connection;
# the peaks of the two halves of the overload are reported); in
# recovery p99 ≤ max(100 ms, 2 × the baseline's) and requests shed as `overloaded` stop within
# 250 ms (at most a quarter second's worth of the recovery rate: the standing-queue rule sheds for
# at most the interval after the overload's last one, `bidding.shed_interval_ms` = 100 ms).
# OVERLOAD_XFAIL="tmax" turns the two tmax checks into XFAIL (reported, not failing): `make
# test`'s debug form sets it (docs/RELIABILITY.md §2), `make soak` does not.
# HELIOS_* variables reach the appliance: e.g. HELIOS_BIDDING_RX_TIMESTAMPS=false
# HELIOS_BIDDING_SHED_QUEUE_PCT=0 runs it as before kernel stamps (age from the read, no
# standing-queue shedding), for a before/after comparison.
# The appliance runs on the last CPU, the generator pinned to CPU 0 (a 2-vCPU machine: each has
# its own). OVERLOAD_RT=1 (the default) runs the generator and the appliance's core threads
# (`helios-core-*`, not its helper threads) SCHED_FIFO (chrt, priority OVERLOAD_RT_PRIO, 50): it
# models a node whose cores belong to the appliance, so that builds and tests on a shared machine
# cannot take their CPU and pollute the figures. Neither spins when idle (both block in the
# kernel; checked first: an idle second and a light load must leave each well under its core),
# and the kernel's RT throttling (sched_rt_runtime_us, 95%) keeps ≥ 5% of each CPU for
# everything else. When chrt is refused (no CAP_SYS_NICE) the run goes on with normal scheduling
# and says so. Every phase prints the share of a CPU the generator and each server thread got
# and the share of the window each waited runnable (schedstat run delay: starved, not idle);
# OVERLOAD_RT=0 measures with normal scheduling. Events are off by default (the bid path alone); OVERLOAD_EVENTS=1 sends them to
# $HELIOS_KAFKA_BROKERS (a running broker). Results: $OVERLOAD_RUN/overload.json.
# Settings: OVERLOAD_PROFILE (release), OVERLOAD_BUILD=0, OVERLOAD_BIN_DIR (use those binaries), OVERLOAD_FACTOR (3), OVERLOAD_BID_PORT
# (17417), OVERLOAD_ADMIN_PORT (17418), OVERLOAD_RUN ($HELIOS_CACHE/run-overload), OVERLOAD_RECOVERY_SHED_MS (250),
# OVERLOAD_RT (1), OVERLOAD_RT_PRIO (50).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
source "$here/env.sh"

secs=${OVERLOAD_SECONDS:-60}
[[ "${1:-}" == --short ]] && secs=${OVERLOAD_SECONDS:-10}
shed_cost=0
[[ "${1:-}" == --shed-cost ]] && shed_cost=1
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0; }
profile=${OVERLOAD_PROFILE:-release}
factor=${OVERLOAD_FACTOR:-3}
conns=${OVERLOAD_CONNECTIONS:-1024}
# RSS bound: each connection holds at most its input, output and wire buffers (16 KiB each at
# start, `http.conn_buffer_bytes`), grown once: 96 KiB per connection.
rss_max_mib=${OVERLOAD_RSS_MAX_MIB:-$((conns * 96 / 1024))}
bid_port=${OVERLOAD_BID_PORT:-17417}
admin_port=${OVERLOAD_ADMIN_PORT:-17418}
run=${OVERLOAD_RUN:-$HELIOS_CACHE/run-overload}
bin=$CARGO_TARGET_DIR/$profile
mkdir -p "$run"
say() { printf 'overload: %s\n' "$*"; }

if [[ -n "${OVERLOAD_BIN_DIR:-}" ]]; then
  bin=$OVERLOAD_BIN_DIR # binaries built elsewhere (no build, no copy)
elif [[ "${OVERLOAD_BUILD:-1}" != 0 ]]; then
  rel=()
  [[ "$profile" == release ]] && rel=(--release)
  cargo build --workspace --bins --locked "${rel[@]}" --quiet
fi

# Copies taken right after the build: the shared target dir's binaries are replaced by any
# worktree's build of the same name.
if [[ -z "${OVERLOAD_BIN_DIR:-}" ]]; then
  mkdir -p "$run/bin"
  for b in helios helios-load helios-corpus; do cp "$bin/$b" "$run/bin/$b"; done
  bin=$run/bin
fi

server_cpu=$(($(nproc) - 1))
gen_cpu=0
events=(HELIOS_EVENTS_ENABLED=false)
[[ "${OVERLOAD_EVENTS:-0}" == 1 ]] && events=(HELIOS_EVENTS_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_EVENTS_SPOOL_DIR="$run/spool")

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap "exit 143" TERM INT

for p in "$bid_port" "$admin_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "overload: port $p is taken by another process (set OVERLOAD_BID_PORT / OVERLOAD_ADMIN_PORT)" >&2
    exit 1
  fi
done
# --shed-cost: a decision is a decision — no standing-queue or turn-budget shedding — so the
# corpus alone says which requests are shed (expired: `tmax` 1 ms).
((shed_cost)) && events+=(HELIOS_BIDDING_SHED_QUEUE_PCT=0 HELIOS_BIDDING_TURN_BUDGET_US=0)
# The shed counts on /metrics are copies the core publishes on its loop timer: every 10 ms here
# (default 250 ms), so the count read right after the overload is at most 10 ms behind — after
# an overload shedding ~100k/s a quarter second of lag would be charged to the recovery.
events+=(HELIOS_ADMIN_PUBLISH_MS="${HELIOS_ADMIN_PUBLISH_MS:-10}" HELIOS_URING_TICK_MS="${HELIOS_URING_TICK_MS:-10}")
env "${events[@]}" "$bin/helios" --cores "$server_cpu" --listen "127.0.0.1:$bid_port" \
  --admin "127.0.0.1:$admin_port" --campaigns bench/data/campaigns.json --node overload \
  >"$run/helios.log" 2>&1 &
hpid=$!
pids+=("$hpid")
for _ in $(seq 1 300); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")" == 200 ]] && break
  sleep 0.1
done

# Real-time scheduling (see the header): the core threads now, the generator at each start.
rt=${OVERLOAD_RT:-1}
rt_prio=${OVERLOAD_RT_PRIO:-50}
gen_rt=()
core_tids=()
for t in /proc/"$hpid"/task/*; do
  [[ "$(cat "$t/comm" 2>/dev/null)" == helios-core-* ]] && core_tids+=("${t##*/}")
done
if ((${#core_tids[@]} == 0)); then
  echo "overload: no helios-core-* thread in process $hpid (not ready?); see $run/helios.log" >&2
  exit 1
fi
if [[ "$rt" == 1 ]]; then
  for t in "${core_tids[@]}"; do
    if ! err=$(chrt -f -p "$rt_prio" "$t" 2>&1); then
      say "RT refused ($err): measuring with normal scheduling — other load can take the CPUs"
      rt=0
      break
    fi
  done
  if [[ "$rt" == 1 ]] && chrt -f "$rt_prio" true 2>/dev/null; then
    gen_rt=(chrt -f "$rt_prio")
  elif [[ "$rt" == 1 ]]; then
    say "RT refused for the generator: measuring with normal scheduling"
    rt=0
    for t in "${core_tids[@]}"; do chrt -o -p 0 "$t" 2>/dev/null || true; done
  fi
fi
policies() { local t; for t in "${core_tids[@]}"; do printf '%s=%s ' "$(cat "/proc/$hpid/task/$t/comm")" "$(chrt -p "$t" | awk -F': ' 'NR == 1 {print $2}')"; done; }
say "scheduling: core threads $(policies)(RT $rt); generator ${gen_rt[*]:-SCHED_OTHER}"
# Run time (ns) of the core threads, for the idle check.
core_run_ns() { local t s=0; for t in "${core_tids[@]}"; do s=$((s + $(cut -d' ' -f1 "/proc/$hpid/task/$t/schedstat"))); done; echo "$s"; }

# The share of a CPU the generator and the core threads got, and waited runnable (starved).
shares() { # json → "generator R% (waited W%), helios-core-0 R% (waited W%)"
  jq -r '"generator \(.generator_cpu_util * 100 | round)% (waited \((.generator_wait_util // 0) * 100 | round)%), " +
    ([.server_threads_cpu_util | to_entries[] | select(.key | startswith("helios-core"))] as $c |
     [$c[] | "\(.key) \(.value * 100 | round)%"] | join(", ")) +
    " (waited " + ([.server_threads_wait_util | to_entries[] | select(.key | startswith("helios-core")) | "\(.value * 100 | round)%"] | join(", ")) + ")"' "$1"
}
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$hpid/status"; }
nobids() { # reason → sum over cores
  curl -s "http://127.0.0.1:$admin_port/metrics" |
    awk -v r="reason=\"$1\"" '/^helios_no_bids_total/ && index($0, r) {s += $NF} END {printf "%d\n", s}'
}
shed() { # helios_shed_total reason → sum over cores
  curl -s "http://127.0.0.1:$admin_port/metrics" |
    awk -v r="reason=\"$1\"" '/^helios_shed_total/ && index($0, r) {s += $NF} END {printf "%d\n", s}'
}
unstamped() {
  curl -s "http://127.0.0.1:$admin_port/metrics" | awk '/^helios_rx_unstamped_total/ {s += $NF} END {printf "%d\n", s}'
}
sheds() { echo "$(shed expired) $(shed queue) $(shed turn_budget) $(shed late) $(unstamped)"; }
load() { # label json args...
  local label=$1 out=$2
  shift 2
  "${gen_rt[@]}" "$bin/helios-load" --url "http://127.0.0.1:$bid_port/openrtb2/bid" --cpu "$gen_cpu" \
    --server-pid "$hpid" --label "$label" --json "$out" "$@" >"$out.txt"
  cat "$out.txt"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if ((shed_cost)); then
  # What a shed 204 costs against a decided answer, side by side on the same server: the same
  # corpus, once as is (decided: 200 or 204 by the shard) and once with every `tmax` at 1 ms
  # (≤ the network margin: a zero budget, so every request is shed 204 `deadline` before its
  # decode), at the same open-loop rate, alternated OVERLOAD_SHED_COST_ROUNDS (2) times.
  # Per answer: the core thread's CPU (schedstat run time), its syscalls and io_uring
  # submissions (perf tracepoints on the thread). With HELIOS_SERVER_NULL=true both kinds are
  # answered 204 undecoded by the null server: the HTTP stack's floor, for reference.
  # OVERLOAD_SHED_COST_RATE=closed: closed loop instead (the core saturated, as under overload:
  # big turns), over OVERLOAD_SHED_COST_CONNECTIONS (64).
  rate=${OVERLOAD_SHED_COST_RATE:-20000}
  cc=${OVERLOAD_SHED_COST_CONNECTIONS:-64}
  mode=(--rate "$rate")
  [[ "$rate" == closed ]] && mode=(--closed)
  d=${OVERLOAD_SHED_COST_SECONDS:-5}
  "$bin/helios-corpus" -n 10000 --out "$run/decided.jsonl" 2>/dev/null
  sed -E 's/"tmax":[0-9]+/"tmax":1/g' "$run/decided.jsonl" >"$run/shed.jsonl"
  tid=${core_tids[0]}
  say "shed cost: ${mode[*]}, $cc connections, ${d} s per run; load $load_before"
  for round in $(seq 1 "${OVERLOAD_SHED_COST_ROUNDS:-2}"); do
    for kind in decided shed; do
      out=$run/cost-$kind-$round
      perf stat -x, -e raw_syscalls:sys_enter,io_uring:io_uring_submit_req -t "$tid" -o "$out.perf" \
        -- sleep "$((d + 1))" 2>/dev/null &
      ppid=$!
      pids+=("$ppid")
      run0=$(cut -d' ' -f1 "/proc/$hpid/task/$tid/schedstat")
      load "cost-$kind" "$out.json" --corpus "$run/$kind.jsonl" "${mode[@]}" -c "$cc" --warmup 0 -d "$d" >/dev/null
      run_ns=$(($(cut -d' ' -f1 "/proc/$hpid/task/$tid/schedstat") - run0))
      wait "$ppid" || true
      n=$(jq .completed "$out.json")
      sc=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$out.perf")
      sq=$(awk -F, '/io_uring_submit_req/ {print $1}' "$out.perf")
      say "$(printf '%-7s round %s: %s answers (%s), core thread %.2f µs/answer, %.3f syscalls/answer, %.3f io_uring submissions/answer; p50 %s µs, p99 %s µs; %s' \
        "$kind" "$round" "$n" "$(jq -c .statuses "$out.json")" "$(awk -v a="$run_ns" -v n="$n" 'BEGIN {print a / 1000 / n}')" \
        "$(awk -v a="${sc:-0}" -v n="$n" 'BEGIN {print a / n}')" "$(awk -v a="${sq:-0}" -v n="$n" 'BEGIN {print a / n}')" \
        "$(jq .latency.p50_us "$out.json")" "$(jq .latency.p99_us "$out.json")" "$(shares "$out.json")")"
      echo "$kind $round $n $run_ns ${sc:-0} ${sq:-0}" >>"$run/cost.txt"
    done
  done
  say "shed ÷ decided, core thread CPU per answer: $(awk '{n[$1] += $3; c[$1] += $4} END {printf "%.3f (decided %.2f µs, shed %.2f µs)", (c["shed"] / n["shed"]) / (c["decided"] / n["decided"]), c["decided"] / n["decided"] / 1000, c["shed"] / n["shed"] / 1000}' "$run/cost.txt"); load $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi
say "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
# Idle: RT threads must block when there is nothing to do (a spinning one would hold its CPU).
idle0=$(core_run_ns)
sleep 1
idle_ns=$(($(core_run_ns) - idle0))
load idle "$run/idle.json" --rate 200 -c 8 --warmup 0 -d 1
load capacity "$run/capacity.json" --closed -c 64 --warmup 1 -d 5
cap=$(jq '.achieved_rps | floor' "$run/capacity.json")
offered=$((cap * factor))
# The same half-capacity load before the overload: what "recovered" means on this machine now.
load baseline "$run/baseline.json.part" --rate $((cap / 2)) -c 64 --warmup 0 -d 5 --timeout-ms 250
rss_before=$(rss)
ovl_before=$(nobids overloaded)
dl_before=$(nobids deadline)
read -r sx0 sq0 st0 sl0 su0 < <(sheds)
say "capacity $cap req/s; offering $offered req/s for ${secs} s; RSS before $rss_before KiB"

(while kill -0 "$hpid" 2>/dev/null; do echo "$(date +%s.%N) $(rss)"; sleep 0.5; done) >"$run/rss.samples" &
pids+=("$!")
sampler=$!
# An exchange does not queue a request for minutes: one that finds no free connection waits in a
# short backlog (64) or is dropped at the generator (counted as backlog_overflow / unsent), so the
# latency measured is the server's queue, not the generator's.
t_ovl0=$(date +%s.%N)
load overload "$run/overload.json.part" --rate "$offered" -c "$conns" --warmup 0 -d "$secs" \
  --timeout-ms 250 --max-reconnects 100000 --max-backlog 64
t_ovl1=$(date +%s.%N)
sleep 0.03 # two publication periods
ovl_mid=$(nobids overloaded)
dl_mid=$(nobids deadline)
read -r sx1 sq1 st1 sl1 su1 < <(sheds)
load recovery "$run/recovery.json.part" --rate $((cap / 2)) -c 64 --warmup 0 -d 5 --timeout-ms 250
sleep 0.03
ovl_after=$(nobids overloaded)
kill -TERM "$sampler" 2>/dev/null || true
rss_peak=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$run/rss.samples")
# Reported: the peaks of the overload's two halves (does it level off?).
read -r rss_h1 rss_h2 < <(awk -v a="$t_ovl0" -v b="$t_ovl1" 'BEGIN {m = (a + b) / 2}
  $1 >= a && $1 < m && $2 > h1 {h1 = $2} $1 >= m && $1 <= b && $2 > h2 {h2 = $2} END {print h1 + 0, h2 + 0}' "$run/rss.samples")
rss_end=$(rss)

o=$run/overload.json.part
r=$run/recovery.json.part
b=$run/baseline.json.part
fails=0
xfails=0
check() { # name ok detail [gap]: a failing check whose gap is listed in OVERLOAD_XFAIL is XFAIL
  if [[ "$2" == 1 ]]; then say "PASS $1 ($3)"
  elif [[ -n "${4:-}" && " ${OVERLOAD_XFAIL:-} " == *" $4 "* ]]; then
    say "XFAIL $1 ($3) — known gap '$4', docs/RELIABILITY.md §2"
    xfails=$((xfails + 1))
  else say "FAIL $1 ($3)"; fails=$((fails + 1)); fi
}
# Neither the core threads nor the generator spin: idle, a core thread ran < 5% of the second
# (its 10 ms loop timer: ~0.5% release, ~1.8% debug); at 200 req/s each stays under half its
# core (a spinning RT thread takes ~95%; a debug core thread needs ~14% for 200 decisions).
i_gen=$(jq '.generator_cpu_util * 100 | round' "$run/idle.json")
i_srv=$(jq '[.server_threads_cpu_util | to_entries[] | select(.key | startswith("helios-core")) | .value] | max * 100 | round' "$run/idle.json")
check "idle: the core threads and the generator block when there is nothing to do" \
  "$([[ $((idle_ns / 10000000)) -lt 5 && "$i_gen" -lt 50 && "$i_srv" -lt 50 ]] && echo 1 || echo 0)" \
  "idle second: core threads ran $((idle_ns / 1000)) µs; at 200 req/s: generator $i_gen%, busiest core thread $i_srv% of a core"
# The CPU each got and how long it waited runnable, per phase (from helios-load's report).
for ph in capacity baseline overload recovery; do
  f=$run/$ph.json.part
  [[ -f "$f" ]] || f=$run/$ph.json
  say "CPU shares, $ph: $(shares "$f")"
done
# The recovery is judged against the baseline: it must itself be what an idle node gives (within
# the shortest tmax at p99), else the machine took the CPUs and the comparison means nothing.
b_p99=$(jq '.latency.p99_us' "$b")
check "baseline at C/2 is trustworthy: p99 < 100 ms, every request answered" \
  "$([[ "$(awk -v p="$b_p99" 'BEGIN {print (p < 100000) ? 1 : 0}')" == 1 && "$(jq '.errors.unsent + .errors.timeout + .errors.backlog_overflow' "$b")" == 0 ]] && echo 1 || echo 0)" \
  "p50 $(jq .latency.p50_us "$b") µs, p99 $b_p99 µs, max $(jq .latency.max_us "$b") µs; $(shares "$b")"
# Failures the server caused (client-side drops — backlog_overflow, unsent — are reported apart).
errs() { jq '[.errors | to_entries[] | select(.key != "backlog_overflow" and .key != "unsent") | .value] | add' "$1"; }
o_errs=$(errs "$o")
o_p99=$(jq '.latency.p99_us' "$o")
o_max=$(jq '.latency.max_us' "$o")
o_200=$(jq '.statuses["200"] // 0' "$o")
o_204=$(jq '.statuses["204"] // 0' "$o")
o_done=$(jq .completed "$o")
o_rps=$(jq '.achieved_rps | floor' "$o")
check "overload: every request sent was answered (no timeout at 250 ms, no connection error)" "$([[ "$o_errs" == 0 ]] && echo 1 || echo 0)" \
  "$o_done answered at $o_rps req/s of $offered offered over $conns connections; errors $(jq -c .errors "$o")" tmax
check "overload: answered within the shortest tmax (p99 < 100 ms), the excess no-bid" "$(awk -v p="$o_p99" 'BEGIN {print (p < 100000) ? 1 : 0}')" \
  "p50 $(jq .latency.p50_us "$o") µs, p99 $o_p99 µs, p99.9 $(jq .latency.p999_us "$o") µs, max $o_max µs; 200: $o_200, 204: $o_204; no-bids on /metrics: overloaded +$((ovl_mid - ovl_before)), deadline +$((dl_mid - dl_before)); shed: expired +$((sx1 - sx0)), queue +$((sq1 - sq0)), turn_budget +$((st1 - st0)), late +$((sl1 - sl0)); reads without a kernel stamp +$((su1 - su0))" tmax
check "overload: RSS bounded (growth under the per-connection bound)" \
  "$(((rss_peak - rss_before) < rss_max_mib * 1024 ? 1 : 0))" \
  "before $rss_before KiB, peak $rss_peak KiB (first half $rss_h1, second half $rss_h2), end $rss_end KiB (bound +$rss_max_mib MiB for $conns connections)"
r_p99=$(jq '.latency.p99_us' "$r")
# Recovered: right after the overload, the same load is served as before it (p99 within 2× the
# baseline's, or under 100 ms), every request answered, shedding over within
# OVERLOAD_RECOVERY_SHED_MS (250 ms): the requests the overload left in the kernel's buffers are
# drained (shed) first, and fresh ones queued behind them may be shed meanwhile.
shed_ms=${OVERLOAD_RECOVERY_SHED_MS:-250}
ovl_allowed=$((cap / 2 * shed_ms / 1000))
# Shed as overloaded after the overload, from /metrics (published every 10 ms here, read 30 ms
# after each phase). Cross-check, per request: the recovery sends the same corpus in the same
# order at the same rate as the baseline, so in a release build (whose decisions do not depend
# on timing) every 204 beyond the baseline's is a shed recovery request.
r_shed=$((ovl_after - ovl_mid))
b_204=$(jq '.statuses["204"] // 0' "$b")
r_204=$(jq '.statuses["204"] // 0' "$r")
check "recovery at once: p99 right after ≤ max(100 ms, 2 × before), shedding over within $shed_ms ms (≤ $ovl_allowed shed as overloaded)" \
  "$([[ "$(awk -v p="$r_p99" -v b="$b_p99" 'BEGIN {print (p < 100000 || p <= 2 * b) ? 1 : 0}')" == 1 && "$(errs "$r")" == 0 && "$r_shed" -le "$ovl_allowed" ]] && echo 1 || echo 0)" \
  "at $((cap / 2)) req/s: before p50 $(jq .latency.p50_us "$b") µs p99 $b_p99 µs, statuses $(jq -c .statuses "$b"); right after p50 $(jq .latency.p50_us "$r") µs, p99 $r_p99 µs, max $(jq .latency.max_us "$r") µs, statuses $(jq -c .statuses "$r"); overloaded +$r_shed on /metrics; 204s beyond the baseline's: $((r_204 - b_204))"

jq -n --slurpfile c "$run/capacity.json" --slurpfile b "$run/baseline.json.part" --slurpfile o "$o" --slurpfile r "$r" \
  --arg at "$(date -u +%FT%TZ)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson rt "$rt" --arg load_before "$load_before" \
  --argjson rss_before "$rss_before" --argjson rss_peak "$rss_peak" --argjson rss_end "$rss_end" \
  --argjson fails "$fails" --argjson xfails "$xfails" --argjson secs "$secs" --argjson factor "$factor" \
  --argjson shed "{\"expired\":$((sx1 - sx0)),\"queue\":$((sq1 - sq0)),\"turn_budget\":$((st1 - st0)),\"late\":$((sl1 - sl0)),\"unstamped_reads\":$((su1 - su0)),\"nobid_overloaded\":$((ovl_mid - ovl_before)),\"nobid_deadline\":$((dl_mid - dl_before))}" \
  '{at:$at, load_before:$load_before, load:$load, rt:($rt==1), seconds:$secs, factor:$factor, capacity:$c[0], baseline:$b[0], overload:$o[0], recovery:$r[0],
    shed_during_overload:$shed, rss_kib:{before:$rss_before, peak:$rss_peak, end:$rss_end}, ok:($fails==0), xfails:$xfails}' >"$run/overload.json"
say "results: $run/overload.json; load $(cut -d' ' -f1-3 /proc/loadavg)"
((fails == 0)) || exit 1
