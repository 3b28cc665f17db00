#!/usr/bin/env bash
# Starts and stops the gateway (HAProxy from Debian) on loopback, as a process this script owns.
#   scripts/gateway.sh start     render the appliance backend, check the config, start, wait for the ports
#   scripts/gateway.sh stop      stop exactly the PID in $HELIOS_GW_RUN/haproxy.pid
#   scripts/gateway.sh status
#   scripts/gateway.sh check     render and `haproxy -c` only
# Settings (environment; defaults in brackets):
#   HELIOS_GW_RUN          state dir: pid, log, rendered backend, admin socket [$HELIOS_RUN/gateway]
#   HELIOS_GW_APPLIANCES   nodes, "host:port[/admin_port][@netns] ..." [127.0.0.1:8080/9100]
#   HELIOS_GW_TLS_PORT [8443], HELIOS_GW_HTTP_PORT [8088], HELIOS_GW_STATS_PORT [8404],
#   HELIOS_GW_BIND [127.0.0.1] (TLS), HELIOS_GW_HTTP_BIND [127.0.0.1]
#   HELIOS_GW_CERT         certificate+key PEM [dev certificate from scripts/dev-certs.sh]
#   HELIOS_GW_KEYS         API key map [deploy/haproxy/dev/api-keys.map — development keys only]
#   HELIOS_GW_LIMITS       per-exchange rate map [deploy/haproxy/dev/rate-limits.map]
#   HELIOS_GW_RATE         default requests/s per key [2000]
#   HELIOS_GW_REPORTER     reporter host:port [127.0.0.1:8090]
#   HELIOS_GW_MAXCONN      connection limit [half the fd limit, at most 20000]
#   HELIOS_JWT_SECRET      HS256 secret shared with the reporter; else read from
#   HELIOS_JWT_SECRET_FILE [$HELIOS_CACHE/secrets/jwt-hs256.secret, created with a random secret]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
source "$here/env.sh"

export HELIOS_GW_RUN=${HELIOS_GW_RUN:-$HELIOS_RUN/gateway}
export HELIOS_GW_APPLIANCES=${HELIOS_GW_APPLIANCES-127.0.0.1:8080/9100}
export HELIOS_GW_KEYS=${HELIOS_GW_KEYS:-$root/deploy/haproxy/dev/api-keys.map}
export HELIOS_GW_LIMITS=${HELIOS_GW_LIMITS:-$root/deploy/haproxy/dev/rate-limits.map}
# Two file descriptors per connection (client + server side): stay under the process's limit.
fds=$(ulimit -n)
[[ "$fds" == unlimited ]] && fds=65536
default_maxconn=$(((fds - 200) / 2))
((default_maxconn > 20000)) && default_maxconn=20000
export HELIOS_GW_MAXCONN=${HELIOS_GW_MAXCONN:-$default_maxconn}
pidfile=$HELIOS_GW_RUN/haproxy.pid
log=$HELIOS_GW_RUN/haproxy.log

prepare() {
  mkdir -p "$HELIOS_GW_RUN"
  chmod 700 "$HELIOS_GW_RUN"
  if [[ -z "${HELIOS_GW_CERT:-}" ]]; then
    HELIOS_GW_CERT="$("$here/dev-certs.sh")/server.pem"
  fi
  export HELIOS_GW_CERT
  if [[ -z "${HELIOS_JWT_SECRET:-}" ]]; then
    local f=${HELIOS_JWT_SECRET_FILE:-$HELIOS_CACHE/secrets/jwt-hs256.secret}
    if [[ ! -s "$f" ]]; then
      mkdir -p "$(dirname "$f")" && chmod 700 "$(dirname "$f")"
      (umask 077 && openssl rand -hex 32 >"$f")
    fi
    HELIOS_JWT_SECRET=$(<"$f")
  fi
  [[ "$HELIOS_JWT_SECRET" != *[\"\\]* ]] || { echo "gateway: HELIOS_JWT_SECRET must not contain '\"' or '\\'" >&2; exit 2; }
  export HELIOS_JWT_SECRET
  for f in "$HELIOS_GW_KEYS" "$HELIOS_GW_LIMITS"; do
    [[ -f "$f" ]] || { echo "gateway: map file $f missing" >&2; exit 2; }
  done
  "$root/deploy/haproxy/render-appliances.sh" "$HELIOS_GW_APPLIANCES" >"$HELIOS_GW_RUN/appliances.cfg"
  haproxy -c -q -f "$root/deploy/haproxy/haproxy.cfg" -f "$HELIOS_GW_RUN/appliances.cfg"
}

alive() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    alive || break
    sleep 0.1
  done
  echo "gateway: port $1 not open (log: $log)" >&2
  tail -20 "$log" >&2 || true
  return 1
}

case "${1:-status}" in
  check) prepare; echo "gateway: configuration valid" ;;
  start)
    alive && { echo "gateway: running (pid $(cat "$pidfile"))"; exit 0; }
    prepare
    # HAProxy binds with SO_REUSEPORT: a second gateway on the same port would share it silently.
    for p in "${HELIOS_GW_TLS_PORT:-8443}" "${HELIOS_GW_HTTP_PORT:-8088}" "${HELIOS_GW_STATS_PORT:-8404}"; do
      if [[ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]]; then
        echo "gateway: port $p is already in use: $(ss -Hltnp "sport = :$p" | head -1)" >&2
        exit 1
      fi
    done
    # -db: stay in the foreground (logs go to stdout), so $! is HAProxy itself.
    haproxy -db -f "$root/deploy/haproxy/haproxy.cfg" -f "$HELIOS_GW_RUN/appliances.cfg" >"$log" 2>&1 &
    echo $! >"$pidfile"
    wait_port "${HELIOS_GW_TLS_PORT:-8443}" 10
    wait_port "${HELIOS_GW_STATS_PORT:-8404}" 10
    wait_port "${HELIOS_GW_HTTP_PORT:-8088}" 10
    echo "gateway: up (pid $(cat "$pidfile")), TLS :${HELIOS_GW_TLS_PORT:-8443}, HTTP :${HELIOS_GW_HTTP_PORT:-8088}, stats/metrics :${HELIOS_GW_STATS_PORT:-8404}"
    ;;
  stop)
    if alive; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "gateway: stopped"
    ;;
  status) alive && echo "gateway: running (pid $(cat "$pidfile"))" || echo "gateway: stopped" ;;
  *) echo "usage: $0 start|stop|status|check" >&2; exit 2 ;;
esac
