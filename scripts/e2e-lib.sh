# Shell helpers shared by the browser end-to-end tests (sourced, not run): a fresh database per
# run, a JWT secret, and helios-reporter started and stopped by PID. Needs scripts/env.sh sourced
# first (HELIOS_RUN, HELIOS_PG_PORT, CARGO_TARGET_DIR) and `set -euo pipefail` in the caller.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"

E2E_REPORTER_PID=

e2e_fresh_db() { # name: drop and create database `name` owned by helios; prints its URL
  local admin="postgres://postgres@127.0.0.1:$HELIOS_PG_PORT/postgres"
  psql "$admin" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >&2
  psql "$admin" -qc "CREATE DATABASE $1 OWNER helios" >&2
  echo "postgres://helios:helios@127.0.0.1:$HELIOS_PG_PORT/$1"
}

e2e_jwt_secret() { # prints the path of a new random JWT secret file in $HELIOS_RUN
  local f="$HELIOS_RUN/jwt.secret"
  head -c 48 /dev/urandom | base64 | tr -d '\n' >"$f"
  echo "$f"
}

e2e_start_reporter() { # api_port args...: start helios-reporter, wait up to 20 s for /healthz
  local port=$1 log="$HELIOS_RUN/reporter.log"
  shift
  "$CARGO_TARGET_DIR/debug/helios-reporter" --listen "127.0.0.1:$port" "$@" 2>"$log" &
  E2E_REPORTER_PID=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    e2e_reporter_alive || return 1
    sleep 0.2
  done
  echo "reporter did not answer /healthz within 20 s" >&2
  return 1
}

e2e_reporter_alive() { # fails, with the log's tail, when the reporter has exited
  kill -0 "$E2E_REPORTER_PID" 2>/dev/null && return 0
  echo "reporter exited:" >&2
  tail -20 "$HELIOS_RUN/reporter.log" >&2
  return 1
}

e2e_stop_reporter() {
  [[ -n "$E2E_REPORTER_PID" ]] && dl_stop_pid "$E2E_REPORTER_PID"
  E2E_REPORTER_PID=
}
