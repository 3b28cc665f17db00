#!/usr/bin/env bash
# The cost of the event pipeline on the full bid path: the appliance (`helios`, one core pinned to
# SERVER_CPU, the bench campaigns) under one fixed open-loop offered rate from `helios-load`
# (pinned to GEN_CPU), with events on and events off, alternated ROUNDS times in one run.
#
# For every run it records, over the measured window only:
#   - server CPU per request (helios-load's --server-pid: utime+stime of the whole process);
#   - CPU per thread (/proc/PID/task/*/stat, utime+stime, sampled at the window's start and end),
#     per request;
#   - syscalls, context switches and migrations per thread (`perf stat -e
#     raw_syscalls:sys_enter,context-switches,cpu-migrations --per-thread`), per request;
#   - per thread from /proc/PID/task/TID/sched: exact run time (se.sum_exec_runtime), voluntary
#     and involuntary switches (wake-ups per second of each helper, preemptions of the core);
#   - on SERVER_CPU as a whole (`perf stat -C`): softirqs, timer interrupts, rescheduling and
#     function-call IPIs, wake-ups — this kernel has no IRQ time accounting, so interrupt and
#     softirq work is charged to whichever thread it lands on;
#   - with PERF_RECORD=1, a cpu-clock profile of the core thread (`perf record -t`), reported by
#     symbol in OUT/<label>.core-profile.txt.
# and prints one table per run, then the on/off ratio of CPU per request.
#
# Its own services (never shared): Redis on HELIOS_REDIS_PORT (6403) and a Tansu broker on
# HELIOS_KAFKA_PORT (9103) with ENGINE=memory (default; `memory://`) or sqlite (durable), under
# HELIOS_RUN (/var/cache/helios/run-pipeline). Everything it starts is stopped by PID on exit.
#
# Knobs: RATE (req/s, default 4000), SERVER_AFFINITY (the CPUs the whole helios process may use,
# default SERVER_CPU: every helper thread then shares the core's CPU; e.g. "0,1" lets helpers
# that `[threads] helper_cpus` places elsewhere leave it), DURATION (s, 8), WARMUP (s, 3), CONNS (32), ROUNDS (2),
# ENGINE (memory|sqlite), BID_PORT (18680; admin BID_PORT+1), GEN_CPU (0), SERVER_CPU (1), OUT (a directory for raw reports), BIN
# (where the binaries are; default $CARGO_TARGET_DIR/release), VARIANTS ("name=dir[,VAR=value…]
# …": `helios` builds and/or settings to run side by side in the same rounds, e.g. the previous
# commit's build, or HELIOS_EVENTS_FRAME_LINGER_MS=100; default: just BIN as "new").
# Binaries come from $CARGO_TARGET_DIR/release (build them first: helios, helios-load,
# helios-corpus).
set -euo pipefail
BP_TAG=bid-path-cpu
# shellcheck source=pipeline/benches/bid_path_lib.sh
source "$(dirname "$0")/bid_path_lib.sh"

RATE=${RATE:-4000}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
ENGINE=${ENGINE:-memory}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
SERVER_AFFINITY=${SERVER_AFFINITY:-$SERVER_CPU}
PERF_RECORD=${PERF_RECORD:-0}
BIN=${BIN:-$CARGO_TARGET_DIR/release}
OUT=${OUT:-$HELIOS_RUN/bid-path-cpu/$(date -u +%Y%m%dT%H%M%SZ)}
PORT=${BID_PORT:-18680}
ADMIN_PORT=${ADMIN_PORT:-$((PORT + 1))}
mkdir -p "$OUT"

bp_need_bins helios helios-load helios-corpus
VARIANTS=${VARIANTS:-"new=$BIN"}
for v in $VARIANTS; do
  bp_variant "$v"
  [[ -x $BP_VDIR/helios ]] || { echo "missing $BP_VDIR/helios (variant ${v%%=*})" >&2; exit 1; }
done

case $ENGINE in
  memory) storage="memory://tansu/" ;;
  sqlite) storage="sqlite://tansu.db" ;;
  *) echo "ENGINE must be memory or sqlite" >&2; exit 2 ;;
esac
bp_start_services bpc "$storage"

