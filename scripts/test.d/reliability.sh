#!/usr/bin/env bash
# make test: the short forms of the reliability suite (issue 12, docs/RELIABILITY.md), each on its
# own services and ports, every process started and stopped by PID:
#   1. whole-chain faults (scripts/chaos.sh --short): no fault, broker stopped 10 s, Redis
#      restarted, PostgreSQL restarted, reporter SIGKILLed mid-batch (×3), appliance SIGKILLed
#      with the broker up and while spooling (both strict: zero answered events lost — every
#      event is in its core's write-ahead journal before its answer leaves); every fault with
#      0.20 USD budgets that the biggest spenders exhaust, so the budget check bites;
#   2. overload (scripts/overload.sh --short): 3 × measured capacity for 10 s, debug build, the
#      generator and the core thread SCHED_FIFO (OVERLOAD_RT=1, the default); the release build
#      meets the tmax checks (strict in `make soak`), the debug build cannot (a debug shed alone
#      costs ~48 µs: ~50 ms to go round 1,024 connections), so the two report XFAIL here
#      (docs/RELIABILITY.md §2);
#   3. hostile HTTP through the real binary (scripts/hostile.py).
# The long forms run in `make soak` (scripts/soak.sh). Exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
source scripts/env.sh
fail=0
echo "reliability: whole-chain faults (short forms)"
# Budgets small enough that the campaigns that win most run out during the run, so "no campaign
# overspent > 1%" checks enforcement under every fault (0.20 USD each: the six biggest spenders
# of bench/data/campaigns.json at 300 auctions/s spend it in 1–4 s; the harness keeps traffic
# going, at most 120 s, until at least six campaigns are exhausted — a loaded machine answers
# fewer auctions per second: at load 14 it took 41 s). CHAOS_BUDGET_MICROS= (empty) runs with
# the file's budgets.
CHAOS_BUDGET_MICROS=${CHAOS_BUDGET_MICROS-200000} CHAOS_BUDGET_EXHAUSTED_MIN=${CHAOS_BUDGET_EXHAUSTED_MIN:-6} \
  CHAOS_BUDGET_WAIT=${CHAOS_BUDGET_WAIT:-120} \
  CHAOS_PROFILE=${CHAOS_PROFILE:-debug} scripts/chaos.sh --short \
  none broker redis postgres reporter-kill appliance-kill appliance-kill-spooling || fail=1
echo "reliability: overload (short form)"
# A debug build runs a loop turn ~10× slower than release: its per-turn time budget (5 ms by
# default, made for release builds) is widened so that recovery is judged, not the debug build;
# for the same reason the debug build may take up to 1 s (release: 250 ms) to drain the ~1,024
# requests the overload leaves in the kernel's buffers before it stops shedding, and its queueing
# target is widened as much (50 ms: a debug decision takes ~0.45 ms, so 64 connections alone
# queue ~30 ms and the 5 ms default would shed the capacity and baseline phases themselves).
HELIOS_BIDDING_TURN_BUDGET_US=${HELIOS_BIDDING_TURN_BUDGET_US:-50000} \
  HELIOS_BIDDING_QUEUE_TARGET_US=${HELIOS_BIDDING_QUEUE_TARGET_US:-50000} \
  OVERLOAD_RECOVERY_SHED_MS=${OVERLOAD_RECOVERY_SHED_MS:-1000} \
  OVERLOAD_XFAIL=${OVERLOAD_XFAIL-tmax} OVERLOAD_PROFILE=${OVERLOAD_PROFILE:-debug} scripts/overload.sh --short || fail=1
echo "reliability: hostile HTTP"
# The copy overload.sh took right after its build (the shared target dir's binary may be another
# worktree's by now).
/usr/bin/python3 scripts/hostile.py --helios "${OVERLOAD_BIN_DIR:-${OVERLOAD_RUN:-$HELIOS_CACHE/run-overload}/bin}/helios" \
  --json "$HELIOS_CACHE/run-hostile.json" --log "$HELIOS_CACHE/run-hostile.log" || fail=1
exit "$fail"
