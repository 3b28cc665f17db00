# Shell helpers shared by the deploy tests (sourced, not run): processes started and stopped by PID,
# port waits, JWT minting, assertions with a pass/fail count.
# shellcheck shell=bash

DL_PIDS=()
DL_PASS=0
DL_FAIL=0

dl_start() { # name logfile cmd...: start in the background, remember the PID
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  DL_PIDS+=("$!")
  eval "DL_PID_${name//-/_}=$!"
}

dl_stop_pid() { # pid: TERM, wait up to 5 s, then KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

dl_stop_all() {
  local pid
  for pid in "${DL_PIDS[@]}"; do dl_stop_pid "$pid"; done
  DL_PIDS=()
}

dl_wait_port() { # port seconds [host]
  local i host=${3:-127.0.0.1}
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $host:$1 did not open within $2 s" >&2
  return 1
}

dl_port_busy() { # port: something listens on it in this network namespace (any address)
  [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]
}

# A free TCP port at or after base (tests run side by side on a shared machine: fixed ports would
# collide, and HAProxy's SO_REUSEPORT would even share one silently).
dl_free_port() { # base
  local p=$1
  while dl_port_busy "$p" || [[ " ${DL_PORTS_TAKEN:-} " == *" $p "* ]]; do p=$((p + 1)); done
  DL_PORTS_TAKEN="${DL_PORTS_TAKEN:-} $p"
  echo "$p"
}

dl_b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

dl_jwt() { # secret header_json payload_json → compact JWS signed with HMAC-SHA256
  local h p s
  h=$(printf '%s' "$2" | dl_b64url)
  p=$(printf '%s' "$3" | dl_b64url)
  s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "$1" -binary | dl_b64url)
  printf '%s.%s.%s' "$h" "$p" "$s"
}

dl_check() { # description expected actual
  if [[ "$2" == "$3" ]]; then
    DL_PASS=$((DL_PASS + 1))
    printf '  ok    %s\n' "$1"
  else
    DL_FAIL=$((DL_FAIL + 1))
    printf '  FAIL  %s: expected %s, got %s\n' "$1" "$2" "$3"
  fi
}

dl_check_true() { # description command...: passes when the command succeeds
  local d=$1
  shift
  if "$@"; then
    DL_PASS=$((DL_PASS + 1))
    printf '  ok    %s\n' "$d"
  else
    DL_FAIL=$((DL_FAIL + 1))
    printf '  FAIL  %s\n' "$d"
  fi
}

dl_summary() { # prints the closing count and returns non-zero on any failure
  printf '%d passed, %d failed\n' "$DL_PASS" "$DL_FAIL"
  ((DL_FAIL == 0))
}

# The appliance binary, when this tree has one and it has been built: $HELIOS_BIN, else the
# workspace target dirs (shared between worktrees: a binary there counts only when this tree's
# appliance crate has a main.rs).
dl_find_helios() {
  [[ -n "${HELIOS_BIN:-}" ]] || [[ -f "$(dirname "${BASH_SOURCE[0]}")/../appliance/src/main.rs" ]] || return 1
  [[ -n "${HELIOS_BIN:-}" ]] && { echo "$HELIOS_BIN"; return 0; }
  dl_newest_bin helios
}

dl_newest_bin() { # name: the newer of $CARGO_TARGET_DIR/{release,debug}/name (a stale build never wins)
  local r="$CARGO_TARGET_DIR/release/$1" d="$CARGO_TARGET_DIR/debug/$1"
  if [[ -x "$r" && ( ! -x "$d" || "$r" -nt "$d" ) ]]; then echo "$r"; return 0; fi
  [[ -x "$d" ]] && { echo "$d"; return 0; }
  return 1
}

# The reporter binary, on the same terms as dl_find_helios ($HELIOS_REPORTER_BIN, else the
# workspace target dirs when this tree's reporter crate has a main.rs).
dl_find_reporter() {
  [[ -n "${HELIOS_REPORTER_BIN:-}" ]] || [[ -f "$(dirname "${BASH_SOURCE[0]}")/../reporter/src/main.rs" ]] || return 1
  [[ -n "${HELIOS_REPORTER_BIN:-}" ]] && { echo "$HELIOS_REPORTER_BIN"; return 0; }
  dl_newest_bin helios-reporter
}

# Whether this workspace defines a binary target of that name (cargo metadata, offline).
dl_workspace_has_bin() {
  cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
    jq -e --arg b "$1" '[.packages[].targets[] | select(.kind == ["bin"] and .name == $b)] | length > 0' >/dev/null
}
