# Starting an appliance node for the deploy tests (sourced). The appliance (`helios`, issue 4) is
# configured by HELIOS_<SECTION>_<KEY> environment variables; this is the one place the deploy
# tests name them, so when the appliance's options change only this file follows. Campaigns:
# deploy/testing/campaigns.json (one active banner campaign bidding 2.50 CPM), or $DA_CAMPAIGNS.
# Keys the binary does not know are ignored (it reads only HELIOS_<SECTION>_<KEY> of its own keys),
# so the profile/event/notice settings below are harmless to an older build.
# shellcheck shell=bash

da_start_appliance() { # binary name bind_addr bid_port admin_port logfile [netns]
  local bin=$1 name=$2 addr=$3 bid=$4 admin=$5 log=$6 ns=${7:-}
  local pre=()
  [[ -n "$ns" ]] && pre=(ip netns exec "$ns")
  # HELIOS_<SECTION>_<KEY> overrides the appliance's TOML configuration key <section>.<key>.
  dl_start "helios_$name" "$log" "${pre[@]}" env \
    HELIOS_SERVER_LISTEN="$addr:$bid" \
    HELIOS_ADMIN_LISTEN="$addr:$admin" \
    HELIOS_SERVER_CORES="${HELIOS_TEST_CORES:-0}" \
    HELIOS_SERVER_NODE="$name" \
    HELIOS_BIDDING_CAMPAIGNS="${DA_CAMPAIGNS-$(dirname "${BASH_SOURCE[0]}")/../deploy/testing/campaigns.json}" \
    HELIOS_PROFILES_REDIS_URL="${DA_REDIS_URL:-$HELIOS_REDIS_URL}" \
    HELIOS_EVENTS_FREQUENCY_REDIS_URL="${DA_REDIS_URL:-$HELIOS_REDIS_URL}" \
    HELIOS_EVENTS_BROKERS="${DA_KAFKA_BROKERS:-$HELIOS_KAFKA_BROKERS}" \
    HELIOS_EVENTS_SPOOL_DIR="$(dirname "$log")/spool-$name" \
    HELIOS_NOTICES_KEY="deploy-test-notice-key-0123456789abcdef" \
    HELIOS_REDIS_URL="${DA_REDIS_URL:-$HELIOS_REDIS_URL}" \
    HELIOS_KAFKA_BROKERS="${DA_KAFKA_BROKERS:-$HELIOS_KAFKA_BROKERS}" \
    "$bin"
}

da_wait_ready() { # host admin_port seconds [netns]: until GET /readyz answers 200
  local host=$1 port=$2 secs=$3 ns=${4:-} i
  local pre=()
  [[ -n "$ns" ]] && pre=(ip netns exec "$ns")
  for ((i = 0; i < secs * 5; i++)); do
    [[ "$("${pre[@]}" curl -s -o /dev/null -w '%{http_code}' "http://$host:$port/readyz")" == 200 ]] && return 0
    sleep 0.2
  done
  echo "appliance at $host:$port not ready within $secs s" >&2
  return 1
}
