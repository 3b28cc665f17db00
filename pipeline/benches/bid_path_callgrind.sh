#!/usr/bin/env bash
# Instructions per bid request on the bidding core's thread, events on vs off: the appliance
# (`helios`, one core) runs under `valgrind --tool=callgrind --separate-threads=yes`, gets a
# warm-up, its counters are zeroed (`callgrind_control -z`), it answers a fixed open-loop load
# from `helios-load`, and the counters are dumped (`callgrind_control -d`). The thread whose
# profile holds the event loop (`appliance::driver::uring::run`) is the core thread; its
# instructions (Ir, user space only: callgrind does not see the kernel) are divided by the
# requests answered in the window. Every other thread's Ir is printed too.
#
# This answers "does the core thread do more work with events on?" without hardware counters
# (this VM has none): if its instructions per request do not move, the extra CPU time a core
# thread shows with events on is interference (caches, preemption, interrupts), not work.
#
# Own services (never shared): Redis on HELIOS_REDIS_PORT (6403) and a Tansu broker (memory
# engine) on HELIOS_KAFKA_PORT (9103), under HELIOS_RUN (/var/cache/helios/run-pipeline); all
# stopped by PID on exit. Knobs: RATE (req/s, 100: valgrind runs ~50× slower), DURATION (s, 10),
# WARMUP_REQS (requests before zeroing, 300), BID_PORT (18690), GEN_CPU (0), SERVER_CPU (1), BIN
# (helios, helios-load, helios-corpus; default $CARGO_TARGET_DIR/release), VARIANTS ("name=dir
# …", as in bid_path_cpu.sh), OUT (raw reports).
set -euo pipefail
BP_TAG=bid-path-callgrind
BP_SERVER_STOP_S=10 # valgrind writes its profiles at exit
# shellcheck source=pipeline/benches/bid_path_lib.sh
source "$(dirname "$0")/bid_path_lib.sh"

RATE=${RATE:-100}
DURATION=${DURATION:-10}
WARMUP_REQS=${WARMUP_REQS:-300}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BIN=${BIN:-$CARGO_TARGET_DIR/release}
OUT=${OUT:-$HELIOS_RUN/bid-path-callgrind/$(date -u +%Y%m%dT%H%M%SZ)}
PORT=${BID_PORT:-18690}
ADMIN_PORT=$((PORT + 1))
VARIANTS=${VARIANTS:-"new=$BIN"}
mkdir -p "$OUT"
bp_need_bins helios-load helios-corpus
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
  || { echo "valgrind (callgrind) is needed" >&2; exit 1; }

bp_start_services bcg "memory://tansu/"

