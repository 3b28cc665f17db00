#!/usr/bin/env bash
# End to end, real binaries and services: clicks from the bid's markup to the reporter's CTR.
#
# helios (one core, a creative whose adm carries ${HELIOS_CLICK_URL_HTML}, events to Kafka) →
# Tansu → helios-reporter (ingest + API) → PostgreSQL. The script bids BIDS times; for every bid
# it calls the billing notice (the exchange's macros filled) and, for every other bid, the click
# URL found in the adm — twice, as a double click would — plus one forged click. It then waits
# until the reporter's API shows, for the campaign: BIDS impressions, BIDS/2 clicks (each
# impression's click counted once), CTR = 0.5, and spend = Σ clearing prices / 1000.
#
# Own ports and run dir (override with the variables): PostgreSQL PIPELINE_E2E_PG_PORT (5443),
# Kafka PIPELINE_E2E_KAFKA_PORT (9103), reporter API 18693, helios 18690 (admin 18691), under
# $HELIOS_CACHE/run-pipeline-e2e. Everything it starts is stopped by PID; exits non-zero on any
# failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
export HELIOS_CACHE=${HELIOS_CACHE:-/var/cache/helios}
export HELIOS_RUN=${PIPELINE_E2E_RUN:-$HELIOS_CACHE/run-pipeline-e2e}
export HELIOS_PG_PORT=${PIPELINE_E2E_PG_PORT:-5443}
export HELIOS_KAFKA_PORT=${PIPELINE_E2E_KAFKA_PORT:-9103}
export HELIOS_PG_URL="postgres://helios:helios@127.0.0.1:$HELIOS_PG_PORT/helios"
export HELIOS_KAFKA_BROKERS="127.0.0.1:$HELIOS_KAFKA_PORT"
unset HELIOS_REDIS_URL
source scripts/env.sh
BIDS=${PIPELINE_E2E_BIDS:-20}
api_port=18693
bid_port=18690
admin_port=18691
mkdir -p "$HELIOS_RUN"
log() { printf '[pipeline-clicks %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

helios_pid=
reporter_pid=
stop_pid() {
  local p=$1
  [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  stop_pid "$helios_pid"
  stop_pid "$reporter_pid"
  scripts/services.sh stop postgres kafka >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "building helios and helios-reporter"
cargo build --workspace --bins --quiet
bin="$CARGO_TARGET_DIR/debug"

rm -rf "$HELIOS_RUN/kafka" "$HELIOS_RUN/spool"
scripts/services.sh start postgres kafka
db=helios_pipeline_clicks
psql "postgres://postgres@127.0.0.1:$HELIOS_PG_PORT/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql "postgres://postgres@127.0.0.1:$HELIOS_PG_PORT/postgres" -qc "CREATE DATABASE $db OWNER helios"
pg_url="postgres://helios:helios@127.0.0.1:$HELIOS_PG_PORT/$db"
secret_file="$HELIOS_RUN/jwt.secret"
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$secret_file"

"$bin/helios-reporter" --mode all --pg-url "$pg_url" --listen "127.0.0.1:$api_port" \
  --kafka-brokers "$HELIOS_KAFKA_BROKERS" --group-id "clicks-e2e-$$" --batch-wait-ms 100 \
  --jwt-secret-file "$secret_file" --log warn 2>"$HELIOS_RUN/reporter.log" &
reporter_pid=$!

cat >"$HELIOS_RUN/campaigns.json" <<'EOF'
{"version":1,"campaigns":[
  {"id":7,"advertiser_id":70,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000,
   "creatives":[{"id":71,"format":{"type":"banner","w":300,"h":250},"adomain":["shoes.example"],
     "adm":"<a href=\"https://shoes.example/\" ping=\"${HELIOS_CLICK_URL_HTML}\"><img src=\"https://cdn.example/a.png\"></a>"}]}]}
EOF
HELIOS_EVENTS_ENABLED=true HELIOS_EVENTS_BROKERS=$HELIOS_KAFKA_BROKERS HELIOS_EVENTS_SPOOL_DIR=$HELIOS_RUN/spool \
  HELIOS_NOTICES_KEY=pipeline-clicks-e2e-key HELIOS_LOG_LEVEL=warn \
  "$bin/helios" --listen "127.0.0.1:$bid_port" --admin "127.0.0.1:$admin_port" --cores 0 \
  --campaigns "$HELIOS_RUN/campaigns.json" 2>"$HELIOS_RUN/helios.log" &
helios_pid=$!
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$helios_pid" 2>/dev/null || { log "helios exited"; tail -20 "$HELIOS_RUN/helios.log" >&2; exit 1; }
  sleep 0.2
done
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  kill -0 "$reporter_pid" 2>/dev/null || { log "reporter exited"; tail -20 "$HELIOS_RUN/reporter.log" >&2; exit 1; }
  sleep 0.2
done

status() { curl -s -o /dev/null -w '%{http_code}' "$1"; }
clicked=0
spend_cpm=0
for i in $(seq 1 "$BIDS"); do
  body=$(printf '{"id":"e2e-%d","imp":[{"id":"1","banner":{"w":300,"h":250}}],"tmax":500}' "$i")
  resp=$(curl -fsS -H 'Content-Type: application/json' --data-binary "$body" "http://127.0.0.1:$bid_port/openrtb2/bid/adx")
  adm=$(jq -r '.seatbid[0].bid[0].adm' <<<"$resp")
  burl=$(jq -r '.seatbid[0].bid[0].burl' <<<"$resp")
  # The exchange fills its macros: clearing price 1.5 + i/100 CPM.
  price=$(printf '1.%02d' "$((50 + i))")
  spend_cpm=$((spend_cpm + 1500000 + i * 10000))
  b=${burl//'${AUCTION_PRICE}'/$price}
  b=${b//'${AUCTION_CURRENCY}'/USD}
  b=${b//'${AUCTION_ID}'/a$i}
  b=${b//'${AUCTION_IMP_ID}'/1}
  [[ $(status "$b") == 204 ]] || { log "billing notice $i refused"; exit 1; }
  if ((i % 2 == 0)); then
    # The click tracker in the markup, as a browser reads the HTML attribute.
    click=$(grep -o 'ping="[^"]*"' <<<"$adm" | sed -e 's/^ping="//' -e 's/"$//' -e 's/&amp;/\&/g')
    [[ "$click" == http://*"/notice/click?"* ]] || { log "no click URL in adm: $adm"; exit 1; }
    click=${click//'${AUCTION_ID}'/a$i}
    [[ $(status "$click") == 204 ]] || { log "click $i refused"; exit 1; }
    [[ $(status "$click") == 204 ]] || { log "repeated click $i refused"; exit 1; }
    clicked=$((clicked + 1))
    if ((i == 2)); then
      forged=${click/&c=7&/&c=8&}
      [[ $(status "$forged") == 400 ]] || { log "a forged click was accepted"; exit 1; }
    fi
  fi
done
log "$BIDS bids billed, $clicked impressions clicked (each twice), one forged click refused"

token=$("$bin/helios-reporter" token --jwt-secret-file "$secret_file" --role operator --ttl 1h)
want_spend=$((spend_cpm / 1000))
got=""
for _ in $(seq 1 150); do
  got=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$api_port/api/v1/campaigns/7" 2>/dev/null || true)
  imps=$(jq -r '(.campaign.figures // .campaign).impressions // 0' <<<"$got" 2>/dev/null || echo 0)
  clicks=$(jq -r '(.campaign.figures // .campaign).clicks // 0' <<<"$got" 2>/dev/null || echo 0)
  # Bids come on their own topic, and may be stored after the notices of their impressions:
  # wait for every figure the check below reads.
  bids=$(jq -r '(.campaign.figures // .campaign).bids // 0' <<<"$got" 2>/dev/null || echo 0)
  if [[ "$imps" == "$BIDS" && "$clicks" == "$clicked" && "$bids" == "$BIDS" ]]; then break; fi
  sleep 0.2
done
log "reporter: $got"
jq -e --argjson imps "$BIDS" --argjson clicks "$clicked" --argjson spend "$want_spend" '
  (.campaign.figures // .campaign) as $f
  | $f.impressions == $imps and $f.clicks == $clicks and $f.bids == $imps
    and (($f.ctr - ($clicks / $imps)) | fabs) < 1e-9 and $f.spend_micros == $spend' <<<"$got" >/dev/null || {
  log "FAIL: want impressions $BIDS, clicks $clicked, ctr $(jq -n "$clicked/$BIDS"), spend_micros $want_spend"
  exit 1
}
log "PASS: impressions $BIDS, clicks $clicked (repeats counted once), CTR $(jq -n "$clicked/$BIDS"), spend $want_spend micros"
