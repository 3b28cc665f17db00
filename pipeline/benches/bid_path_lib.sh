# Set-up shared by bid_path_cpu.sh and bid_path_callgrind.sh (sourced, not run): the run's own
# services (Redis on HELIOS_REDIS_PORT, default 6403, and a Tansu broker on HELIOS_KAFKA_PORT,
# default 9103, under HELIOS_RUN, default /var/cache/helios/run-pipeline — never the caller's
# service URLs), the binaries' check, the VARIANTS list, stopping by PID, port waits and the
# request corpus. The caller has `set -euo pipefail` and sets BP_TAG (its log prefix) before
# sourcing, then BIN and OUT before calling the functions. Every process started here (or held in
# `server_pid`) is stopped by PID on exit.
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
export HELIOS_RUN=${HELIOS_RUN:-/var/cache/helios/run-pipeline}
export HELIOS_REDIS_PORT=${HELIOS_REDIS_PORT:-6403}
export HELIOS_KAFKA_PORT=${HELIOS_KAFKA_PORT:-9103}
unset HELIOS_REDIS_URL HELIOS_KAFKA_BROKERS HELIOS_PG_URL
# shellcheck source=/dev/null
source scripts/env.sh

log() { printf '[%s %s] %s\n' "$BP_TAG" "$(date -u +%H:%M:%S)" "$*" >&2; }

bp_need_bins() { # name...: each of $BIN/name must be built
  local b
  for b in "$@"; do
    [[ -x $BIN/$b ]] || { echo "missing $BIN/$b (cargo build --release --workspace --bins)" >&2; exit 1; }
  done
}

# One entry of VARIANTS ("name=dir[,VAR=value…]"): BP_VDIR (where its helios is) and BP_VENV (an
# array of its VAR=value settings).
# shellcheck disable=SC2034 # both are read by the caller
bp_variant() { # entry
  local d=${1#*=}
  BP_VDIR=${d%%,*}
  BP_VENV=()
  if [[ $d == *,* ]]; then IFS=',' read -r -a BP_VENV <<<"${d#*,}"; fi
}

server_pid=""
broker_pid=""
redis_pid=""
stop_pid() { # pid [seconds]: TERM, wait up to seconds (5), then KILL
  local p=$1 i
  [[ -n $p ]] || return 0
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < ${2:-5} * 10; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  wait "$p" 2>/dev/null || true
}
bp_cleanup() {
  stop_pid "$server_pid" "${BP_SERVER_STOP_S:-5}"
  stop_pid "$broker_pid"
  stop_pid "$redis_pid"
}
trap bp_cleanup EXIT

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Redis (no persistence) in $HELIOS_RUN/redis-<dirs> and a fresh Tansu broker with the given
# storage engine in $HELIOS_RUN/kafka-<dirs>, logs in $OUT; then the corpus $OUT/corpus.jsonl
# (20,000 requests, seed 1, 100,000 plain user ids).
bp_start_services() { # dirs storage
  mkdir -p "$HELIOS_RUN/redis-$1" "$HELIOS_RUN/kafka-$1"
  redis-server --port "$HELIOS_REDIS_PORT" --bind 127.0.0.1 --dir "$HELIOS_RUN/redis-$1" --save "" \
    --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 &
  redis_pid=$!
  wait_port "$HELIOS_REDIS_PORT" 10 || { echo "redis did not start" >&2; exit 1; }
  rm -rf "${HELIOS_RUN:?}/kafka-$1"/*
  (cd "$HELIOS_RUN/kafka-$1" && exec tansu broker --listener-url "tcp://127.0.0.1:$HELIOS_KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$HELIOS_KAFKA_PORT" --storage-engine "$2" \
    >"$OUT/tansu.log" 2>&1) &
  broker_pid=$!
  wait_port "$HELIOS_KAFKA_PORT" 30 || { echo "tansu did not start" >&2; exit 1; }
  "$BIN/helios-corpus" -n 20000 --seed 1 --users 100000 --user-ids plain -o "$OUT/corpus.jsonl" >/dev/null
}
