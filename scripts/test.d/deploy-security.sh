#!/usr/bin/env bash
# Security checks on the real processes (issue 12, security items; issue 11, operations):
#   1. the appliance's admin port listens on 127.0.0.1 unless configured: in a network namespace of
#      this test (its own port space, plus a second address on a veth pair inside it), the default
#      admin listener is 127.0.0.1:9100, refuses connections on the node's other address while the
#      bid port accepts them there, and only an explicit `admin.listen` widens it; --print-config
#      says so.
#   2. secrets are never logged: the appliance (notice HMAC key; a password in its Redis URLs,
#      against a Redis that requires it) and the reporter (JWT secret; a password in its
#      PostgreSQL URL; the tokens it is shown) run at debug level through bids, notices, scrapes
#      and API calls, then stop; none of the secrets appears in their stdout/stderr, in
#      --print-config or /debug/config, or in `--help` (which prints environment values).
#   (TLS between services — the appliance and the reporter against TLS-only Redis and
#   PostgreSQL, a wrong CA refused — is scripts/test.d/deploy-tls.sh.)
# Own ports, run dir and services (a Redis with a password); every process
# started here is stopped by PID. Needs the helios binary (and the reporter's for its part).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"

if ! helios=$(dl_find_helios); then
  echo "skipped: security checks (the helios binary is not built)"
  exit 0
