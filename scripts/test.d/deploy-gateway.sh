#!/usr/bin/env bash
# Gateway (HAProxy) tests: starts its own HAProxy on its own loopback ports and stops it by PID.
#   1. Credentials and limits, no backend needed: no API key → 401, unknown key → 403, key of another
#      exchange → 403, over the per-key rate → 429 (other keys unaffected), no/forged/expired/none-alg
#      JWT → 401, a valid JWT passes, oversize body → 413, plain HTTP on the TLS port refused, the
#      Prometheus exporter answers.
#      With HELIOS_GW_NOTICE_AUTH=signature: notices pass without a key, limited per address.
#   2. What reaches a node: a recording HTTP/1.1 backend (deploy/testing/probe_backend.py) stands where
#      an appliance would: the gateway forwards X-Helios-Exchange, strips X-Api-Key, health-checks
#      GET /readyz, and reuses keep-alive connections.
#   3. End to end through TLS with the real appliance: runs when the `helios` binary exists
#      ($HELIOS_BIN or $CARGO_TARGET_DIR/{release,debug}/helios); prints `skipped:` otherwise.
#   4. JWT at the gateway and again in the real reporter (PostgreSQL from `make test`): runs when
#      the `helios-reporter` binary exists; prints `skipped:` otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"

# Own run dir and free ports: several runs (two worktrees, CI) may share the machine.
base=${HELIOS_DEPLOY_TEST_RUN:-$HELIOS_CACHE/run-deploy-test/gateway-$$}
run=$base/gateway
rm -rf "$run"
mkdir -p "$run"
export HELIOS_GW_RUN=$run
export HELIOS_CERTS=$base/certs
HELIOS_GW_TLS_PORT=$(dl_free_port 28443)
export HELIOS_GW_TLS_PORT
HELIOS_GW_STATS_PORT=$(dl_free_port 28404)
export HELIOS_GW_STATS_PORT
HELIOS_GW_HTTP_PORT=$(dl_free_port 28088)
export HELIOS_GW_HTTP_PORT
HELIOS_GW_REPORTER=127.0.0.1:$(dl_free_port 28090)
export HELIOS_GW_REPORTER
# (≥ 32 bytes: the reporter refuses shorter HS256 secrets)
HELIOS_JWT_SECRET="test-secret-$(openssl rand -hex 16)"
export HELIOS_JWT_SECRET
probe_port=$(dl_free_port 28080)
probe_admin=$(dl_free_port 28100)

# Test maps: exchange "slow" is limited to 5 requests/s.
cat >"$run/keys.map" <<'MAP'
key-fast-0001 fast
key-slow-0001 slow
MAP
printf 'fast 100000\nslow 5\n' >"$run/limits.map"
export HELIOS_GW_KEYS=$run/keys.map HELIOS_GW_LIMITS=$run/limits.map

cleanup() {
  "$root/scripts/gateway.sh" stop >/dev/null 2>&1 || true
  dl_stop_all
  # the run dir (logs) goes only when everything passed
  if [[ -n "${clean_base:-}" ]]; then rm -rf "$base"; fi
}
trap cleanup EXIT

cacert=$HELIOS_CERTS/ca.crt
U=https://localhost:$HELIOS_GW_TLS_PORT
code() { curl -s -o /dev/null -w '%{http_code}' --cacert "$cacert" "$@"; }

