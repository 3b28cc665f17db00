#!/usr/bin/env bash
# `make bench`: the end-to-end comparison, side by side in one run.
#
# Servers (each pinned to SERVER_CPU, one at a time): the appliance's --null (transport ceiling;
# io_uring, epoll and the glommio reference driver, event pipeline off), HAProxy answering a static
# 204 with one thread, the Helios full bid path (events to Kafka on; and with events off on each of
# the three drivers), and the conventional baseline (helios-conventional: axum + serde_json + Redis +
# inline Kafka). The glommio driver is bench/src/bin/helios-glommio.rs: glommio 0.9 carrying the
# appliance's own sans-IO core (events counted, not sent). The load generator
# (helios-load) is pinned to GEN_CPU. For each server: closed-loop max throughput (with the
# generator's CPU shown beside it), then open loop at 50% and 80% of that max, then open loop at
# the common rate (50% of Helios's max, or of the first server measured when Helios is missing)
# where server CPU time per request (utime+stime from /proc ÷ requests) — the primary figure —
# and latency are compared. Syscalls per request come from `perf stat -e raw_syscalls:sys_enter`
# on the server during its 50% run. Each load report also splits the server's CPU by thread name
# (/proc/<pid>/task: event loops, Kafka producer, librdkafka, replicator, control).
#
# Then, without sockets: `helios-owntime` runs the corpus through the appliance's core in-process
# (own time per request p50/p99, allocations per request, and a 1,000-campaign decision p99), and
# under valgrind's callgrind (when installed) gives the instructions per request of the core path
# over a fixed slice of the corpus. Last, bench/overload.sh at 3× Helios's
# capacity (release build, BENCH_DURATION seconds).
#
# Writes bench/results.json, bench/latency.svg, appends a dated run to bench/RESULTS.md, and keeps
# every raw report under $HELIOS_RUN/results/<date>/. Services run on their own ports and run dir
# (HELIOS_RUN=$HELIOS_CACHE/run-bench, Redis 6394, Kafka 9095); everything started here is
# stopped here by PID, also on failure. Bounded: each load run is `timeout`-limited and the
# whole script stays under ~15 minutes with the defaults.
#
# Knobs (environment): BENCH_DURATION (s, default 8), BENCH_WARMUP (s, 2), BENCH_CONNS (32),
# BENCH_TARGETS ("helios helios-noevents helios-noevents-epoll helios-noevents-glommio null null-epoll
# null-glommio haproxy conventional"), GEN_CPU (0), SERVER_CPU (1), BENCH_USERS (100000),
# BENCH_NO_BUILD=1 to skip the release build, BENCH_STAGES ("servers owntime callgrind overload"),
# BENCH_PORT / BENCH_ADMIN_PORT (18480 / 18481), HELIOS_BENCH_RUN / HELIOS_BENCH_REDIS_PORT /
# HELIOS_BENCH_KAFKA_PORT (own services), OVERLOAD_PORT / OVERLOAD_ADMIN_PORT (18590 / 18591).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
export HELIOS_CACHE=${HELIOS_CACHE:-/var/cache/helios}
export HELIOS_RUN=${HELIOS_BENCH_RUN:-$HELIOS_CACHE/run-bench}
export HELIOS_REDIS_PORT=${HELIOS_BENCH_REDIS_PORT:-6394}
export HELIOS_KAFKA_PORT=${HELIOS_BENCH_KAFKA_PORT:-9095}
unset HELIOS_REDIS_URL HELIOS_KAFKA_BROKERS
source scripts/env.sh

DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNS:-32}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
USERS=${BENCH_USERS:-100000}
TARGETS=${BENCH_TARGETS:-"helios helios-noevents helios-noevents-epoll helios-noevents-glommio null null-epoll null-glommio haproxy conventional"}
STAGES=${BENCH_STAGES:-"servers owntime callgrind overload"}
stage() { [[ " $STAGES " == *" $1 "* ]]; }
PORT=${BENCH_PORT:-18480}              # bid port of whichever server runs
ADMIN_PORT=${BENCH_ADMIN_PORT:-18481}  # the appliance's admin port
BIN=$CARGO_TARGET_DIR/release
stamp=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$HELIOS_RUN/results/$stamp
mkdir -p "$OUT"

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

