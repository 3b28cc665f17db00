#!/usr/bin/env bash
# make soak: the long forms of the reliability suite (issue 12, docs/RELIABILITY.md), bounded.
# Starts its own Redis, PostgreSQL and broker (own run dir and ports, overridable through the usual
# HELIOS_* variables), runs every `#[ignore]`d long test of the workspace (e.g. the 60 s broker
# outage, pipeline/tests/kafka.rs) with HELIOS_REQUIRE_SERVICES=1, and stops the services by PID.
# The whole run is bounded by SOAK_SECONDS (default 900); exits non-zero on any failure or timeout.
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
timeout --signal=INT --kill-after=30 "${SOAK_SECONDS:-900}" \
  cargo nextest run --workspace --run-ignored only --no-fail-fast
