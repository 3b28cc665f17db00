#!/usr/bin/env bash
# Browser end-to-end test of the campaign editor (reporter dashboard + campaign management), on
# its own ports and run dir: PostgreSQL :5448, Redis :6398, reporter API :8098 (override with the
# variables below). Builds the dashboard and the reporter, starts PostgreSQL and Redis, runs
# helios-reporter --mode api with --campaigns-redis-url, registers advertiser 1 through the API,
# runs the Playwright test in Debian's Chromium, and stops everything it started by PID.
# Screenshots go to $HELIOS_CACHE/artifacts/. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HELIOS_CACHE=${HELIOS_CACHE:-/var/cache/helios}
export HELIOS_RUN=${CAMPAIGNS_E2E_RUN:-$HELIOS_CACHE/run-campaigns-e2e}
export HELIOS_PG_PORT=${CAMPAIGNS_E2E_PG_PORT:-5448}
export HELIOS_REDIS_PORT=${CAMPAIGNS_E2E_REDIS_PORT:-6398}
api_port=${CAMPAIGNS_E2E_API_PORT:-8098}
source scripts/e2e-lib.sh
e2e_setup campaigns-dashboard postgres redis

e2e_build campaigns-dashboard --no-test
bin="$CARGO_TARGET_DIR/debug"

scripts/services.sh start postgres redis
# A fresh database for every run, so the figures checked are this run's alone.
pg_url=$(e2e_fresh_db helios_campaigns_e2e)
redis_db=5
redis-cli -p "$HELIOS_REDIS_PORT" -n "$redis_db" FLUSHDB >/dev/null

secret_file=$(e2e_jwt_secret)

e2e_start_reporter "$api_port" --mode api --pg-url "$pg_url" \
  --jwt-secret-file "$secret_file" --dashboard-dir reporter/dashboard/dist --log warn \
  --campaigns-redis-url "redis://127.0.0.1:$HELIOS_REDIS_PORT/$redis_db"

op=$("$bin/helios-reporter" token --jwt-secret-file "$secret_file" --role operator --sub e2e-ops --ttl 10m)
curl -fsS -X POST "http://127.0.0.1:$api_port/api/v1/advertisers" -H "Authorization: Bearer $op" \
  -H 'content-type: application/json' -d '{"advertiser_id": 1, "name": "Acme"}' >/dev/null
token=$("$bin/helios-reporter" token --jwt-secret-file "$secret_file" --role advertiser --advertiser 1 --sub alice --ttl 10m)
(cd reporter/dashboard && BASE_URL="http://127.0.0.1:$api_port" TOKEN="$token" \
  REDIS_CLI="redis-cli -p $HELIOS_REDIS_PORT -n $redis_db" ARTIFACT_DIR="$artifacts" \
  timeout 180 node e2e/campaigns.e2e.mjs)
# The audit log names who made the changes.
n=$(psql "$pg_url" -Atc "SELECT count(*) FROM cm_audit WHERE actor = 'alice'")
[[ "$n" -ge 3 ]] || { echo "campaigns-dashboard: expected the browser's changes in the audit log, found $n" >&2; exit 1; }
echo "campaigns-dashboard: passed (screenshot in $artifacts/campaign-editor.png)"