server_pid=""
services_started=0
stop_server() {
  [[ -n "$server_pid" ]] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
cleanup() {
  stop_server
  if ((services_started)); then scripts/services.sh stop redis kafka >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  log "release build"
  timeout 1800 cargo build --release --workspace --bins >&2
fi
for b in helios-load helios-corpus helios-conventional helios-glommio helios-owntime; do
  [[ -x "$BIN/$b" ]] || { echo "bench: $BIN/$b missing (build failed?)" >&2; exit 1; }
done
# The shared target dir's binaries may be rebuilt by another checkout while this runs: measure
# the ones just built, hard-linked into the run's own directory (no copy, no disk).
mkdir -p "$OUT/bin"
for b in helios helios-load helios-corpus helios-conventional helios-glommio helios-owntime helios-profiles; do
  [[ -x "$BIN/$b" ]] && { ln -f "$BIN/$b" "$OUT/bin/$b" 2>/dev/null || cp "$BIN/$b" "$OUT/bin/$b"; }
done
BIN=$OUT/bin

if [[ -x "$BIN/helios-profiles" ]]; then ids=profiles; else ids=plain; fi
log "corpus: 20000 requests, $USERS users ($ids ids)"
"$BIN/helios-corpus" -n 20000 --seed 1 --users "$USERS" --user-ids "$ids" -o "$OUT/corpus.jsonl" --stats

log "services: redis :$HELIOS_REDIS_PORT, kafka :$HELIOS_KAFKA_PORT (run dir $HELIOS_RUN)"
services_started=1
scripts/services.sh start redis kafka >&2
for t in conventional.bids helios.bids helios.outcomes; do
  timeout 20 tansu topic create --broker "tcp://127.0.0.1:$HELIOS_KAFKA_PORT" --partitions 1 "$t" >/dev/null 2>&1 || true
done
if [[ $ids == profiles ]]; then
  log "profiles: helios-profiles load --count $USERS"
  timeout 600 "$BIN/helios-profiles" load --url "$HELIOS_REDIS_URL" --count "$USERS" --seed 1 >&2 ||
    log "helios-profiles failed (profiles missing: requests find no profile)"
else
  log "helios-profiles not built: no profiles (requests find no profile)"
fi

cat >"$OUT/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout client 30s
  timeout connect 5s
  timeout server 30s
  timeout http-keep-alive 30s
frontend bench
  bind 127.0.0.1:$PORT
  http-request return status 204
EOF

start_server() { # name
  local name=$1
  case "$name" in
    null-glommio | helios-noevents-glommio)
      # The glommio reference driver over the same core (events counted, as events off).
      local gargs=(--listen "127.0.0.1:$PORT" --cpu "$SERVER_CPU" --notice-key bench-notice-key)
      [[ "$name" == null* ]] && gargs+=(--null)
      [[ "$name" == helios* ]] && gargs+=(--campaigns bench/data/campaigns.json)
      taskset -c "$SERVER_CPU" "$BIN/helios-glommio" "${gargs[@]}" >"$OUT/$name.log" 2>&1 &
      ;;
    null | null-epoll | helios | helios-noevents | helios-noevents-epoll)
      [[ -x "$BIN/helios" ]] || { log "$name: appliance binary not built (not on main yet): skipped"; return 1; }
      local args=(--listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" --cores "$SERVER_CPU")
      [[ "$name" == null* ]] && args+=(--null)
      [[ "$name" == *-epoll ]] && args+=(--driver epoll)
      [[ "$name" == helios* ]] && args+=(--campaigns bench/data/campaigns.json)
      # null: the HTTP stack only; helios-noevents: the bid path without the event pipeline.
      local events=true
      [[ "$name" == null* || "$name" == helios-noevents* ]] && events=false
      # Its own brokers, spool, profile store and a fixed notice key (no shared state with others).
      HELIOS_EVENTS_ENABLED=$events HELIOS_EVENTS_BROKERS=$HELIOS_KAFKA_BROKERS HELIOS_EVENTS_SPOOL_DIR=$HELIOS_RUN/spool-$name \
        HELIOS_EVENTS_FREQUENCY_REDIS_URL=$HELIOS_REDIS_URL HELIOS_PROFILES_REDIS_URL=$HELIOS_REDIS_URL \
        HELIOS_NOTICES_KEY=bench-notice-key HELIOS_LOG_LEVEL=warn \
        taskset -c "$SERVER_CPU" "$BIN/helios" "${args[@]}" >"$OUT/$name.log" 2>&1 &
      ;;
    haproxy)
      command -v haproxy >/dev/null || { log "haproxy not installed: skipped"; return 1; }
      taskset -c "$SERVER_CPU" haproxy -f "$OUT/haproxy.cfg" -db >"$OUT/$name.log" 2>&1 &
      ;;
    conventional)
      taskset -c "$SERVER_CPU" "$BIN/helios-conventional" --listen "127.0.0.1:$PORT" \
        --redis-url "$HELIOS_REDIS_URL" --kafka-brokers "$HELIOS_KAFKA_BROKERS" \
        --campaigns bench/data/campaigns.json --notice-base "http://127.0.0.1:$PORT" >"$OUT/$name.log" 2>&1 &
      ;;
  esac
  server_pid=$!
  if ! wait_port "$PORT" 20; then
    log "$name did not open port $PORT (log: $OUT/$name.log)"
    tail -5 "$OUT/$name.log" >&2 || true
    stop_server
    return 1
  fi
  # One real request through it before measuring (and to show what it answers).
  local code
  code=$(head -1 "$OUT/corpus.jsonl" | curl -s -o /dev/null -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$PORT/openrtb2/bid" || true)
  log "$name up (pid $server_pid), first request → HTTP $code"
}

