#!/usr/bin/env bash
# Browser end-to-end test of the reporter's dashboard, on its own ports and run dir:
#   PostgreSQL :5447, Kafka (Tansu) :9097, reporter API :8097 (override with the variables below).
# Builds the dashboard and the reporter, starts PostgreSQL, Tansu and helios-reporter, produces a
# generated run of events, waits until it is ingested, runs the Playwright test in Debian's
# Chromium, and stops everything it started by PID. Screenshots go to
# $HELIOS_CACHE/artifacts/. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HELIOS_CACHE=${HELIOS_CACHE:-/var/cache/helios}
export HELIOS_RUN=${REPORTER_E2E_RUN:-$HELIOS_CACHE/run-reporter-e2e}
export HELIOS_PG_PORT=${REPORTER_E2E_PG_PORT:-5447}
export HELIOS_KAFKA_PORT=${REPORTER_E2E_KAFKA_PORT:-9097}
api_port=${REPORTER_E2E_API_PORT:-8097}
source scripts/e2e-lib.sh
e2e_setup reporter-dashboard postgres kafka

e2e_build reporter-dashboard
bin="$CARGO_TARGET_DIR/debug"

scripts/services.sh start postgres kafka
# A fresh database for every run, so the figures checked are this run's alone.
pg_url=$(e2e_fresh_db helios_e2e)

secret_file=$(e2e_jwt_secret)
suffix=".e2e$(date +%s)"

e2e_start_reporter "$api_port" --pg-url "$pg_url" --kafka-brokers "$HELIOS_KAFKA_BROKERS" \
  --group-id "reporter-e2e$suffix" --topics "helios.bids$suffix,helios.outcomes$suffix" \
  --jwt-secret-file "$secret_file" \
  --dashboard-dir reporter/dashboard/dist --batch-wait-ms 100 --log warn

# The campaigns table knows one campaign's name, budget and flight; the others come from events.
psql "$pg_url" -qc "INSERT INTO advertisers VALUES (1, 'Acme'), (2, 'Globex') ON CONFLICT DO NOTHING"
psql "$pg_url" -qc "INSERT INTO campaigns (campaign_id, advertiser_id, name, budget_micros, start_at, end_at)
  VALUES (101, 1, 'Acme winter sale', 50000000, now() - interval '2 hours', now() + interval '22 hours')"

echo "reporter-dashboard: producing a generated run"
run=$("$bin/helios-reporter-gen" --brokers "$HELIOS_KAFKA_BROKERS" --topic-suffix "$suffix" \
  --requests 20000 --seed 7 --span-secs 5400)
unique=$(jq -r '.expected.unique_events' <<<"$run")
echo "reporter-dashboard: $(jq -r '.events' <<<"$run") events, $unique distinct; waiting for the ingest"
for i in $(seq 1 600); do
  n=$(psql "$pg_url" -Atc "SELECT count(*) FROM events" 2>/dev/null || echo 0)
  [[ "$n" == "$unique" ]] && break
  e2e_reporter_alive
  ((i == 600)) && { echo "ingest incomplete: $n of $unique" >&2; exit 1; }
  sleep 0.2
done
# The generator's own expectation agrees with the database before the browser looks.
want=$(jq -r '.expected.campaigns["101"].impressions' <<<"$run")
got=$(psql "$pg_url" -Atc "SELECT count(*) FROM events WHERE campaign_id = 101 AND kind = 4 AND flags & 1 = 0")
[[ "$want" == "$got" ]] || { echo "impressions of 101: generator says $want, database $got" >&2; exit 1; }

token=$("$bin/helios-reporter" token --jwt-secret-file "$secret_file" --role advertiser --advertiser 1 --ttl 10m)
(cd reporter/dashboard && BASE_URL="http://127.0.0.1:$api_port" TOKEN="$token" PG_URL="$pg_url" \
  CAMPAIGN_ID=101 ADVERTISER_ID=1 ARTIFACT_DIR="$artifacts" timeout 180 node e2e/dashboard.e2e.mjs)
echo "reporter-dashboard: passed (screenshot in $artifacts/reporter-dashboard.png)"