echo "-- gateway: credentials and limits (no backend)"
HELIOS_GW_APPLIANCES="" "$root/scripts/gateway.sh" start
body='{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250}}]}'
dl_check "bid without API key → 401" 401 "$(code -X POST -d "$body" "$U/openrtb2/bid")"
dl_check "notice without API key → 401" 401 "$(code "$U/notice/win?p=1")"
dl_check "bid with unknown key → 403" 403 "$(code -X POST -H 'X-Api-Key: nope' -d "$body" "$U/openrtb2/bid")"
dl_check "bid with unknown key in query → 403" 403 "$(code -X POST -d "$body" "$U/openrtb2/bid?key=nope")"
dl_check "key of 'fast' on /openrtb2/bid/slow → 403" 403 "$(code -X POST -H 'X-Api-Key: key-fast-0001' -d "$body" "$U/openrtb2/bid/slow")"
dl_check "valid key (header) passes the gateway (503: no node)" 503 "$(code -X POST -H 'X-Api-Key: key-fast-0001' -d "$body" "$U/openrtb2/bid")"
dl_check "valid key (query) on its own exchange path passes (503)" 503 "$(code -X POST -d "$body" "$U/openrtb2/bid/fast?key=key-fast-0001")"
for p in '//api/v1/campaigns' '/notice/../api/v1/campaigns' '/%61pi/v1/campaigns' '/api/./v1/campaigns' '/openrtb2/bid/..' '/api\v1'; do
  dl_check "path not in normal form ($p) → 400" 400 "$(code --path-as-is "$U$p")"
done
dl_check "unknown /openrtb2 route → 404" 404 "$(code -X POST -H 'X-Api-Key: key-fast-0001' "$U/openrtb2/other")"
# (HTTP/1.1: over HTTP/2 an early answer to a body larger than the buffer may come as a stream reset.)
dl_check "body over 64 KiB → 413" 413 "$(head -c 70000 /dev/zero | tr '\0' 'a' | code --http1.1 -X POST -H 'X-Api-Key: key-fast-0001' --data-binary @- "$U/openrtb2/bid")"

# 20 requests on one keep-alive connection within well under a second: 5 pass, the rest get 429.
urls=()
for _ in $(seq 1 20); do urls+=(-o /dev/null "$U/openrtb2/bid/slow?key=key-slow-0001"); done
codes=$(curl -s --cacert "$cacert" -X POST -d "$body" -w '%{http_code}\n' "${urls[@]}")
n429=$(grep -c '^429$' <<<"$codes" || true)
npass=$(grep -c '^503$' <<<"$codes" || true)
# (5 pass; a 6th only if a rate period boundary falls between them: HAProxy blends the previous
# period in with integer arithmetic.)
dl_check_true "over rate (20 req, limit 5/s): 5 pass (got $npass)" test "$npass" -ge 5 -a "$npass" -le 6
dl_check "over rate (20 req, limit 5/s): the rest → 429" $((20 - npass)) "$n429"
dl_check "429 carries Retry-After" 1 "$(curl -s -D - -o /dev/null --cacert "$cacert" -X POST "$U/openrtb2/bid/slow?key=key-slow-0001" | grep -ci '^retry-after: 1')"
dl_check "another key is not limited by 'slow'" 503 "$(code -X POST -H 'X-Api-Key: key-fast-0001' -d "$body" "$U/openrtb2/bid")"
# http_req_rate(1s) weighs the previous second in: after 2 s the count is back to zero.
sleep 2.1
dl_check "the limited key passes again after the window" 503 "$(code -X POST -d "$body" "$U/openrtb2/bid/slow?key=key-slow-0001")"