fi
base=${HELIOS_DEPLOY_TEST_RUN:-$HELIOS_CACHE/run-deploy-test/security-$$}
rm -rf "$base"
mkdir -p "$base"
campaigns=$root/deploy/testing/campaigns.json
req=$root/deploy/testing/bid-request.json
ns=hs$(($$ % 100000))
ns_made=""
cleanup() {
  dl_stop_all
  if [[ -n "$ns_made" ]]; then ip netns del "$ns" 2>/dev/null || true; fi
  if [[ -n "${rep_db:-}" ]]; then
    psql -h "${pg_hp%:*}" -p "${pg_hp##*:}" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $rep_db WITH (FORCE)" >/dev/null 2>&1 || true
    psql -h "${pg_hp%:*}" -p "${pg_hp##*:}" -U postgres -d postgres -qc "DROP ROLE IF EXISTS $rep_db" >/dev/null 2>&1 || true
  fi
  if [[ -n "${clean_base:-}" ]]; then rm -rf "$base"; fi
}
trap cleanup EXIT
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
pg_hp=${HELIOS_PG_URL#*@}
pg_hp=${pg_hp%%/*}
# Environment of the appliance without any admin/bid address from the caller's environment.
clean_env=(env -u HELIOS_ADMIN_LISTEN -u HELIOS_SERVER_LISTEN -u HELIOS_CONFIG)

echo "-- security: the admin port is on loopback unless configured"
if [[ $EUID -eq 0 ]] && ip netns add "$ns" 2>/dev/null; then
  ns_made=1
  other=10.213.79.1
  ip -n "$ns" link set lo up
  # A second address in the namespace (on a veth pair inside it: no interface outside changes).
  ip -n "$ns" link add v0 type veth peer name v1
  ip -n "$ns" addr add "$other/24" dev v0
  ip -n "$ns" link set v0 up
  ip -n "$ns" link set v1 up
  inns() { ip netns exec "$ns" "$@"; }
  listening() { inns ss -Hltn "sport = :$1" | awk '{print $4}' | sort -u | paste -sd' '; }
  wait_listen() { for _ in $(seq 1 150); do [[ -n "$(listening "$1")" ]] && return 0; sleep 0.2; done; return 1; }
  dl_start sec_default "$base/admin-default.log" ip netns exec "$ns" "${clean_env[@]}" HELIOS_EVENTS_ENABLED=false \
    "$helios" --campaigns "$campaigns" --cores 0
  pid_sec_default=${DL_PIDS[-1]}
  wait_listen 9100 || true
  wait_listen 8080 || true
  dl_check "with no admin address configured, the admin listener is 127.0.0.1:9100 only" "127.0.0.1:9100" "$(listening 9100)"
  dl_check "the admin port answers on loopback (/healthz)" 200 "$(inns curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9100/healthz)"
  dl_check "the admin port refuses connections on the node's other address" 7 "$(inns curl -s -o /dev/null -m 2 "http://$other:9100/metrics"; echo $?)"
  dl_check_true "the bid port is reachable on that address (so the refusal is the admin bind)" \
    test "$(inns curl -s -o /dev/null -w '%{http_code}' -m 2 -d @"$req" "http://$other:8080/openrtb2/bid")" != 000
  dl_stop_pid "$pid_sec_default"
  for _ in $(seq 1 50); do [[ -z "$(listening 9100)" ]] && break; sleep 0.1; done
  dl_start sec_wide "$base/admin-wide.log" ip netns exec "$ns" "${clean_env[@]}" HELIOS_EVENTS_ENABLED=false \
    HELIOS_ADMIN_LISTEN="0.0.0.0:9100" "$helios" --campaigns "$campaigns" --cores 0
  pid_sec_wide=${DL_PIDS[-1]}
  wait_listen 9100 || true
  dl_check "admin.listen = 0.0.0.0:9100 (configured) widens it" "0.0.0.0:9100" "$(listening 9100)"
  dl_check "then the admin port answers on the other address" 200 "$(inns curl -s -o /dev/null -w '%{http_code}' -m 2 "http://$other:9100/healthz")"
  dl_stop_pid "$pid_sec_wide"
else
  echo "skipped: admin bind in a network namespace (needs root and CAP_SYS_ADMIN)"
fi
pc=$("${clean_env[@]}" "$helios" --campaigns "$campaigns" --print-config)
dl_check "--print-config: admin.listen defaults to 127.0.0.1:9100" '"127.0.0.1:9100"' \
  "$(awk '/^\[admin\]/ {a = 1; next} /^\[/ {a = 0} a && $1 == "listen" {print $3}' <<<"$pc")"

echo "-- security: secrets never logged (appliance)"
notice_key=sec-notice-key-5d1f0c7e9a2b48e6b3c4
redis_pw=sec-redis-pw-8b2e4d6f1a3c5e7092
jwt_secret=sec-jwt-secret-3f7a1c9e5b2d4068a1b3c5d7
pg_pw=sec-pg-pw-6e4c2a0f8d1b3957
rport=$(dl_free_port 26480)
dl_start sec_redis "$base/redis-pw.log" redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
  --requirepass "$redis_pw" --dir "$base"
dl_wait_port "$rport" 10
rurl="redis://:$redis_pw@127.0.0.1:$rport/"
dl_check "the test's Redis refuses a client without the password" 1 \
  "$(redis-cli -p "$rport" --no-auth-warning get x 2>&1 | grep -c NOAUTH)"
bid=$(dl_free_port 26481)
admin=$(dl_free_port 26482)
kafka_hp=${HELIOS_KAFKA_BROKERS%%,*}
events=(HELIOS_EVENTS_ENABLED=false)
if port_open "${kafka_hp%:*}" "${kafka_hp##*:}"; then
  events=(HELIOS_EVENTS_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_EVENTS_SPOOL_DIR="$base/spool")
fi
app_env=(HELIOS_NOTICES_KEY="$notice_key" HELIOS_PROFILES_REDIS_URL="$rurl" HELIOS_EVENTS_FREQUENCY_REDIS_URL="$rurl"
  HELIOS_LOG_LEVEL=debug HELIOS_SERVER_LISTEN="127.0.0.1:$bid" HELIOS_ADMIN_LISTEN="127.0.0.1:$admin" "${events[@]}")
dl_start sec_app "$base/appliance.log" env "${app_env[@]}" "$helios" --campaigns "$campaigns" --cores 0
pid_sec_app=${DL_PIDS[-1]}
source "$root/scripts/deploy-appliance.sh"
dl_check_true "the appliance is ready (its profile replica loaded through the password-protected Redis)" \
  da_wait_ready 127.0.0.1 "$admin" 30
B=http://127.0.0.1:$bid
resp=$(curl -s -d @"$req" "$B/openrtb2/bid")
# What an exchange does with the macros (curl -g: the URL is used as it is, no globbing).
# shellcheck disable=SC2016 # the macros are literal text
nurl=$(jq -r '.seatbid[0].bid[0].nurl // empty' <<<"$resp" | sed -e 's/\${AUCTION_PRICE}/2.10/' \
  -e 's/\${AUCTION_CURRENCY}/USD/' -e 's/\${AUCTION_ID}/sec-1/' -e 's/\${AUCTION_IMP_ID}/1/')
dl_check_true "the bid carries a signed win notice URL" test -n "$nurl"
path=/${nurl#*://*/}
dl_check "the signed win notice is accepted" 204 "$(curl -sg -o /dev/null -w '%{http_code}' "$B$path")"
dl_check "a forged notice is rejected" 400 "$(curl -s -o /dev/null -w '%{http_code}' "$B/notice/win?p=1.5&s=AAAA")"
for _ in $(seq 1 50); do curl -s -o /dev/null -d @"$req" "$B/openrtb2/bid"; done
# Personal data: a request carrying distinctive user ids, device id and IP, bid on at debug level.
pii_user=pii-user-5c1e0b7d pii_buyer=pii-buyer-93aa04f2 pii_ifa=pii-ifa-0d6f1b3c pii_ip=203.0.113.77
jq -c --arg u "$pii_user" --arg b "$pii_buyer" --arg f "$pii_ifa" --arg i "$pii_ip" \
  '.user.id = $u | .user.buyeruid = $b | .device.ifa = $f | .device.ip = $i' "$req" >"$base/pii.json"
for _ in $(seq 1 20); do curl -s -o /dev/null -d @"$base/pii.json" "$B/openrtb2/bid"; done
curl -s "http://127.0.0.1:$admin/metrics" >/dev/null
dbg=$(curl -s "http://127.0.0.1:$admin/debug/config")
pc=$(env "${app_env[@]}" "$helios" --campaigns "$campaigns" --print-config)
hlp=$(env "${app_env[@]}" "$helios" --help)
dl_stop_pid "$pid_sec_app"
secret_free() { # what text → passes when none of the appliance's secrets is in text
  ! grep -qF -e "$notice_key" -e "$redis_pw" <<<"$2"
}
dl_check_true "the appliance logged at debug level (JSON lines)" grep -q '"level":"DEBUG"' "$base/appliance.log"
dl_check_true "no appliance secret (notice key, Redis password) in its stdout/stderr" secret_free log "$(cat "$base/appliance.log")"
dl_check_true "no appliance secret in /debug/config" secret_free debug "$dbg"
dl_check_true "no personal data (user.id, buyeruid, device.ifa, device.ip) in the appliance's log" \
  bash -c '! grep -qF -e "$1" -e "$2" -e "$3" -e "$4" "$5"' _ "$pii_user" "$pii_buyer" "$pii_ifa" "$pii_ip" "$base/appliance.log"
dl_check_true "/debug/config is the configuration (it names the Redis host)" grep -q "127.0.0.1:$rport" <<<"$dbg"
dl_check_true "no appliance secret in --print-config" secret_free print "$pc"
dl_check_true "no appliance secret in --help" secret_free help "$hlp"

echo "-- security: secrets never logged (reporter)"
if reporter=$(dl_find_reporter) && port_open "${pg_hp%:*}" "${pg_hp##*:}"; then
  rep_db=helios_sec_$$
  # A role of its own with a known password (as the superuser scripts/services.sh sets up).
  psql -h "${pg_hp%:*}" -p "${pg_hp##*:}" -U postgres -d postgres -qc "CREATE ROLE $rep_db LOGIN PASSWORD '$pg_pw'" >/dev/null
  psql -h "${pg_hp%:*}" -p "${pg_hp##*:}" -U postgres -d postgres -qc "CREATE DATABASE $rep_db OWNER $rep_db" >/dev/null
  pgurl="postgres://$rep_db:$pg_pw@$pg_hp/$rep_db"
  rp=$(dl_free_port 26483)
  rep_env=(HELIOS_PG_URL="$pgurl" HELIOS_JWT_SECRET="$jwt_secret" HELIOS_LOG=debug HELIOS_REPORTER_LISTEN="127.0.0.1:$rp"
    HELIOS_KAFKA_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_REPORTER_GROUP="helios-sec-$$" HELIOS_CAMPAIGNS_REDIS_URL="$rurl")
  dl_start sec_rep "$base/reporter.log" env "${rep_env[@]}" "$reporter"
  pid_sec_rep=${DL_PIDS[-1]}
  R=http://127.0.0.1:$rp
  for _ in $(seq 1 150); do [[ "$(curl -s -o /dev/null -w '%{http_code}' "$R/healthz")" == 200 ]] && break; sleep 0.2; done
  dl_check "the reporter is up (PostgreSQL reached with the password URL)" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$R/healthz")"
  tok=$(env "${rep_env[@]}" "$reporter" token --role operator --ttl 10m --sub sec-test)
  dl_check "an operator token is accepted" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" "$R/api/v1/me")"
  dl_check "a forged token is refused" 401 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${tok%.*}.AAAA" "$R/api/v1/me")"
  dl_check "campaign management through the password-protected Redis" 200 "$(curl -s -o /dev/null -w '%{http_code}' \
    -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -d '{"advertiser_id":7,"name":"Sec"}' "$R/api/v1/advertisers")"
  curl -s "$R/metrics" >/dev/null
  sleep 2 # a batch window or two of ingest at debug level
  rhelp=$(env "${rep_env[@]}" "$reporter" --help)
  dl_stop_pid "$pid_sec_rep"
  rep_free() { ! grep -qF -e "$jwt_secret" -e "$pg_pw" -e "$redis_pw" -e "$tok" <<<"$1"; }
  dl_check_true "the reporter logged at debug level" grep -qi '"level":"DEBUG"' "$base/reporter.log"
  dl_check_true "no reporter secret (JWT secret, PostgreSQL and Redis passwords, the token) in its stdout/stderr" \
    rep_free "$(cat "$base/reporter.log")"
  dl_check_true "no reporter secret in its --help (which shows environment values)" rep_free "$rhelp"
else
  echo "skipped: reporter secrets (no helios-reporter binary, or PostgreSQL at $pg_hp is not running)"
fi

# Logs stay under $base when something failed.
dl_summary && clean_base=1