load() { # name tag mode-args...
  local name=$1 tag=$2
  shift 2
  timeout $((DURATION + WARMUP + 30)) "$BIN/helios-load" --url "http://127.0.0.1:$PORT/openrtb2/bid" \
    --corpus "$OUT/corpus.jsonl" -c "$CONNS" -d "$DURATION" --warmup "$WARMUP" --cpu "$GEN_CPU" \
    --server-pid "$server_pid" --label "$name $tag" --json "$OUT/$name-$tag.json" "$@" >&2
}

rps_of() { jq -r '.achieved_rps | floor' "$1"; }

syscalls() { # name rate: perf over the middle of a run already started
  local name=$1 rate=$2 secs=$((DURATION > 4 ? DURATION - 2 : 2))
  command -v perf >/dev/null || return 0
  sleep $((WARMUP + 1))
  timeout $((secs + 10)) perf stat -e raw_syscalls:sys_enter -x, -p "$server_pid" -o "$OUT/$name-perf.txt" \
    -- sleep "$secs" 2>/dev/null || return 0
  local n
  n=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$OUT/$name-perf.txt" 2>/dev/null || true)
  [[ "$n" =~ ^[0-9]+$ ]] && jq -n --argjson n "$n" --argjson r "$rate" --argjson s "$secs" \
    '{syscalls: $n, seconds: $s, offered_rps: $r, per_request: ($n / ($r * $s))}' >"$OUT/$name-syscalls.json"
}