now=$(date +%s)
hdr='{"alg":"HS256","typ":"JWT"}'
good=$(dl_jwt "$HELIOS_JWT_SECRET" "$hdr" "{\"sub\":\"adv-1\",\"advertiser_id\":1,\"role\":\"advertiser\",\"exp\":$((now + 600))}")
expired=$(dl_jwt "$HELIOS_JWT_SECRET" "$hdr" "{\"sub\":\"adv-1\",\"advertiser_id\":1,\"role\":\"advertiser\",\"exp\":$((now - 60))}")
noexp=$(dl_jwt "$HELIOS_JWT_SECRET" "$hdr" '{"sub":"adv-1","advertiser_id":1,"role":"advertiser"}')
forged=$(dl_jwt "not-the-secret" "$hdr" "{\"sub\":\"adv-1\",\"advertiser_id\":1,\"role\":\"operator\",\"exp\":$((now + 600))}")
# Same header and signature as `good`, payload changed to claim the operator role.
altered="${good%%.*}.$(printf '{"sub":"adv-1","advertiser_id":1,"role":"operator","exp":%d}' $((now + 600)) | dl_b64url).${good##*.}"
nonealg="$(printf '{"alg":"none","typ":"JWT"}' | dl_b64url).$(printf '{"role":"operator","exp":%d}' $((now + 600)) | dl_b64url)."
dl_check "API without token → 401" 401 "$(code "$U/api/v1/campaigns")"
dl_check "API with garbage token → 401" 401 "$(code -H 'Authorization: Bearer abc.def.ghi' "$U/api/v1/campaigns")"
dl_check "API with token signed by another secret → 401" 401 "$(code -H "Authorization: Bearer $forged" "$U/api/v1/campaigns")"
dl_check "API with altered payload → 401" 401 "$(code -H "Authorization: Bearer $altered" "$U/api/v1/campaigns")"
dl_check "API with alg none → 401" 401 "$(code -H "Authorization: Bearer $nonealg" "$U/api/v1/campaigns")"
dl_check "API with expired token → 401" 401 "$(code -H "Authorization: Bearer $expired" "$U/api/v1/campaigns")"
dl_check "API with token without exp → 401" 401 "$(code -H "Authorization: Bearer $noexp" "$U/api/v1/campaigns")"
dl_check "API with Basic auth → 401" 401 "$(code -u a:b "$U/api/v1/campaigns")"
dl_check "API with a valid token passes the gateway (503: no reporter)" 503 "$(code -H "Authorization: Bearer $good" "$U/api/v1/campaigns")"
dl_check "401 body names the reason" '{"error":"invalid token signature"}' "$(curl -s --cacert "$cacert" -H "Authorization: Bearer $forged" "$U/api/v1/campaigns")"
dl_check "OpenAPI document needs no token (503: no reporter)" 503 "$(code "$U/api/v1/openapi.json")"
dl_check "internal /metrics is not served through the gateway" 404 "$(code "$U/metrics")"

