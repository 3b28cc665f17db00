#!/usr/bin/env bash
# TLS between services (issue 12): the appliance and the reporter against TLS-only Redis and
# PostgreSQL, end to end, and a wrong CA refused with a clear error.
#   1. scripts/services.sh with HELIOS_SERVICES_TLS=1 starts Redis (TLS only) and PostgreSQL
#      (TCP only over TLS) on ports of this test, with a dev CA of this test's run dir; both
#      refuse plain text.
#   2. the reporter (API mode) reaches PostgreSQL with sslmode=verify-full&sslrootcert=<dev CA>
#      (pg_stat_ssl shows its sessions encrypted) and the campaign Redis over rediss:// with
#      --campaigns-redis-ca-file; a profile-targeted campaign is created through its API and
#      published to Redis over TLS.
#   3. the appliance with every Redis URL rediss:// and tls.redis_ca_file = the dev CA: it becomes
#      ready (campaign set from Redis, profile replica loaded), a bid request for the user whose
#      profile (written over TLS) is in the campaign's segment is answered with that campaign, a
#      user without the profile gets 204; the budget lease script ran over TLS (a lease held in
#      Redis); a billing notice increments the frequency counter in Redis over TLS.
#   4. a wrong CA (another dev CA) and no CA (the system trust store) are refused: the appliance
#      never becomes ready and logs "invalid peer certificate"; the reporter exits non-zero naming
#      the TLS handshake and the certificate, without the password; a missing CA file is a
#      config error naming tls.redis_ca_file (exit 2). Plain text to the TLS ports fails.
# Needs root (PostgreSQL runs as its user), redis-server, PostgreSQL and the helios and
# helios-reporter binaries ($HELIOS_BIN / $HELIOS_REPORTER_BIN or the workspace target dir).
# Every process started here is stopped by PID (services through scripts/services.sh stop).
# shellcheck disable=SC2016 # the bash -c scripts below take their arguments as $1, $2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"

if ! helios=$(dl_find_helios) || ! reporter=$(dl_find_reporter); then
  echo "skipped: TLS between services (the helios and helios-reporter binaries are not built)"
  exit 0
fi
if [[ $EUID -ne 0 ]] || ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  why="TLS between services (needs root, redis-server and PostgreSQL)"
  # make test (HELIOS_REQUIRE_SERVICES=1) fails rather than skips.
  if [[ "${HELIOS_REQUIRE_SERVICES:-0}" == 1 ]]; then echo "FAIL: $why" >&2; exit 1; fi
  echo "skipped: $why"
  exit 0
fi
base=${HELIOS_DEPLOY_TEST_RUN:-$HELIOS_CACHE/run-deploy-test/tls-$$}
rm -rf "$base"
mkdir -p "$base"
# The services of this test: own run dir and ports, TLS on.
svc_env=(env HELIOS_RUN="$base/run" HELIOS_SERVICES_TLS=1 HELIOS_CERTS="$base/certs"
  HELIOS_REDIS_PORT="$(dl_free_port 26600)" HELIOS_PG_PORT="$(dl_free_port 26610)")
