#!/usr/bin/env bash
# make soak: the long forms of the reliability suite (issue 12, docs/RELIABILITY.md), bounded.
#   1. every `#[ignore]`d long test of the workspace (e.g. the 60 s broker outage,
#      pipeline/tests/kafka.rs) on its own Redis, PostgreSQL and broker (own run dir and ports,
#      overridable through the usual HELIOS_* variables), HELIOS_REQUIRE_SERVICES=1; bounded by
#      SOAK_SECONDS (default 900);
#   2. the whole-chain faults in their long form (scripts/chaos.sh, release build: broker stopped
#      60 s, Redis restarted, PostgreSQL restarted, reporter SIGKILLed, appliance SIGKILLed with the
#      broker up and while spooling), on the harness's own services, with 0.20 USD budgets that at
#      least six campaigns exhaust (the budget check bites); bounded by SOAK_CHAOS_SECONDS
#      (default 1200);
#   3. overload: 3 × measured capacity for 60 s (scripts/overload.sh, release); bounded by 300 s.
# Services are stopped by PID; exits non-zero on any failure or timeout (every step runs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export HELIOS_RUN=${HELIOS_RUN:-/var/cache/helios/run-soak}
export HELIOS_REDIS_PORT=${HELIOS_REDIS_PORT:-6397}
export HELIOS_PG_PORT=${HELIOS_PG_PORT:-5448}
export HELIOS_KAFKA_PORT=${HELIOS_KAFKA_PORT:-9098}
export HELIOS_REL_PG_PORT=${HELIOS_REL_PG_PORT:-5449}
source scripts/env.sh
export HELIOS_REQUIRE_SERVICES=1
mkdir -p "$HELIOS_RUN"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
scripts/services.sh start
echo "soak: long forms (bounded by ${SOAK_SECONDS:-900} s)"
fail=0
timeout --signal=INT --kill-after=30 "${SOAK_SECONDS:-900}" \
  cargo nextest run --workspace --run-ignored only --no-fail-fast || fail=1
scripts/services.sh stop >/dev/null 2>&1 || true
echo "soak: whole-chain faults, long forms (bounded by ${SOAK_CHAOS_SECONDS:-1200} s)"
CHAOS_PROFILE=release CHAOS_BUDGET_MICROS=${CHAOS_BUDGET_MICROS:-200000} \
  CHAOS_BUDGET_EXHAUSTED_MIN=${CHAOS_BUDGET_EXHAUSTED_MIN:-6} timeout --signal=TERM --kill-after=60 "${SOAK_CHAOS_SECONDS:-1200}" \
  scripts/chaos.sh none broker redis postgres reporter-kill appliance-kill-spooling appliance-kill || fail=1
echo "soak: overload, 3 x capacity for 60 s (bounded by 300 s)"
OVERLOAD_PROFILE=release timeout --signal=TERM --kill-after=30 300 scripts/overload.sh || fail=1
exit "$fail"