H=http://127.0.0.1:$HELIOS_GW_HTTP_PORT
dl_check "plain-HTTP listener: same key rules (no key → 401)" 401 "$(code -X POST -d "$body" "$H/openrtb2/bid")"
dl_check "plain-HTTP listener: same JWT rules (no token → 401)" 401 "$(code "$H/api/v1/campaigns")"
dl_check "plain-HTTP listener: a valid key passes (503: no node)" 503 "$(code -X POST -d "$body" "$H/openrtb2/bid/fast?key=key-fast-0001")"
dl_check "certificate verifies for localhost against the dev CA" 0 "$(curl -s -o /dev/null --cacert "$cacert" "$U/" ; echo $?)"
dl_check "plain HTTP on the TLS port gets no HTTP answer" 000 "$(curl -s -o /dev/null -w '%{http_code}' "http://localhost:$HELIOS_GW_TLS_PORT/openrtb2/bid" || true)"
metrics=$(curl -s "http://127.0.0.1:$HELIOS_GW_STATS_PORT/metrics")
dl_check "Prometheus exporter lists fe_public requests" 1 "$(grep -c '^haproxy_frontend_http_requests_total{proxy="fe_public"}' <<<"$metrics")"
dl_check "Prometheus exporter counts 429s (4xx) on fe_public" 1 "$(grep -cE '^haproxy_frontend_http_responses_total\{proxy="fe_public",code="4xx"\} [1-9]' <<<"$metrics")"
code --path-as-is "$U/a\"b\\c%22%0a" >/dev/null
# Request logs are JSON lines; HAProxy's own events (a server going down) are plain text lines.
dl_check "every request log line is JSON (hostile paths included)" 0 "$(grep '^{' "$run/haproxy.log" | jq -e . >/dev/null 2>&1; echo $?)"
dl_check "the log records the hostile path, escaped" 1 "$(grep '^{' "$run/haproxy.log" | jq -r --arg p '/a"b\c%22%0a' 'select(.path == $p) | 1' | head -1)"
dl_check "logs never hold the API key" 0 "$(grep -c 'key-slow-0001\|key-fast-0001' "$run/haproxy.log" || true)"
dl_check "logs never hold a bearer token" 0 "$(grep -cF "${good%%.*}.${good#*.}" "$run/haproxy.log" || true)"
dl_check "logs never hold the JWT secret" 0 "$(cat "$run"/*.log | grep -cF "$HELIOS_JWT_SECRET" || true)"
"$root/scripts/gateway.sh" stop >/dev/null

echo "-- gateway: notices authenticated by their signature (HELIOS_GW_NOTICE_AUTH=signature)"
HELIOS_GW_APPLIANCES="" HELIOS_GW_NOTICE_AUTH=signature HELIOS_GW_NOTICE_RATE=5 "$root/scripts/gateway.sh" start >/dev/null
dl_check "a notice without a key passes the gateway (503: no node)" 503 "$(code "$U/notice/win?c=1&sig=x")"
dl_check "a bid without a key is still refused → 401" 401 "$(code -X POST -d "$body" "$U/openrtb2/bid")"
sleep 2.1 # the per-address rate: forget the notice above
urls=()
for i in $(seq 1 20); do urls+=(-o /dev/null "$U/notice/billing?c=$i"); done
codes=$(curl -s --cacert "$cacert" -w '%{http_code}\n' "${urls[@]}")
npass=$(grep -c '^503$' <<<"$codes" || true)
dl_check_true "notices over the per-address rate (20, limit 5/s): 5 pass (got $npass)" test "$npass" -ge 5 -a "$npass" -le 6
dl_check "notices over the per-address rate: the rest → 429" $((20 - npass)) "$(grep -c '^429$' <<<"$codes" || true)"
"$root/scripts/gateway.sh" stop >/dev/null

echo "-- gateway: what reaches a node (recording backend)"
probe_log=$run/probe.jsonl
: >"$probe_log"
dl_start probe "$run/probe.out" /usr/bin/python3 "$root/deploy/testing/probe_backend.py" --port "$probe_port" --log "$probe_log"
# the probe answers /readyz on the bid port too; the health check goes to the admin port given here.
dl_start probe_admin "$run/probe-admin.out" /usr/bin/python3 "$root/deploy/testing/probe_backend.py" --port "$probe_admin" --log "$run/probe-admin.jsonl"
dl_wait_port "$probe_port" 10
dl_wait_port "$probe_admin" 10
HELIOS_GW_APPLIANCES="127.0.0.1:$probe_port/$probe_admin" "$root/scripts/gateway.sh" start
# HAProxy starts a server as up and takes it out after `fall` failed checks: wait for the first
# check to reach the admin port, then for the node to serve.
checked=0
for _ in $(seq 1 50); do
  [[ -s "$run/probe-admin.jsonl" ]] && { checked=1; break; }
  sleep 0.1
done
dl_check "the gateway checks the node on its admin port" 1 "$checked"
dl_check "health checks are GET /readyz" 0 "$(jq -e -s 'length > 0 and all(.method=="GET" and .path=="/readyz")' "$run/probe-admin.jsonl" >/dev/null; echo $?)"
: >"$probe_log"
urls=()
for i in $(seq 1 10); do urls+=(-o /dev/null "$U/openrtb2/bid?a=$i&key=key-fast-0001"); done
codes=$(curl -s --cacert "$cacert" -X POST -H 'X-Api-Key: key-fast-0001' -d "$body" -w '%{http_code}\n' "${urls[@]}")
dl_check "10 bids through TLS answered by the node (204)" 10 "$(grep -c '^204$' <<<"$codes" || true)"
dl_check "node saw 10 POSTs" 10 "$(jq -s 'map(select(.method=="POST")) | length' "$probe_log")"
dl_check "node receives X-Helios-Exchange: fast" 10 "$(jq -s 'map(select(.headers["x-helios-exchange"]=="fast")) | length' "$probe_log")"
dl_check "node never sees X-Api-Key" 0 "$(jq -s 'map(select(.headers["x-api-key"]!=null)) | length' "$probe_log")"
dl_check "node never sees the key query parameter" 0 "$(jq -s 'map(select(.path|test("key="))) | length' "$probe_log")"
dl_check "node receives the body" 10 "$(jq -s --argjson n "${#body}" 'map(select(.body_len==$n)) | length' "$probe_log")"
dl_check "HTTP/1.1 keep-alive to the node: 10 requests over 1 connection" 1 "$(jq -s 'map(.conn) | unique | length' "$probe_log")"
dl_check "a client-set X-Helios-Exchange is replaced" 0 "$(code -X POST -H 'X-Api-Key: key-fast-0001' -H 'X-Helios-Exchange: evil' -d "$body" "$U/openrtb2/bid" >/dev/null; jq -s 'map(select(.headers["x-helios-exchange"]|tostring|test("evil"))) | length' "$probe_log")"
# The node goes away: the gateway notices within its check interval and answers 503 rather than hang.
# shellcheck disable=SC2154 # set by dl_start probe_admin
dl_stop_pid "$DL_PID_probe_admin"
# (Polled for up to 10 s: the checks' interval × fall is the expected delay, a slow machine adds to it.)
out=""
for _ in $(seq 1 40); do
  out=$(code -X POST -H 'X-Api-Key: key-fast-0001' -d "$body" "$U/openrtb2/bid")
  [[ "$out" == 503 ]] && break
  sleep 0.25
done
dl_check "node whose /readyz fails is taken out (503)" 503 "$out"
"$root/scripts/gateway.sh" stop >/dev/null
dl_stop_all

echo "-- gateway: a bid end to end through TLS with the appliance"
if helios=$(dl_find_helios); then
  source "$root/scripts/deploy-appliance.sh"
  bid_port=$(dl_free_port 28180)
  admin_port=$(dl_free_port 28190)
  da_start_appliance "$helios" e2e 127.0.0.1 "$bid_port" "$admin_port" "$run/helios-e2e.log"
  HELIOS_GW_APPLIANCES="127.0.0.1:$bid_port/$admin_port" "$root/scripts/gateway.sh" start
  dl_check_true "the appliance is ready (GET /readyz: campaigns and profiles loaded)" da_wait_ready 127.0.0.1 "$admin_port" 30
  for _ in $(seq 1 30); do
    [[ "$(code -X POST -H 'X-Api-Key: key-fast-0001' -H 'Content-Type: application/json' --data-binary @"$root/deploy/testing/bid-request.json" "$U/openrtb2/bid")" != 503 ]] && break
    sleep 0.2
  done
  resp=$(curl -s --cacert "$cacert" -w '\n%{http_code}' -X POST -H 'X-Api-Key: key-fast-0001' -H 'Content-Type: application/json' \
    -H 'x-openrtb-version: 2.6' --data-binary @"$root/deploy/testing/bid-request.json" "$U/openrtb2/bid/fast")
  dl_check "bid through TLS answered by the appliance with a bid" 200 "$(tail -1 <<<"$resp")"
  dl_check "the bid is the test campaign's (2.50 CPM, creative 1001)" "2.5 1001" "$(head -1 <<<"$resp" | jq -r '.seatbid[0].bid[0] | "\(.price) \(.crid)"' 2>/dev/null)"
  dl_check "the response answers the request id" deploy-test-1 "$(head -1 <<<"$resp" | jq -r .id 2>/dev/null)"
  c=$(code -X POST -H 'X-Api-Key: key-fast-0001' -H 'Content-Type: application/json' --data-binary '{"id":' "$U/openrtb2/bid")
  dl_check "malformed bid through TLS → the appliance's 400" 400 "$c"
  "$root/scripts/gateway.sh" stop >/dev/null
  dl_stop_all
  dl_check "the appliance's log holds neither the API key nor the user id" 0 \
    "$(grep -c 'key-fast-0001\|"user-1"\|user-1\b' "$run/helios-e2e.log" || true)"
  dl_check "the gateway's log of the bid is JSON naming the exchange, not the key" 1 \
    "$(grep '^{' "$run/haproxy.log" | jq -r 'select(.path == "/openrtb2/bid/fast" and .exchange == "fast") | 1' 2>/dev/null | head -1)"
else
  echo "skipped: the helios binary is not built (HELIOS_BIN or \$CARGO_TARGET_DIR/{release,debug}/helios); the end-to-end bid runs once the appliance is on main"
fi

echo "-- gateway: JWT at the gateway and in the reporter"
pg_hp=${HELIOS_PG_URL#*@}; pg_hp=${pg_hp%%/*}
if reporter=$(dl_find_reporter) && (exec 3<>"/dev/tcp/${pg_hp%:*}/${pg_hp##*:}") 2>/dev/null; then
  rport=$(dl_free_port 28090)
  dl_start reporter "$run/reporter.log" env HELIOS_REPORTER_LISTEN="127.0.0.1:$rport" HELIOS_REPORTER_MODE=api \
    HELIOS_PG_URL="$HELIOS_PG_URL" HELIOS_JWT_SECRET="$HELIOS_JWT_SECRET" "$reporter"
  dl_wait_port "$rport" 30
  HELIOS_GW_REPORTER="127.0.0.1:$rport" HELIOS_GW_APPLIANCES="" "$root/scripts/gateway.sh" start >/dev/null
  tok=$(HELIOS_JWT_SECRET="$HELIOS_JWT_SECRET" "$reporter" token --role advertiser --advertiser 7 --ttl 10m --sub deploy-test)
  for _ in $(seq 1 50); do [[ "$(code -H "Authorization: Bearer $tok" "$U/api/v1/me")" == 200 ]] && break; sleep 0.2; done
  dl_check "a token minted by helios-reporter passes the gateway and the reporter (/api/v1/me)" 200 "$(code -H "Authorization: Bearer $tok" "$U/api/v1/me")"
  dl_check "the reporter sees the token's advertiser" 7 "$(curl -s --cacert "$cacert" -H "Authorization: Bearer $tok" "$U/api/v1/me" | jq -r '.. | .adv? // .advertiser_id? // .advertiser? // empty' | head -1)"
  dl_check "a forged token stops at the gateway" '{"error":"invalid token signature"}' "$(curl -s --cacert "$cacert" -H "Authorization: Bearer $forged" "$U/api/v1/me")"
  # Signed with the right secret and not expired, so the gateway lets it through, but without the
  # `iat` and `role` the reporter requires: the reporter's own check refuses it.
  noiat=$(dl_jwt "$HELIOS_JWT_SECRET" "$hdr" "{\"sub\":\"x\",\"exp\":$(($(date +%s) + 600))}")
  dl_check "a token the gateway accepts but the reporter refuses → 401 from the reporter" 401 "$(code -H "Authorization: Bearer $noiat" "$U/api/v1/me")"
  dl_check "the reporter's OpenAPI document through the gateway, no token" 200 "$(code "$U/api/v1/openapi.json")"
  "$root/scripts/gateway.sh" stop >/dev/null
  dl_stop_all
  dl_check "the reporter's log never holds a token" 0 "$(grep -cF "$tok" "$run/reporter.log" || true)"
else
  echo "skipped: reporter behind the gateway (the helios-reporter binary is not built, or PostgreSQL at $pg_hp is not running)"
fi

# Logs stay under $base when something failed.
dl_summary && clean_base=1