rport=${svc_env[4]#*=}
pport=${svc_env[5]#*=}
cleanup() {
  dl_stop_all
  "${svc_env[@]}" "$root/scripts/services.sh" stop redis postgres >/dev/null 2>&1 || true
  if [[ -n "${clean_base:-}" ]]; then rm -rf "$base"; fi
}
trap cleanup EXIT

echo "-- tls: TLS-only Redis and PostgreSQL (scripts/services.sh, HELIOS_SERVICES_TLS=1)"
"${svc_env[@]}" "$root/scripts/services.sh" start redis postgres >"$base/services.log" 2>&1 || {
  cat "$base/services.log"
  exit 1
}
ca=$base/certs/ca.crt
rcli=(redis-cli --tls --cacert "$ca" -h localhost -p "$rport")
pg_pw=helios # scripts/services.sh's role
dl_check "Redis answers over TLS, verified against the dev CA" PONG "$("${rcli[@]}" ping 2>&1)"
dl_check_true "Redis refuses plain text" bash -c "! redis-cli -h 127.0.0.1 -p $rport ping 2>/dev/null | grep -q PONG"
dl_check "PostgreSQL answers over TLS (psql, verify-full)" t "$(PGPASSWORD=$pg_pw psql \
  "postgres://helios@localhost:$pport/helios?sslmode=verify-full&sslrootcert=$ca" -tAc \
  'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>&1)"
dl_check_true "PostgreSQL refuses plain TCP (sslmode=disable: pg_hba rejects 'no encryption')" bash -c \
  "PGPASSWORD=$pg_pw psql 'postgres://helios@127.0.0.1:$pport/helios?sslmode=disable' -tAc 'select 1' 2>&1 | grep -q 'no encryption'"

echo "-- tls: the reporter over TLS (PostgreSQL verify-full, Redis rediss://)"
jwt_secret=tls-test-jwt-secret-5b2d40681f7a1c9e3
pgurl="postgres://helios:$pg_pw@localhost:$pport/helios?sslmode=verify-full&sslrootcert=$ca"
rurl="rediss://localhost:$rport/"
rp=$(dl_free_port 26620)
rep_env=(HELIOS_PG_URL="$pgurl" HELIOS_JWT_SECRET="$jwt_secret" HELIOS_REPORTER_MODE=api
  HELIOS_REPORTER_LISTEN="127.0.0.1:$rp" HELIOS_CAMPAIGNS_REDIS_URL="$rurl" HELIOS_CAMPAIGNS_REDIS_CA_FILE="$ca"
  RUST_BACKTRACE=0)
dl_start tls_rep "$base/reporter.log" env "${rep_env[@]}" "$reporter"
pid_rep=${DL_PIDS[-1]}
R=http://127.0.0.1:$rp
for _ in $(seq 1 150); do [[ "$(curl -s -o /dev/null -w '%{http_code}' "$R/healthz")" == 200 ]] && break; sleep 0.2; done
dl_check "the reporter is up (migrations applied over TLS)" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$R/healthz")"
dl_check_true "its PostgreSQL sessions are encrypted (pg_stat_ssl)" bash -c \
  "[[ \$(psql -h '$base/run/postgres' -p $pport -U postgres -tAc \"SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'helios' AND s.ssl\") -ge 1 ]]"
tok=$(env "${rep_env[@]}" "$reporter" token --role operator --ttl 10m --sub tls-test)
api() { curl -s -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' "$@"; }
dl_check "the API answers (operator token)" 200 "$(api -o /dev/null -w '%{http_code}' "$R/api/v1/me")"
dl_check "an advertiser is created (PostgreSQL, then a publish to Redis over TLS)" true \
  "$(api -d '{"advertiser_id":7,"name":"TLS"}' "$R/api/v1/advertisers" | jq -r .published)"
campaign='{"id":301,"advertiser_id":7,"name":"TLS segment 512","status":"active","bid_cpm_micros":3000000,
 "total_budget_micros":1000000000,"targeting":{"segments":[512],"min_segment_weight":300},
 "creatives":[{"id":1,"format":{"type":"banner","w":300,"h":250},"adomain":["example.org"],"adm":"<a>ad</a>"}]}'
dl_check "a profile-targeted campaign is created and published over TLS" true \
  "$(api -d "$campaign" "$R/api/v1/campaigns" | jq -r .published)"
set_json=$(api "$R/api/v1/campaign-set")
dl_check "Redis holds the stored set version ($set_json)" true \
  "$(jq '.version >= 2 and .published_version == .version' <<<"$set_json")"

echo "-- tls: the appliance over rediss:// (profiles, campaign feed, budget leases, frequency)"
"${rcli[@]}" hset helios:profile:tls-user seg "512:900" >/dev/null
"${rcli[@]}" xadd helios:profile:changes '*' k tls-user >/dev/null
bid=$(dl_free_port 26621)
admin=$(dl_free_port 26622)
app_env=(HELIOS_PROFILES_REDIS_URL="$rurl" HELIOS_BIDDING_CAMPAIGNS_REDIS_URL="$rurl"
  HELIOS_EVENTS_FREQUENCY_REDIS_URL="$rurl" HELIOS_TLS_REDIS_CA_FILE="$ca"
  HELIOS_EVENTS_BROKERS=127.0.0.1:1 HELIOS_EVENTS_STARTUP_TIMEOUT_MS=300 HELIOS_EVENTS_SPOOL_DIR="$base/spool"
  HELIOS_NOTICES_KEY=tls-test-notice-key-0123456789abcdef HELIOS_SERVER_NODE=tlsnode HELIOS_SERVER_CORES=0
  HELIOS_SERVER_LISTEN="127.0.0.1:$bid" HELIOS_ADMIN_LISTEN="127.0.0.1:$admin" HELIOS_LOG_LEVEL=info)
dl_start tls_app "$base/appliance.log" env "${app_env[@]}" "$helios"
pid_app=${DL_PIDS[-1]}
source "$root/scripts/deploy-appliance.sh"
dl_check_true "the appliance is ready (campaign set from Redis and profile replica, both over TLS)" \
  da_wait_ready 127.0.0.1 "$admin" 30
dl_check_true "/readyz names the set version from Redis" bash -c \
  "curl -s http://127.0.0.1:$admin/readyz | grep -q 'campaign_set_version [1-9]'"
B=http://127.0.0.1:$bid
jq -c '.user.id = "tls-user"' "$root/deploy/testing/bid-request.json" >"$base/req-seg.json"
resp=$(curl -s -d @"$base/req-seg.json" "$B/openrtb2/bid")
dl_check "a bid for the user in segment 512 is answered with the profile-targeted campaign" 301 \
  "$(jq -r '.seatbid[0].bid[0].cid // empty' <<<"$resp")"
dl_check "a user without that profile gets no bid (the campaign needs the segment)" 204 \
  "$(curl -s -o /dev/null -w '%{http_code}' -d @"$root/deploy/testing/bid-request.json" "$B/openrtb2/bid")"
for _ in $(seq 1 50); do
  [[ -n "$("${rcli[@]}" hget 'helios:budget:{301}:leases' tlsnode:0)" ]] && break
  sleep 0.2
done
dl_check_true "the budget lease script ran over TLS (lease of tlsnode:0 in Redis)" \
  test -n "$("${rcli[@]}" hget 'helios:budget:{301}:leases' tlsnode:0)"
# shellcheck disable=SC2016 # the macros are literal text
burl=$(jq -r '.seatbid[0].bid[0].burl // empty' <<<"$resp" | sed -e 's/\${AUCTION_PRICE}/2.10/' \
  -e 's/\${AUCTION_CURRENCY}/USD/' -e 's/\${AUCTION_ID}/tls-1/' -e 's/\${AUCTION_IMP_ID}/1/')
dl_check "the billing notice is accepted" 204 "$(curl -sg -o /dev/null -w '%{http_code}' "$B/${burl#*://*/}")"
freq=""
for _ in $(seq 1 50); do
  freq=$("${rcli[@]}" hgetall helios:profile:tls-user | grep -c '^f:301:' || true)
  [[ "$freq" == 1 ]] && break
  sleep 0.2
done
dl_check "the frequency counter was written to Redis over TLS" 1 "$freq"
dl_check "no Redis error on the control thread" 0 \
  "$(curl -s "http://127.0.0.1:$admin/metrics" | awk '$1 == "helios_campaign_feed_redis_errors_total" {print $2}')"
dl_stop_pid "$pid_app"
dl_stop_pid "$pid_rep"

echo "-- tls: a wrong CA, or none, is refused with a clear error"
HELIOS_CERTS=$base/other-ca "$root/scripts/dev-certs.sh" >/dev/null
wrong=$base/other-ca/ca.crt
refused_app() { # name log_pattern env...: the appliance never gets ready and logs the pattern
  local name=$1 pattern=$2 log=$base/appliance-$1.log b a
  shift 2
  b=$(dl_free_port 26630)
  a=$(dl_free_port 26631)
  dl_start "tls_app_$name" "$log" env "${app_env[@]}" HELIOS_EVENTS_ENABLED=false \
    HELIOS_SERVER_LISTEN="127.0.0.1:$b" HELIOS_ADMIN_LISTEN="127.0.0.1:$a" "$@" "$helios"
  local pid=${DL_PIDS[-1]} code=""
  sleep 3
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$a/readyz")
  dl_stop_pid "$pid"
  dl_check "appliance, $name: not ready (/readyz)" 503 "$code"
  dl_check_true "appliance, $name: logs why ($(grep -o -m1 '"error":"[^"]*' "$log" || echo none))" \
    grep -q "\"error\":\"$pattern" "$log"
}
refused_app wrong-ca 'invalid peer certificate' HELIOS_TLS_REDIS_CA_FILE="$wrong"
refused_app system-store 'invalid peer certificate' HELIOS_TLS_REDIS_CA_FILE=
# redis:// (plain) to the TLS port: the server drops the session, nothing is read in plain text.
refused_app plain-to-tls '' HELIOS_PROFILES_REDIS_URL="redis://localhost:$rport/" \
  HELIOS_BIDDING_CAMPAIGNS_REDIS_URL="redis://localhost:$rport/"
out=$(env "${app_env[@]}" HELIOS_TLS_REDIS_CA_FILE="$base/no-such-ca.crt" HELIOS_EVENTS_ENABLED=false \
  timeout 20 "$helios" --print-config 2>&1) && rc=0 || rc=$?
dl_check "appliance, missing CA file: config error (exit 2)" 2 "$rc"
dl_check_true "and names the key ($(head -c 120 <<<"$out"))" grep -q 'tls.redis_ca_file' <<<"$out"
out=$(env "${rep_env[@]}" HELIOS_PG_URL="${pgurl%%sslrootcert=*}sslrootcert=$wrong" \
  HELIOS_REPORTER_LISTEN="127.0.0.1:$(dl_free_port 26632)" timeout 20 "$reporter" 2>&1) && rc=0 || rc=$?
dl_check_true "reporter, wrong CA for PostgreSQL: exits non-zero (rc $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
dl_check_true "and says why: TLS handshake, invalid peer certificate ($(grep -m1 -o 'invalid peer certificate.*' <<<"$out" || echo none))" \
  bash -c 'grep -q "TLS handshake" <<<"$1" && grep -q "invalid peer certificate" <<<"$1"' _ "$out"
dl_check_true "without the password" bash -c '! grep -qF ":$2@" <<<"$1"' _ "$out" "$pg_pw"
out=$(env "${rep_env[@]}" HELIOS_PG_URL="postgres://helios:$pg_pw@localhost:$pport/helios?sslmode=verify-full" \
  HELIOS_REPORTER_LISTEN="127.0.0.1:$(dl_free_port 26633)" timeout 20 "$reporter" 2>&1) && rc=0 || rc=$?
dl_check_true "reporter, system trust store (the dev CA is not in it): refused (rc $rc, $(grep -m1 -o 'invalid peer certificate.*' <<<"$out" || echo none))" \
  bash -c '[[ $2 -ne 0 && $2 -ne 124 ]] && grep -q "invalid peer certificate" <<<"$1"' _ "$out" "$rc"
# Logs stay under $base when something failed.
dl_summary && clean_base=1