# Thread CPU snapshot: "tid comm ticks" lines (ticks = utime + stime, in clock ticks).
threads() { # pid
  python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        s = open(f"/proc/{pid}/task/{tid}/stat").read()
    except OSError:
        continue
    comm = s[s.index("(") + 1 : s.rindex(")")]
    f = s[s.rindex(")") + 2 :].split()
    print(tid, comm.replace(" ", "_"), int(f[11]) + int(f[12]))
PY
}

# Scheduler view per thread: "tid sum_exec_ns voluntary involuntary migrations" lines.
sched() { # pid
  python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        lines = open(f"/proc/{pid}/task/{tid}/sched").read().splitlines()
    except OSError:
        continue
    v = {}
    for l in lines:
        if ":" in l:
            k, _, x = l.partition(":")
            v[k.strip()] = x.strip()
    ns = int(float(v.get("se.sum_exec_runtime", "0")) * 1e6)
    print(tid, ns, v.get("nr_voluntary_switches", 0), v.get("nr_involuntary_switches", 0),
          v.get("se.nr_migrations", 0))
PY
}

run_one() { # label events helios-dir [VAR=value …]
  local label=$1 events=$2 hdir=$3
  shift 3
  rm -rf "$HELIOS_RUN/spool-bpc"
  env "$@" HELIOS_EVENTS_ENABLED=$events HELIOS_EVENTS_BROKERS=$HELIOS_KAFKA_BROKERS \
    HELIOS_EVENTS_SPOOL_DIR=$HELIOS_RUN/spool-bpc HELIOS_EVENTS_FREQUENCY_REDIS_URL=$HELIOS_REDIS_URL \
    HELIOS_NOTICES_KEY=bench-notice-key HELIOS_LOG_LEVEL=warn \
    taskset -c "$SERVER_AFFINITY" "$hdir/helios" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --cores "$SERVER_CPU" --campaigns bench/data/campaigns.json >"$OUT/$label.log" 2>&1 &
  server_pid=$!
  wait_port "$PORT" 20 || { echo "helios did not start (log $OUT/$label.log)" >&2; tail -5 "$OUT/$label.log" >&2; exit 1; }
  "$BIN/helios-load" --url "http://127.0.0.1:$PORT/openrtb2/bid" --corpus "$OUT/corpus.jsonl" \
    -c "$CONNS" -d "$DURATION" --warmup "$WARMUP" --cpu "$GEN_CPU" --rate "$RATE" \
    --server-pid "$server_pid" --label "$label" --json "$OUT/$label.json" >"$OUT/$label.load.txt" 2>&1 &
  local load_pid=$!
  sleep "$WARMUP"
  local core_tid
  core_tid=$(grep -l '^helios-core-0$' /proc/"$server_pid"/task/*/comm 2>/dev/null | head -1 | cut -d/ -f5)
  local rec_pid=""
  if [[ $PERF_RECORD == 1 && -n $core_tid ]]; then
    timeout $((DURATION + 10)) perf record -q -e cpu-clock -F 4000 -g -t "$core_tid" \
      -o "$OUT/$label.core.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    rec_pid=$!
  fi
  timeout $((DURATION + 10)) perf stat -a -C "$SERVER_CPU" -x, -o "$OUT/$label.cpu.perf" \
    -e irq:softirq_entry,irq_vectors:local_timer_entry,irq_vectors:reschedule_entry \
    -e irq_vectors:call_function_single_entry,sched:sched_wakeup,sched:sched_switch \
    -- sleep "$DURATION" >/dev/null 2>&1 &
  local cpu_pid=$!
  threads "$server_pid" >"$OUT/$label.t0"
  sched "$server_pid" >"$OUT/$label.s0"
  timeout $((DURATION + 10)) perf stat -e raw_syscalls:sys_enter,context-switches,cpu-migrations \
    --per-thread -x, -p "$server_pid" -o "$OUT/$label.perf" -- sleep "$DURATION" 2>/dev/null || true
  threads "$server_pid" >"$OUT/$label.t1"
  sched "$server_pid" >"$OUT/$label.s1"
  wait "$cpu_pid" 2>/dev/null || true
  if [[ -n $rec_pid ]]; then
    wait "$rec_pid" 2>/dev/null || true
    perf report -i "$OUT/$label.core.data" --no-children --sort sym --stdio -g none --percent-limit 0.5 \
      >"$OUT/$label.core-profile.txt" 2>/dev/null || true
    rm -f "$OUT/$label.core.data"
  fi
  wait "$load_pid" || { echo "helios-load failed ($OUT/$label.load.txt)" >&2; cat "$OUT/$label.load.txt" >&2; }
  stop_pid "$server_pid"
  server_pid=""
  python3 - "$OUT" "$label" "$DURATION" "$(getconf CLK_TCK)" <<'PY'
import json, sys
out, label, dur, tck = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rep = json.load(open(f"{out}/{label}.json"))
rps = rep.get("achieved_rps", 0.0)
def snap(p):
    d = {}
    for line in open(p):
        tid, comm, ticks = line.split()
        d[tid] = (comm, int(ticks))
    return d
t0, t1 = snap(f"{out}/{label}.t0"), snap(f"{out}/{label}.t1")
# perf stat --per-thread -x, lines: "comm-tid,count,unit,event,…"
per_thread = {}
for line in open(f"{out}/{label}.perf"):
    f = line.strip().split(",")
    if len(f) >= 4 and "-" in f[0]:
        tid = f[0].rsplit("-", 1)[-1]
        ev = f[3]
        try:
            per_thread.setdefault(tid, {})[ev] = int(f[1])
        except ValueError:
            pass
def ssnap(p):
    d = {}
    for line in open(p):
        tid, ns, vol, invol, mig = line.split()
        d[tid] = (int(ns), int(vol), int(invol), int(mig))
    return d
s0, s1 = ssnap(f"{out}/{label}.s0"), ssnap(f"{out}/{label}.s1")
cpu_wide = {}
try:
    for line in open(f"{out}/{label}.cpu.perf"):
        f = line.strip().split(",")
        if len(f) >= 3 and ":" in f[2]:
            try:
                cpu_wide[f[2]] = int(f[0])
            except ValueError:
                pass
except OSError:
    pass
n = rps * dur  # requests offered over the sampled window
groups = {}
for tid, (comm, ticks) in t1.items():
    base = t0.get(tid, (comm, 0))[1]
    g = comm
    for prefix in ("rdk:broker", "rdk:"):
        if comm.startswith(prefix):
            g = prefix.rstrip(":") + "*"
            break
    # cpu (ticks), syscalls, threads, exact ns, voluntary, involuntary, ctx switches, migrations
    c = groups.setdefault(g, [0, 0, 0, 0, 0, 0, 0, 0])
    c[0] += (ticks - base) * 1e6 / tck
    pt = per_thread.get(tid, {})
    c[1] += pt.get("raw_syscalls:sys_enter", 0)
    c[2] += 1
    a, b = s0.get(tid, (0, 0, 0, 0)), s1.get(tid, (0, 0, 0, 0))
    c[3] += b[0] - a[0]
    c[4] += b[1] - a[1]
    c[5] += b[2] - a[2]
    c[6] += pt.get("context-switches", 0)
    c[7] += pt.get("cpu-migrations", 0)
tot_us = sum(c[0] for c in groups.values())
tot_ns = sum(c[3] for c in groups.values())
tot_sys = sum(c[1] for c in groups.values())
res = {"label": label, "achieved_rps": rps, "server_cpu_us_per_req": rep.get("server_cpu_us_per_req"),
       "p50_us": rep.get("latency_us", {}).get("p50") if isinstance(rep.get("latency_us"), dict) else None,
       "threads": {g: {"n": c[2], "cpu_us_per_req": c[0] / n if n else None,
                       "run_us_per_req": c[3] / 1e3 / n if n else None,
                       "syscalls_per_req": c[1] / n if n else None,
                       "voluntary_per_s": c[4] / dur, "involuntary_per_s": c[5] / dur,
                       "migrations_per_s": c[7] / dur} for g, c in groups.items()},
       "cpu_wide_per_s": {k: v / dur for k, v in cpu_wide.items()},
       "total_cpu_us_per_req": tot_us / n if n else None,
       "total_run_us_per_req": tot_ns / 1e3 / n if n else None,
       "total_syscalls_per_req": tot_sys / n if n else None}
json.dump(res, open(f"{out}/{label}.threads.json", "w"), indent=1)
print(f"## {label}: {rps:.0f} req/s achieved; server CPU (helios-load) {rep.get('server_cpu_us_per_req')} us/req")
print(f"{'thread':20} {'n':>3} {'cpu us/req':>10} {'run us/req':>10} {'sysc/req':>8} {'vol/s':>7} {'invol/s':>7} {'migr/s':>6}")
for g, c in sorted(groups.items(), key=lambda kv: -kv[1][3]):
    print(f"{g:20} {c[2]:>3} {c[0]/n if n else 0:>10.2f} {c[3]/1e3/n if n else 0:>10.2f} "
          f"{c[1]/n if n else 0:>8.2f} {c[4]/dur:>7.0f} {c[5]/dur:>7.0f} {c[7]/dur:>6.0f}")
print(f"{'total':20} {'':>3} {tot_us/n if n else 0:>10.2f} {tot_ns/1e3/n if n else 0:>10.2f} {tot_sys/n if n else 0:>8.2f}")
print("server CPU, per s:", ", ".join(f"{k.split(':')[1]} {v/dur:.0f}" for k, v in sorted(cpu_wide.items())))
PY
}

log "engine $ENGINE, rate $RATE req/s, $DURATION s measured after $WARMUP s, $ROUNDS rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"
names=""
for r in $(seq 1 "$ROUNDS"); do
  for v in $VARIANTS; do
    name=${v%%=*}
    [[ " $names " == *" $name "* ]] || names="$names $name"
    bp_variant "$v"
    run_one "$name-on-$r" true "$BP_VDIR" "${BP_VENV[@]}"
    run_one "$name-off-$r" false "$BP_VDIR" "${BP_VENV[@]}"
  done
done
log "done; load $(cut -d' ' -f1-3 /proc/loadavg); raw reports in $OUT"
python3 - "$OUT" "$ROUNDS" $names <<'PY'
import json, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def v(l, k):
    return json.load(open(f"{out}/{l}.threads.json"))[k]
def th(l):
    return json.load(open(f"{out}/{l}.threads.json"))
def mean(xs):
    xs = [x for x in xs if x]
    return sum(xs) / len(xs) if xs else 0.0
print("| build | events | server CPU µs/req (helios-load), per round | mean | on/off | core run µs/req | on/off | pipeline threads µs/req | core invol. switches/s |")
print("|---|---|---|---|---|---|---|---|---|")
PIPE = ("helios-producer", "rdk*", "rdk:broker*", "helios-freq")
for n in names:
    row = {}
    for ev in ("on", "off"):
        labels = [f"{n}-{ev}-{r}" for r in range(1, rounds + 1)]
        srv = [v(l, "server_cpu_us_per_req") for l in labels]
        # A failed run (nothing answered) reports 0: left out of the means, shown as 0.
        ok = [x for x in srv if x > 0]
        core = mean([th(l)["threads"].get("helios-core-0", {}).get("run_us_per_req") for l in labels])
        pipe = mean([sum(t.get("run_us_per_req") or 0 for g, t in th(l)["threads"].items() if g in PIPE)
                     for l in labels]) if ev == "on" else 0.0
        inv = mean([th(l)["threads"].get("helios-core-0", {}).get("involuntary_per_s") for l in labels])
        row[ev] = (srv, sum(ok) / max(len(ok), 1), core, pipe, inv)
    on, off = row["on"], row["off"]
    r1 = f"{on[1] / off[1]:.3f}" if off[1] > 0 else "n/a"
    r2 = f"{on[2] / off[2]:.3f}" if off[2] > 0 else "n/a"
    print(f"| {n} | on | {', '.join(f'{x:.1f}' for x in on[0])} | {on[1]:.1f} | {r1} | {on[2]:.1f} | {r2} | {on[3]:.2f} | {on[4]:.0f} |")
    print(f"| {n} | off | {', '.join(f'{x:.1f}' for x in off[0])} | {off[1]:.1f} | | {off[2]:.1f} | | | {off[4]:.0f} |")
PY