common_rate=""
common_from=""
stage servers || TARGETS=""
for name in $TARGETS; do
  start_server "$name" || continue
  log "$name: closed loop, $CONNS connections (max throughput)"
  load "$name" max --closed || { log "$name: max run failed"; stop_server; continue; }
  max=$(rps_of "$OUT/$name-max.json")
  ((max > 0)) || { log "$name: no throughput"; stop_server; continue; }
  # The common rate: 50% of the first server measured (Helios, when it exists: it runs first).
  [[ -n "$common_rate" ]] || { common_rate=$((max / 2)); common_from=$name; }
  for pct in 50 80; do
    rate=$((max * pct / 100))
    ((rate > 0)) || continue
    log "$name: open loop at $pct% of max = $rate req/s"
    perf_job=""
    if ((pct == 50)); then syscalls "$name" "$rate" & perf_job=$!; fi
    load "$name" "p$pct" --rate "$rate" || log "$name: $pct% run failed"
    [[ -z "$perf_job" ]] || wait "$perf_job" 2>/dev/null || true
  done
  if [[ "$name" == "$common_from" ]]; then
    cp "$OUT/$name-p50.json" "$OUT/$name-common.json" 2>/dev/null || true
  else
    log "$name: open loop at the common rate $common_rate req/s"
    load "$name" common --rate "$common_rate" || log "$name: common-rate run failed"
  fi
  stop_server
done

# In-process: the core alone over the corpus (own time, allocations, 1,000-campaign decision).
if stage owntime; then
  log "own time: helios-owntime over the corpus (pinned to CPU $SERVER_CPU)"
  timeout 300 "$BIN/helios-owntime" --corpus "$OUT/corpus.jsonl" --campaigns bench/data/campaigns.json \
    --cpu "$SERVER_CPU" --warmup-rounds 2 --rounds 5 --json "$OUT/owntime.json" >&2 ||
    log "helios-owntime failed"
fi
# Instructions per request of the core path (callgrind counts them; noise-free across runs):
# (Ir with 3 measured passes − Ir with 1) ÷ (2 × requests in the slice).
if stage callgrind; then
  if command -v valgrind >/dev/null; then
    CG_N=${BENCH_CALLGRIND_REQUESTS:-1000}
    log "callgrind: core path over the first $CG_N corpus requests"
    cg_ir() { # rounds
      local f="$OUT/callgrind-$1.out"
      timeout 900 valgrind --tool=callgrind --callgrind-out-file="$f" "$BIN/helios-owntime" \
        --corpus "$OUT/corpus.jsonl" --campaigns bench/data/campaigns.json --limit "$CG_N" \
        --warmup-rounds 1 --rounds "$1" --decision-campaigns 0 >/dev/null 2>&1 || return 1
      awk '/^(summary|totals):/ {print $2; exit}' "$f"
    }
    if ir1=$(cg_ir 1) && ir3=$(cg_ir 3) && [[ "$ir1" =~ ^[0-9]+$ && "$ir3" =~ ^[0-9]+$ ]]; then
      jq -n --argjson a "$ir1" --argjson b "$ir3" --argjson n "$CG_N" \
        '{requests: $n, ir_1_round: $a, ir_3_rounds: $b, ir_per_request: (($b - $a) / (2 * $n))}' \
        >"$OUT/callgrind.json"
    else
      log "callgrind run failed"
    fi
  else
    log "valgrind not installed: no instruction counts"
  fi
fi
# Overload: 3× Helios's capacity (bench/overload.sh, release binaries).
if stage overload; then
  log "overload: 3× capacity for $DURATION s"
  OVERLOAD_BIN=$BIN OVERLOAD_OUT=$OUT/overload OVERLOAD_SECONDS=$DURATION GEN_CPU=$GEN_CPU \
    SERVER_CPU=$SERVER_CPU bash bench/overload.sh >&2 ||
    log "overload check failed (see $OUT/overload)"
fi

log "report"
python3 bench/report.py --dir "$OUT" --results bench/results.json --svg bench/latency.svg \
  --md bench/RESULTS.md --common-rate "${common_rate:-0}" --common-from "${common_from:-}" --gen-cpu "$GEN_CPU" --server-cpu "$SERVER_CPU" \
  --conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP"
log "done: bench/results.json, bench/latency.svg, bench/RESULTS.md (raw reports in $OUT)"
