# Shell helpers shared by the browser end-to-end tests (sourced, not run): the suite's own
# environment, a fresh database per run, a JWT secret, and helios-reporter started and stopped by
# PID. Needs `set -euo pipefail` in the caller, and either scripts/env.sh sourced first
# (HELIOS_RUN, HELIOS_PG_PORT, CARGO_TARGET_DIR) or e2e_setup called.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"

E2E_REPORTER_PID=
E2E_SERVICES=()

# A browser suite's environment, once it has exported HELIOS_RUN and the ports of the services it
# names: each service's URL derived from its port (the caller's own service URLs must not leak
# in), scripts/env.sh, the run dir and $artifacts ($HELIOS_CACHE/artifacts) made, Chromium
# checked, and an exit trap that stops the reporter and those services by PID.
e2e_setup() { # suite service... (postgres, redis, kafka)
  local suite=$1 svc
  shift
  E2E_SERVICES=("$@")
  for svc in "$@"; do
    case $svc in
      postgres) export HELIOS_PG_URL="postgres://helios:helios@127.0.0.1:$HELIOS_PG_PORT/helios" ;;
      redis) export HELIOS_REDIS_URL="redis://127.0.0.1:$HELIOS_REDIS_PORT/" ;;
      kafka) export HELIOS_KAFKA_BROKERS="127.0.0.1:$HELIOS_KAFKA_PORT" ;;
      *) echo "e2e_setup: unknown service $svc" >&2; return 1 ;;
    esac
  done
  source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
  artifacts="$HELIOS_CACHE/artifacts"
  mkdir -p "$HELIOS_RUN" "$artifacts"
  [[ -x /usr/bin/chromium ]] || { echo "$suite: /usr/bin/chromium missing (scripts/deps.sh installs it)" >&2; exit 1; }
  trap e2e_cleanup EXIT
}

e2e_cleanup() { # the exit trap of e2e_setup
  e2e_stop_reporter
  scripts/services.sh stop "${E2E_SERVICES[@]}" >/dev/null 2>&1 || true
}

e2e_build() { # suite [build-dashboard.sh option...]: the dashboard and the workspace's binaries
  local suite=$1
  shift
  echo "$suite: building the dashboard and the reporter"
  scripts/build-dashboard.sh "$@"
  cargo build --workspace --bins --quiet
}

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

# --- Suites of three appliance nodes, each in a network namespace of its own, and a hub
# (scripts/netns-nodes.sh; names from HELIOS_NETNS_PREFIX): the namespaces, the exit trap, and
# the hub's Redis. Every process is started with dl_start (stopped by PID), then the namespaces go.

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

e2e_netns_or_skip() { # exits 0 with `skipped:` unless this process can make network namespaces
  if [[ $EUID -ne 0 ]] || ! ip netns add "$HELIOS_NETNS_PREFIX-probe" 2>/dev/null; then
    echo "skipped: network namespaces cannot be made here (needs root and CAP_SYS_ADMIN)"
    exit 0
  fi
  ip netns del "$HELIOS_NETNS_PREFIX-probe"
}

# The run dir (emptied) in $base, the three nodes' and the hub's namespaces made (the NETNS_*
# variables, HUB, inhub), and an exit trap that stops every process started by PID, the gateway
# and the namespaces, and removes $base when the suite set clean_base (everything passed).
e2e_three_nodes_up() { # base
  base=$1
  netns=$E2E_ROOT/scripts/netns-nodes.sh
  rm -rf "$base"
  mkdir -p "$base"
  eval "$("$netns" env 3)"
  HUB=$NETNS_HUB
  trap e2e_three_nodes_down EXIT
  "$netns" down >/dev/null 2>&1 || true
  "$netns" up 3 >/dev/null
}

inhub() { ip netns exec "$HUB" "$@"; }

e2e_three_nodes_down() { # the exit trap of e2e_three_nodes_up
  dl_stop_all
  HELIOS_GW_RUN=$base/gateway "$E2E_ROOT/scripts/gateway.sh" stop >/dev/null 2>&1 || true
  "$netns" down >/dev/null 2>&1 || true
  # the run dir (logs) goes only when everything passed
  if [[ -n "${clean_base:-}" ]]; then rm -rf "$base"; fi
}

# Redis for every node, in the hub on port 6390 (the hub has its own port space: the default
# ports cannot collide with the machine's services), no persistence.
e2e_hub_redis() {
  dl_start redis "$base/redis.log" ip netns exec "$HUB" redis-server --port 6390 --bind "127.0.0.1 $NETNS_HUB_ADDR" \
    --save "" --appendonly no --protected-mode no --dir "$base"
}

e2e_hub_wait_port() { # port seconds address: dl_wait_port inside the hub
  inhub bash -c "$(declare -f dl_wait_port); dl_wait_port $1 $2 $3"
}