run_one() { # label events helios-dir [VAR=value …]
  local label=$1 events=$2 hdir=$3
  shift 3
  rm -rf "$HELIOS_RUN/spool-bcg"
  mkdir -p "$OUT/$label"
  (cd "$OUT/$label" && exec env "$@" HELIOS_EVENTS_ENABLED="$events" \
    HELIOS_EVENTS_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_EVENTS_SPOOL_DIR="$HELIOS_RUN/spool-bcg" \
    HELIOS_EVENTS_FREQUENCY_REDIS_URL="$HELIOS_REDIS_URL" HELIOS_NOTICES_KEY=bench-notice-key \
    HELIOS_LOG_LEVEL=warn HELIOS_EVENTS_STARTUP_TIMEOUT_MS=30000 \
    taskset -c "$SERVER_CPU" valgrind --tool=callgrind --separate-threads=yes \
    "$hdir/helios" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" --cores "$SERVER_CPU" \
    --campaigns "$root/bench/data/campaigns.json" >"$OUT/$label/valgrind.log" 2>&1) &
  server_pid=$!
  wait_port "$PORT" 120 || { echo "helios did not start under valgrind ($OUT/$label)" >&2; exit 1; }
  # Warm-up (connections, caches, first frames), not counted.
  "$BIN/helios-load" --url "http://127.0.0.1:$PORT/openrtb2/bid" --corpus "$OUT/corpus.jsonl" \
    -c 4 -d $(((WARMUP_REQS + RATE - 1) / RATE)) --warmup 0 --cpu "$GEN_CPU" --rate "$RATE" \
    >"$OUT/$label/warmup.txt" 2>&1 || true
  callgrind_control -z "$server_pid" >/dev/null 2>&1 || callgrind_control -z >/dev/null
  "$BIN/helios-load" --url "http://127.0.0.1:$PORT/openrtb2/bid" --corpus "$OUT/corpus.jsonl" \
    -c 4 -d "$DURATION" --warmup 0 --cpu "$GEN_CPU" --rate "$RATE" --json "$OUT/$label/load.json" \
    >"$OUT/$label/load.txt" 2>&1
  callgrind_control -d "$server_pid" >/dev/null 2>&1 || callgrind_control -d >/dev/null
  sleep 1
  stop_pid "$server_pid" "$BP_SERVER_STOP_S"
  server_pid=""
  python3 - "$OUT/$label" "$label" <<'PY'
import glob, json, os, re, sys
d, label = sys.argv[1], sys.argv[2]
rep = json.load(open(f"{d}/load.json"))
n = rep.get("completed", 0)
# The dump asked for by `callgrind_control -d` is part 1 (`callgrind.out.PID.1-TID` per thread);
# the files written at exit hold the shutdown only (the counters restart at each dump).
files = sorted(glob.glob(f"{d}/callgrind.out.*.1-*")) or sorted(glob.glob(f"{d}/callgrind.out.*.1"))
threads = []
for f in files:
    text = open(f, errors="replace").read()
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    ir = int(m.group(1)) if m else 0
    core = "appliance::driver::uring::run" in text or "appliance::driver::epoll::run" in text
    threads.append((os.path.basename(f), ir, core))
core_ir = sum(ir for _, ir, c in threads if c)
# The event sink's share of the core thread (inclusive): `<CoreSink as EventSink>::emit` with
# events on, `<CountingSink as EventSink>::emit` with them off (events are built either way).
emit_ir = 0
for f, _, c in threads:
    if not c:
        continue
    ann = os.popen(f"callgrind_annotate --inclusive=yes --threshold=100 {d}/{f} 2>/dev/null").read()
    open(f"{d}/core-inclusive.txt", "w").write(ann)
    for line in ann.splitlines():
        if "as appliance::events::EventSink>::emit" in line:
            m2 = re.match(r"\s*([\d,]+)", line)
            if m2:
                emit_ir += int(m2.group(1).replace(",", ""))
other_ir = sum(ir for _, ir, c in threads if not c)
res = {"label": label, "requests": n, "core_ir": core_ir, "other_ir": other_ir,
       "emit_ir_per_req": emit_ir / n if n else None,
       "core_ir_per_req": core_ir / n if n else None, "other_ir_per_req": other_ir / n if n else None,
       "threads": threads}
json.dump(res, open(f"{d}/ir.json", "w"), indent=1)
print(f"## {label}: {n} requests; core thread {core_ir / max(n, 1):,.0f} Ir/req, of which the "
      f"event sink {emit_ir / max(n, 1):,.1f}; other threads {other_ir / max(n, 1):,.0f} Ir/req")
for f, ir, c in threads:
    print(f"   {f:40} {ir:>15,} {'(core)' if c else ''}")
PY
  # Keep only the summaries (core-inclusive.txt, ir.json): the profiles are large.
  rm -f "$OUT/$label"/callgrind.out.*
}

log "rate $RATE req/s under callgrind, $DURATION s after $WARMUP_REQS warm-up requests; load $(cut -d' ' -f1-3 /proc/loadavg)"
names=""
for v in $VARIANTS; do
  name=${v%%=*}
  names="$names $name"
  bp_variant "$v"
  run_one "$name-on" true "$BP_VDIR" "${BP_VENV[@]}"
  run_one "$name-off" false "$BP_VDIR" "${BP_VENV[@]}"
done
log "done; load $(cut -d' ' -f1-3 /proc/loadavg); reports in $OUT"
python3 - "$OUT" $names <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print("| build | core thread Ir/req, events on | off | on/off | event sink Ir/req on / off | other threads Ir/req (on) |")
print("|---|---|---|---|---|---|")
for n in names:
    on = json.load(open(f"{out}/{n}-on/ir.json"))
    off = json.load(open(f"{out}/{n}-off/ir.json"))
    r = on["core_ir_per_req"] / off["core_ir_per_req"] if off["core_ir_per_req"] else float("nan")
    print(f"| {n} | {on['core_ir_per_req']:,.0f} | {off['core_ir_per_req']:,.0f} | {r:.4f} | "
          f"{on['emit_ir_per_req']:,.1f} / {off['emit_ir_per_req']:,.1f} | {on['other_ir_per_req']:,.0f} |")
PY
