#!/usr/bin/env bash
# Whole-chain fault harness (issue 12, docs/RELIABILITY.md §1): real Redis, PostgreSQL and Tansu,
# the real `helios`, `helios-reporter` and `helios-exchange` (the traffic source), one fault per run.
#
#   scripts/chaos.sh [--short] FAULT...     FAULT: none broker redis postgres reporter-kill
#                                                  appliance-kill appliance-kill-spooling
#   (make soak runs every fault in its long form; scripts/test.d/reliability.sh the short forms)
#
# One run, per fault, on fresh state (new broker data, new reporting database):
#   1. services up; the reporter (--mode ingest) under a restart loop (a supervisor: it exits when
#      PostgreSQL goes away); the appliance (1 core, own spool dir, fixed notice key, profiles and
#      frequency counters in Redis); the exchange simulator at CHAOS_RATE auctions/s.
#   2. CHAOS_BEFORE s of traffic, the fault, CHAOS_AFTER s of traffic, traffic stopped.
#   3. The appliance's event count is read (admin /metrics, sum of helios_events_total) and it is
#      stopped with SIGTERM (it flushes: its "events flushed" line must show nothing dropped).
#   4. The chain drains: PostgreSQL's raw event count is polled until it reaches what was produced
#      (bounded by CHAOS_DRAIN_TIMEOUT).
#   5. Checks (each printed PASS/FAIL; any FAIL makes the script exit 1):
#      - every produced event is in `events` once: count = produced, count(distinct event_id) =
#        count; the appliance's count also equals what the exchange saw (bid events, no-bids,
#        notices answered 2xx) when the exchange saw no timeouts or errors and every failed notice
#        was refused by the appliance (helios_notices_rejected_total);
#      - spend = Σ billing notices: Σ clear price of the billing rows (micros, per impression as the
#        exchange computes it) = the exchange's own spend; the rollups' spend and counts per
#        campaign = the raw rows';
#      - no campaign overspent > 1%: Σ billing per campaign ≤ 1.01 × its total budget (campaigns
#        file; CHAOS_BUDGET_MICROS replaces every campaign's budgets to make the check bite);
#        with CHAOS_BUDGET_MICROS, the campaigns must also have run out of budget (billing stored
#        plus what Redis forfeited ≥ 95% of it), at least CHAOS_BUDGET_EXHAUSTED_MIN of them (default
#        all), or the check proved nothing: traffic goes on after the CHAOS_AFTER s until they
#        have (at most CHAOS_BUDGET_WAIT s, default 60; printed). The budgets' Redis state is
#        printed: what is left, leased, and forfeited by holders that died without settling
#        (the underspend).
#   Before the final SIGTERM the harness waits (≤ CHAOS_SPOOL_DRAIN_TIMEOUT s, default 60) until
#   the broker is up and the appliance's spool is empty (printed: how long it took), then
#   checks that nothing was left.
#   After a SIGKILL of the appliance what it produced is not countable from the dead process: the
#   expectation is what the exchange saw answered, per event kind (fewer rows = lost; more = events
#   whose answer the exchange never got). appliance-kill-spooling kills it while the broker is
#   stopped (events on the spool), restarts it on the same spool, then the broker; appliance-kill
#   kills it with the broker up and restarts it. In both nothing answered may be lost
#   (CHAOS_KILL_LOSS_MAX, default 0): every event is in its core's write-ahead journal before its
#   answer leaves (pipeline/src/journal.rs), and the restart replays what was not acknowledged.
#
# Settings (env): CHAOS_RATE (300), CHAOS_BEFORE (8; short 4), CHAOS_AFTER (8; short 4),
# CHAOS_OUTAGE (broker outage s: 60; short 10), CHAOS_PROFILE (release|debug, default debug),
# CHAOS_BUILD=0 (do not build), CHAOS_BIN_DIR (use the binaries there, no build),
# CHAOS_DRAIN_TIMEOUT (s, 180), CHAOS_SPOOL_DRAIN_TIMEOUT (s, 60), CHAOS_BUDGET_MICROS,
# CHAOS_BUDGET_EXHAUSTED_MIN, CHAOS_BUDGET_WAIT (s, 60), CHAOS_KILL_LOSS_MAX, ports CHAOS_REDIS_PORT (6398) CHAOS_PG_PORT (5450) CHAOS_KAFKA_PORT (9099)
# CHAOS_BID_PORT (17407) CHAOS_ADMIN_PORT (17408), run dir CHAOS_RUN ($HELIOS_CACHE/run-chaos).
# Results: one JSON line per fault appended to $CHAOS_RUN/results.jsonl; logs in $CHAOS_RUN/faults/<fault>/.
# Every process is started here and stopped by its PID (also on error, through the EXIT trap).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

short=0
faults=()
for a in "$@"; do
  case "$a" in
    --short) short=1 ;;
    none | broker | redis | postgres | reporter-kill | appliance-kill | appliance-kill-spooling) faults+=("$a") ;;
    -h | --help) sed -n '2,52p' "$0"; exit 0 ;;
    *) echo "chaos: unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done
((${#faults[@]})) || { echo "usage: $0 [--short] FAULT... (try --help)" >&2; exit 2; }

# Own services: never the ones `make test` or another stack runs.
export HELIOS_CACHE=${HELIOS_CACHE:-/var/cache/helios}
export HELIOS_RUN=${CHAOS_RUN:-$HELIOS_CACHE/run-chaos}
export HELIOS_REDIS_PORT=${CHAOS_REDIS_PORT:-6398}
export HELIOS_PG_PORT=${CHAOS_PG_PORT:-5450}
export HELIOS_KAFKA_PORT=${CHAOS_KAFKA_PORT:-9099}
unset HELIOS_REDIS_URL HELIOS_PG_URL HELIOS_KAFKA_BROKERS
source "$here/env.sh"
run_root=$HELIOS_RUN
mkdir -p "$run_root"

rate=${CHAOS_RATE:-300}
if ((short)); then before=${CHAOS_BEFORE:-4} after=${CHAOS_AFTER:-4} outage=${CHAOS_OUTAGE:-10}
else before=${CHAOS_BEFORE:-8} after=${CHAOS_AFTER:-8} outage=${CHAOS_OUTAGE:-60}; fi
profile=${CHAOS_PROFILE:-debug}
drain_timeout=${CHAOS_DRAIN_TIMEOUT:-180}
spool_drain_timeout=${CHAOS_SPOOL_DRAIN_TIMEOUT:-60}
budget_exhausted_min=${CHAOS_BUDGET_EXHAUSTED_MIN:-}
budget_wait_timeout=${CHAOS_BUDGET_WAIT:-60}
bid_port=${CHAOS_BID_PORT:-17407}
admin_port=${CHAOS_ADMIN_PORT:-17408}
kill_loss_max=${CHAOS_KILL_LOSS_MAX:-0}
bin=$CARGO_TARGET_DIR/$profile
db=helios_chaos
pg_admin=(psql -h 127.0.0.1 -p "$HELIOS_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtAX)
pg_url=postgres://helios:helios@127.0.0.1:$HELIOS_PG_PORT/$db
cpu=$(($(nproc) - 1))

say() { printf 'chaos: %s\n' "$*"; }
now() { date +%s.%N; }

if [[ -n "${CHAOS_BIN_DIR:-}" ]]; then
  bin=$CHAOS_BIN_DIR # binaries built elsewhere (no build here)
elif [[ "${CHAOS_BUILD:-1}" != 0 ]]; then
  rel=()
  [[ "$profile" == release ]] && rel=(--release)
  say "building helios, helios-reporter, helios-exchange ($profile)"
  cargo build --workspace --bins --locked "${rel[@]}" --quiet
fi
# The shared target dir's uplifted binaries are replaced by any worktree's build of the same name:
# run copies taken right after this worktree's build (cargo re-links them even when fresh).
[[ -n "${CHAOS_BIN_DIR:-}" ]] || mkdir -p "$run_root/bin"
[[ -n "${CHAOS_BIN_DIR:-}" ]] || for b in helios helios-reporter helios-exchange helios-profiles helios-load; do
  [[ -x "$bin/$b" ]] || { echo "chaos: $bin/$b missing (build it, or unset CHAOS_BUILD=0)" >&2; exit 1; }
  cp "$bin/$b" "$run_root/bin/$b"
done
[[ -n "${CHAOS_BIN_DIR:-}" ]] || bin=$run_root/bin

# --- processes this script owns (PID files under the fault's dir) -------------------------------
dir= # the current fault's dir
alive() { [[ -f "$dir/$1.pid" ]] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

stop_pid() { # pidfile signal seconds
  local pid
  [[ -f "$1" ]] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$2" "$pid" 2>/dev/null || true
    for ((i = 0; i < $3 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$1"
}

wait_http() { # url seconds
  for ((i = 0; i < $2 * 10; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_helios() {
  local p
  for p in "$bid_port" "$admin_port"; do
    if port_taken "$p"; then
      echo "chaos: port $p is taken by another process (set CHAOS_BID_PORT / CHAOS_ADMIN_PORT)" >&2
      return 1
    fi
  done
  HELIOS_EVENTS_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_EVENTS_SPOOL_DIR="$dir/spool" \
    HELIOS_EVENTS_STARTUP_TIMEOUT_MS=3000 \
    HELIOS_PROFILES_REDIS_URL="$HELIOS_REDIS_URL" HELIOS_EVENTS_FREQUENCY_REDIS_URL="$HELIOS_REDIS_URL" \
    HELIOS_BUDGET_REDIS_URL="$HELIOS_REDIS_URL" \
    HELIOS_NOTICES_KEY="$notice_key" HELIOS_NOTICES_BASE_URL="http://127.0.0.1:$bid_port" \
    "$bin/helios" --cores "$cpu" --listen "127.0.0.1:$bid_port" --admin "127.0.0.1:$admin_port" \
    --campaigns "$dir/campaigns.json" --node chaos >>"$dir/helios.log" 2>&1 &
  echo $! >"$dir/helios.pid"
  wait_http "http://127.0.0.1:$admin_port/readyz" 60 && alive helios || { tail -5 "$dir/helios.log" >&2; return 1; }
}

# A counter of the appliance summed over cores (default: events emitted); empty when it does not
# answer.
events_now() {
  curl -s --max-time 2 "http://127.0.0.1:$admin_port/metrics" |
    awk -v m="${1:-helios_events_total}" 'index($0, m) == 1 && substr($0, length(m) + 1, 1) ~ /[{ ]/ {s += $NF; n++}
      END {if (n) printf "%d\n", s}' || true
}

# The reporter under a restart loop (what systemd / a Kubernetes restart policy does): the ingest
# exits when PostgreSQL goes away. Each exit is logged in reporter.exits.
start_reporter() {
  rm -f "$dir/reporter.stop"
  (
    while [[ ! -e "$dir/reporter.stop" ]]; do
      HELIOS_PG_URL="$pg_url" HELIOS_KAFKA_BROKERS="$HELIOS_KAFKA_BROKERS" HELIOS_REPORTER_GROUP=chaos \
        "$bin/helios-reporter" --mode ingest --batch-wait-ms 100 >>"$dir/reporter.log" 2>&1 &
      echo $! >"$dir/reporter.pid"
      rc=0
      wait $! || rc=$?
      [[ -e "$dir/reporter.stop" ]] || echo "$(date -u +%T.%N) exit $rc" >>"$dir/reporter.exits"
      [[ -e "$dir/reporter.stop" ]] || sleep 1
    done
  ) &
  echo $! >"$dir/supervisor.pid"
}

stop_reporter() {
  touch "$dir/reporter.stop"
  stop_pid "$dir/reporter.pid" TERM 15
  stop_pid "$dir/supervisor.pid" TERM 5
}

cleanup() {
  [[ -n "$dir" ]] || return 0
  stop_pid "$dir/exchange.pid" TERM 5
  stop_pid "$dir/sampler.pid" TERM 2
  stop_pid "$dir/helios.pid" TERM 15
  [[ -f "$dir/supervisor.pid" ]] && stop_reporter
  scripts/services.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap "exit 143" TERM INT

pg_stop_fast() { # fast shutdown (SIGINT to the postmaster: open transactions roll back)
  local pidfile=$HELIOS_RUN/postgres/postmaster.pid pid
  pid=$(head -1 "$pidfile")
  kill -INT "$pid"
  for ((i = 0; i < 200; i++)); do [[ -f "$pidfile" ]] || break; sleep 0.05; done
  rm -f "$HELIOS_RUN/postgres.pid"
}

q() { "${pg_admin[@]}" -d "$db" -c "$1"; }
exits() { cat "$dir/reporter.exits" 2>/dev/null | wc -l; } # reporter exits before the end

# The budgets' state (after the appliance's final settlement, or during the run): per campaign
# the spend stored so far (billing rows), what is left to bid with in Redis (remaining +
# leases) and what holders that died without settling forfeited there (counted as spent: the
# underspend, shards/src/pacing.rs). Sets exhausted (campaigns whose stored spend plus forfeit
# reached 95% of the budget: nothing left to overspend with), n_camp, forfeit_left, bstate.
budget_lua='local out = {}
for _, id in ipairs(ARGV) do
  local k = "helios:budget:{" .. id .. "}:"
  local function sum(key)
    local s = 0
    for _, v in ipairs(redis.call("HVALS", key)) do s = s + tonumber(v) end
    return s
  end
  out[#out + 1] = string.format("%s %d %d %d", id, tonumber(redis.call("GET", k .. "remaining") or "0"),
    sum(k .. "leases"), sum(k .. "forfeit"))
end
return out'
budget_state() {
  local c budget rem leased forf spent
  local -A spend=()
  exhausted=0 n_camp=0 forfeit_left=0 bstate=""
  while IFS='|' read -r c spent; do
    [[ -n "$c" ]] && spend[$c]=$spent
  done < <(q "SELECT campaign_id, (sum(clear_price_micros) / 1000)::bigint FROM events
              WHERE kind = 4 AND flags & 1 = 0 GROUP BY campaign_id" 2>/dev/null || true)
  local -A bud=()
  while read -r c budget; do bud[$c]=$budget; done < <(jq -r '.campaigns[] | "\(.id) \(.total_budget_micros // 0)"' "$dir/campaigns.json")
  # One round trip for every campaign: "id remaining leased forfeit" per line.
  while read -r c rem leased forf; do
    [[ -n "${bud[$c]:-}" ]] || continue
    budget=${bud[$c]}
    spent=${spend[$c]:-0}
    n_camp=$((n_camp + 1))
    forfeit_left=$((forfeit_left + forf))
    ((budget > 0 && (spent + forf) * 100 >= budget * 95)) && exhausted=$((exhausted + 1))
    bstate+="$c:$spent/$rem/$leased/$forf "
  done < <(redis-cli -p "$HELIOS_REDIS_PORT" --raw eval "$budget_lua" 0 $(printf "%s\n" "${!bud[@]}" | sort -n) 2>/dev/null || true)
}

# --- one fault ------------------------------------------------------------------------------------
failures=0
check() { # name ok(0/1) detail
  if [[ "$2" == 1 ]]; then say "PASS $1 ($3)"; else say "FAIL $1 ($3)"; failures=$((failures + 1)); fault_failed=1; fi
  checks+=("$(jq -nc --arg n "$1" --argjson ok "$2" --arg d "$3" '{check:$n, ok:($ok==1), detail:$d}')")
}

run_fault() {
  local fault=$1
  dir=$run_root/faults/$fault # not $run_root/<service>: that is the service's own state
  fault_failed=0
  checks=()
  rm -rf "$dir"
  mkdir -p "$dir/spool"
  say "=== fault: $fault (rate $rate/s, ${before}s before, ${after}s after$([[ $fault == broker || $fault == appliance-kill-spooling ]] && echo ", outage ${outage}s")); load $(cut -d' ' -f1-3 /proc/loadavg)"

  # Fresh broker data and reporting database; profiles in Redis (kept across faults).
  scripts/services.sh stop kafka >/dev/null
  rm -rf "$HELIOS_RUN/kafka"
  scripts/services.sh start redis postgres kafka >/dev/null
  # Redis answers LOADING while it reads its append-only file back: wait until it serves.
  for _ in $(seq 1 300); do
    [[ "$(redis-cli -p "$HELIOS_REDIS_PORT" ping 2>/dev/null)" == PONG ]] && break
    sleep 0.1
  done
  "${pg_admin[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db OWNER helios"
  if [[ "$(redis-cli -p "$HELIOS_REDIS_PORT" --raw exists helios:profile:loaded-chaos)" != 1 ]]; then
    HELIOS_REDIS_URL=$HELIOS_REDIS_URL "$bin/helios-profiles" load --count 20000 >"$run_root/profiles.log" 2>&1
    redis-cli -p "$HELIOS_REDIS_PORT" set helios:profile:loaded-chaos 1 >/dev/null
  fi
  # Budgets live in Redis, as in production (a restarted node must not start again from the file);
  # each fault starts from the campaigns file's budgets.
  redis-cli -p "$HELIOS_REDIS_PORT" --scan --pattern 'helios:budget:*' |
    xargs -r redis-cli -p "$HELIOS_REDIS_PORT" del >/dev/null
  if [[ -n "${CHAOS_BUDGET_MICROS:-}" ]]; then
    jq --argjson b "$CHAOS_BUDGET_MICROS" '.campaigns |= map(.total_budget_micros = $b | .daily_budget_micros = $b)' \
      bench/data/campaigns.json >"$dir/campaigns.json"
  else
    cp bench/data/campaigns.json "$dir/campaigns.json"
  fi
  notice_key=$(openssl rand -hex 32)

  start_reporter
  start_helios || { check start 0 "helios not ready (log $dir/helios.log)"; return; }

  "$bin/helios-exchange" --bidder "http://127.0.0.1:$bid_port/openrtb2/bid/chaos" --rate "$rate" \
    --duration 0 --report-every 5 --users 20000 --user-ids profiles --json "$dir/exchange.json" \
    >"$dir/exchange.out" 2>"$dir/exchange.log" &
  echo $! >"$dir/exchange.pid"
  # Sample the appliance's event count (the last value before a SIGKILL is a lower bound).
  (while :; do v=$(events_now || true); [[ -n "$v" ]] && echo "$(date +%s.%N) $v" >>"$dir/events.samples"; sleep 0.5; done) &
  echo $! >"$dir/sampler.pid"

  sleep "$before"
  local t_fault produced_before_kill="" kill_lost=null
  t_fault=$(now)
  say "fault $fault at $(date -u +%T)"
  case "$fault" in
    none) ;;
    broker)
      scripts/services.sh stop kafka >/dev/null
      sleep "$outage"
      scripts/services.sh start kafka >/dev/null ;;
    redis)
      scripts/services.sh stop redis >/dev/null
      sleep 3
      scripts/services.sh start redis >/dev/null ;;
    postgres)
      pg_stop_fast
      sleep 5
      scripts/services.sh start postgres >/dev/null ;;
    reporter-kill)
      for k in 1 2 3; do
        alive reporter && kill -KILL "$(cat "$dir/reporter.pid")"
        sleep 2.5
      done ;;
    appliance-kill | appliance-kill-spooling)
      if [[ "$fault" == appliance-kill-spooling ]]; then
        scripts/services.sh stop kafka >/dev/null
        sleep "$(((outage + 1) / 2))"
      fi
      produced_before_kill=$(events_now || true)
      kill -KILL "$(cat "$dir/helios.pid")"
      rm -f "$dir/helios.pid"
      sleep 2
      echo "--- restart after SIGKILL ---" >>"$dir/helios.log"
      if [[ "$fault" == appliance-kill-spooling ]]; then
        start_helios || { check restart 0 "helios did not come back (log $dir/helios.log)"; return; }
        sleep "$((outage / 2))"
        scripts/services.sh start kafka >/dev/null
      else
        start_helios || { check restart 0 "helios did not come back (log $dir/helios.log)"; return; }
      fi ;;
  esac
  local t_fault_end
  t_fault_end=$(now)
  sleep "$after"
  # With small budgets the overspend check must bite: traffic goes on (bounded) until enough
  # campaigns ran out of budget — a loaded machine answers fewer auctions per second, so a fixed
  # duration would not be deterministic.
  local budget_wait=null
  if [[ -n "${CHAOS_BUDGET_MICROS:-}" ]]; then
    local t_bw need
    t_bw=$(now)
    need=${budget_exhausted_min:-$(jq '.campaigns | length' "$dir/campaigns.json")}
    while :; do
      budget_state
      ((exhausted >= need)) && break
      awk -v a="$(now)" -v b="$t_bw" -v m="$budget_wait_timeout" 'BEGIN {exit !(a - b >= m)}' && break
      sleep 0.5
    done
    budget_wait=$(awk -v a="$(now)" -v b="$t_bw" 'BEGIN {printf "%.1f", a - b}')
    say "budgets: $exhausted of $n_camp campaigns exhausted after ${budget_wait} s more traffic (need $need, bound ${budget_wait_timeout} s)"
  fi

  # Stop traffic; the exchange drains its in-flight auctions and notices, then writes its summary.
  stop_pid "$dir/exchange.pid" TERM 20
  stop_pid "$dir/sampler.pid" TERM 2
  local t_stop
  t_stop=$(now)
  sleep 1 # > admin.publish_ms: the last published per-core counts are final
  # The spool must be replayed before the final SIGTERM: after an outage librdkafka notices the
  # broker again only after its reconnect backoff, and the replay of a long outage takes longer
  # than the shutdown deadline (events.shutdown_timeout_ms) on a loaded machine; what is left
  # then is kept on disk for the next start (nothing is lost), but "spool bytes left 0" is
  # checked below. Wait, bounded, until the broker is up and the spool is empty.
  local spool_wait t_sw spool_left
  t_sw=$(now)
  for ((i = 0; i < spool_drain_timeout * 10; i++)); do
    spool_left=$(events_now helios_pipeline_spool_bytes)
    [[ "$(events_now helios_pipeline_broker_up)" == 1 && "${spool_left:-1}" == 0 ]] && break
    sleep 0.1
  done
  spool_wait=$(awk -v a="$(now)" -v b="$t_sw" 'BEGIN {printf "%.1f", a - b}')
  say "spool drained before shutdown: ${spool_left:-?} bytes left after ${spool_wait} s (bound ${spool_drain_timeout} s)"
  local produced_last
  produced_last=$(events_now)
  local rejected
  rejected=$(events_now helios_notices_rejected_total)
  stop_pid "$dir/helios.pid" TERM 30
  local flushed
  flushed=$(grep '"events flushed"' "$dir/helios.log" | tail -1 || true)

  # What the exchange saw answered, per event kind.
  local ex=$dir/exchange.json
  [[ -s "$ex" ]] || { check exchange-summary 0 "no $ex"; return; }
  local ex_bids ex_nobids ex_win ex_billing ex_loss ex_click ex_spend ex_timeouts ex_errors ex_nfail ex_total
  ex_bids=$(jq '.bids + .invalid_bids' "$ex")
  ex_nobids=$(jq '[.bidders[].nobids] | add' "$ex")
  ex_timeouts=$(jq '[.bidders[].timeouts] | add' "$ex")
  ex_errors=$(jq '[.bidders[].errors] | add' "$ex")
  for k in win billing loss click; do
    printf -v "ex_$k" '%s' "$(jq --arg k "$k" '.notices[$k].ok // 0' "$ex")"
  done
  ex_nfail=$(jq '([.notices[].failed] | add // 0) + .notices_dropped' "$ex")
  local ex_bfail ex_clicks_sent
  ex_bfail=$(jq '.notices.billing.failed // 0' "$ex")
  # Impressions the exchange billed (its spend covers them all) — more than the billing notices it
  # sent when its bounded drain (3 s) ended with notices still in flight.
  local ex_billed
  ex_billed=$(jq '.billed' "$ex")
  ex_clicks_sent=$(jq '.notices.click.sent // 0' "$ex")
  ex_spend=$(jq '.spend_micros' "$ex")
  ex_total=$((ex_bids + ex_nobids + ex_win + ex_billing + ex_loss + ex_click))

  # Appliance's count: the last instance's final figure, plus (after a SIGKILL) the dead one's.
  local produced
  case "$fault" in
    appliance-kill | appliance-kill-spooling) produced="" ;;
    *) produced=$produced_last ;;
  esac
  local expected=${produced:-$ex_total}

  # Drain: wait until PostgreSQL holds what was produced (or stops growing, after a SIGKILL).
  local n=0 last=-1 stable=0 t_drained
  for ((i = 0; i < drain_timeout * 2; i++)); do
    n=$(q "SELECT count(*) FROM events" 2>/dev/null || echo 0)
    [[ "$n" -ge "$expected" ]] && break
    if [[ "$n" == "$last" ]]; then stable=$((stable + 1)); else stable=0; fi
    [[ -z "$produced" && $stable -ge 30 && "$n" -gt 0 ]] && break # 15 s without growth
    last=$n
    sleep 0.5
  done
  sleep 2 # anything more (a duplicate would show now)
  t_drained=$(now)
  stop_reporter

  local total distinct
  total=$(q "SELECT count(*) FROM events")
  distinct=$(q "SELECT count(DISTINCT event_id) FROM events")
  local pg_bids pg_nobids pg_win pg_billing pg_loss pg_click
  read -r pg_bids pg_nobids pg_win pg_billing pg_loss pg_click < <(q "SELECT
    count(*) FILTER (WHERE kind=1), count(*) FILTER (WHERE kind=2), count(*) FILTER (WHERE kind=3),
    count(*) FILTER (WHERE kind=4), count(*) FILTER (WHERE kind=5), count(*) FILTER (WHERE kind=6)
    FROM events" | tr '|' ' ')
  local pg_spend
  pg_spend=$(q "SELECT coalesce(sum(clear_price_micros / 1000), 0) FROM events WHERE kind = 4")

  say "exchange: requests $(jq .requests "$ex"), bid events $ex_bids, no-bids $ex_nobids, win $ex_win, billing $ex_billing, loss $ex_loss, click $ex_click, timeouts $ex_timeouts, errors $ex_errors, notices failed $ex_nfail, spend $ex_spend µ"
  say "appliance: events ${produced:-"(killed: not countable)"}; before kill ${produced_before_kill:-n/a}; notices refused ${rejected:-?} (clicks sent by the exchange: $ex_clicks_sent); flush: ${flushed:0:300}"
  say "postgres: $total rows ($distinct distinct ids): bid $pg_bids, no-bid $pg_nobids, win $pg_win, billing $pg_billing, loss $pg_loss, click $pg_click; spend $pg_spend µ; reporter exits $(exits)"

  # 1. Exactly once.
  check "no duplicate event ids" "$([[ "$total" == "$distinct" ]] && echo 1 || echo 0)" "$total rows, $distinct distinct"
  if [[ -n "$produced" ]]; then
    check "every produced event stored" "$([[ "$total" == "$produced" ]] && echo 1 || echo 0)" "appliance emitted $produced, stored $total"
    # Notices the appliance refused (400, counted on /metrics) made no event: the exchange's count
    # is exact when every other notice and request was answered.
    if [[ "$ex_timeouts" == 0 && "$ex_errors" == 0 && "$ex_nfail" == "${rejected:-0}" ]]; then
      check "appliance count = what the exchange saw" "$([[ "$produced" == "$ex_total" ]] && echo 1 || echo 0)" "appliance $produced, exchange $ex_total"
    else
      say "note: the exchange saw $ex_timeouts timeouts, $ex_errors errors, $ex_nfail failed notices ($rejected refused by the appliance): its count ($ex_total) is not exact"
    fi
    local dropped left
    dropped=$(sed -n 's/.*"dropped":\([0-9]*\).*/\1/p' <<<"$flushed")
    left=$(sed -n 's/.*"spool_bytes_left":\([0-9]*\).*/\1/p' <<<"$flushed")
    check "spool replayed before shutdown" "$([[ "${spool_left:-1}" == 0 ]] && echo 1 || echo 0)" "${spool_left:-?} bytes left after waiting ${spool_wait} s (CHAOS_SPOOL_DRAIN_TIMEOUT ${spool_drain_timeout} s)"
    check "appliance flushed, nothing dropped" "$([[ "$dropped" == 0 && "$left" == 0 ]] && echo 1 || echo 0)" "dropped ${dropped:-?}, spool bytes left ${left:-?}"
  else
    # Per kind: fewer rows than answers the exchange saw = lost; more = events whose answer the
    # exchange never got (it timed out, or the process died before sending it).
    local lost=0 extra=0 k e g
    for k in "$ex_bids $pg_bids" "$ex_nobids $pg_nobids" "$ex_win $pg_win" "$ex_billing $pg_billing" "$ex_loss $pg_loss" "$ex_click $pg_click"; do
      read -r e g <<<"$k"
      ((e > g)) && lost=$((lost + e - g))
      ((g > e)) && extra=$((extra + g - e))
    done
    say "after SIGKILL: exchange saw $ex_total events answered; stored $total (per kind: lost $lost, stored but unanswered $extra)"
    # Every answered event was journaled before its answer left: all must arrive, once each
    # (duplicates of the replay are removed by event id: count(distinct) = count is checked above).
    check "answered events lost to SIGKILL ≤ $kill_loss_max" "$((lost <= kill_loss_max ? 1 : 0))" \
      "lost $lost (billing $((ex_billing > pg_billing ? ex_billing - pg_billing : 0))); stored but unanswered $extra"
    check "every answered notice stored" "$([[ "$pg_win" -ge "$ex_win" && "$pg_billing" -ge "$ex_billing" && "$pg_loss" -ge "$ex_loss" && "$pg_click" -ge "$ex_click" ]] && echo 1 || echo 0)" \
      "win $pg_win/$ex_win billing $pg_billing/$ex_billing loss $pg_loss/$ex_loss click $pg_click/$ex_click"
    kill_lost=$lost
  fi
  # 2. Spend = Σ billing notices (the exchange's own sum), and the rollups agree with the rows.
  if [[ "$ex_billed" == "$ex_billing" && ( -n "$produced" || "$fault" == appliance-kill* ) ]]; then
    check "spend = Σ billing notices" "$([[ "$pg_spend" == "$ex_spend" ]] && echo 1 || echo 0)" "stored $pg_spend µ, exchange billed $ex_spend µ ($ex_billing notices answered, $pg_billing rows)"
  elif [[ -n "$produced" || "$fault" == appliance-kill* ]]; then
    # Not every billed impression's notice was answered: the exchange's spend covers notices it
    # never delivered, so only the answered ones can be checked (each stored, once).
    check "spend = Σ billing notices stored" "$([[ "$pg_billing" -ge "$ex_billing" ]] && echo 1 || echo 0)" "stored $pg_spend µ over $pg_billing rows; exchange billed $ex_billed impressions ($ex_spend µ), $ex_billing billing notices answered, $ex_bfail failed, $((ex_billed - ex_billing - ex_bfail)) never sent (in flight when it stopped)"
  fi
  local mismatch
  mismatch=$(q "WITH raw AS (
      SELECT campaign_id, count(*) FILTER (WHERE kind=1) b, count(*) FILTER (WHERE kind=3) w,
             count(*) FILTER (WHERE kind=4) i, count(*) FILTER (WHERE kind=6) c,
             coalesce(sum(clear_price_micros) FILTER (WHERE kind=4), 0) s
      FROM events WHERE flags & 1 = 0 AND campaign_id <> 0 GROUP BY campaign_id),
    roll AS (
      SELECT campaign_id, sum(bids) b, sum(wins) w, sum(impressions) i, sum(clicks) c, sum(spend_cpm_micros) s
      FROM rollups WHERE gran = 3 AND dim = 0 GROUP BY campaign_id)
    SELECT count(*) FROM raw FULL JOIN roll USING (campaign_id)
    WHERE raw.b IS DISTINCT FROM roll.b OR raw.w IS DISTINCT FROM roll.w OR raw.i IS DISTINCT FROM roll.i
       OR raw.c IS DISTINCT FROM roll.c OR raw.s IS DISTINCT FROM roll.s")
  check "rollups = raw rows per campaign" "$([[ "$mismatch" == 0 ]] && echo 1 || echo 0)" "$mismatch campaigns differ (day rollups: bids, wins, impressions, clicks, spend)"
  # 3. Budgets.
  local budgets over
  budgets=$(jq -r '[.campaigns[] | "(\(.id),\(.total_budget_micros // "NULL"))"] | join(",")' "$dir/campaigns.json")
  over=$(q "WITH b(campaign_id, budget) AS (VALUES $budgets),
      s AS (SELECT campaign_id, (sum(clear_price_micros) / 1000)::bigint AS spend FROM events
            WHERE kind = 4 AND flags & 1 = 0 GROUP BY campaign_id)
    SELECT coalesce(string_agg(format('%s: %s > %s', s.campaign_id, s.spend, b.budget), '; '), '')
    FROM s JOIN b USING (campaign_id) WHERE b.budget IS NOT NULL AND s.spend * 100 > b.budget * 101")
  check "no campaign overspent > 1%" "$([[ -z "$over" ]] && echo 1 || echo 0)" "${over:-every campaign within its total budget}"
  # What the budget store holds after the appliance's final settlement (Redis): per campaign
  # what is left to bid with (remaining + leases) and what was forfeited by holders that died
  # without settling (counted as spent: the underspend, shards/src/pacing.rs), and the stored spend.
  local max_ratio
  budget_state
  max_ratio=$(q "WITH b(campaign_id, budget) AS (VALUES $budgets),
      s AS (SELECT campaign_id, sum(clear_price_micros) / 1000 AS spend FROM events
            WHERE kind = 4 AND flags & 1 = 0 GROUP BY campaign_id)
    SELECT coalesce(round(max(s.spend::numeric / b.budget), 4), 0) FROM s JOIN b USING (campaign_id)
    WHERE b.budget IS NOT NULL AND b.budget > 0")
  say "budgets: $exhausted of $n_camp campaigns exhausted (spent or forfeited ≥ 95%); highest spend/budget $max_ratio; forfeited and not charged since (underspend) $forfeit_left µ; per campaign spent/remaining/leased/forfeit: $bstate"
  if [[ -n "${CHAOS_BUDGET_MICROS:-}" ]]; then
    # The overspend check bites only if campaigns really ran out of budget during the run.
    local need=${budget_exhausted_min:-$n_camp}
    check "budgets exhausted (the overspend check bites)" "$((exhausted >= need ? 1 : 0))" "$exhausted of $n_camp campaigns exhausted (need $need; CHAOS_BUDGET_MICROS $CHAOS_BUDGET_MICROS)"
  fi

  local res
  res=$(jq -nc --arg fault "$fault" --argjson short "$short" --arg at "$(date -u +%FT%TZ)" \
    --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson rate "$rate" --argjson outage "$outage" \
    --arg produced "${produced:-}" --argjson exchange_total "$ex_total" --argjson stored "$total" \
    --argjson distinct "$distinct" --argjson pg_spend "$pg_spend" --argjson ex_spend "$ex_spend" \
    --argjson drain_s "$(awk -v a="$t_drained" -v b="$t_stop" 'BEGIN {printf "%.1f", a - b - 2}')" \
    --argjson fault_s "$(awk -v a="$t_fault_end" -v b="$t_fault" 'BEGIN {printf "%.1f", a - b}')" \
    --argjson reporter_exits "$(exits)" --argjson kill_lost "$kill_lost" \
    --arg budget "${CHAOS_BUDGET_MICROS:-}" --argjson exhausted "$exhausted" --argjson campaigns "$n_camp" \
    --argjson max_ratio "$max_ratio" --argjson forfeit_left "$forfeit_left" \
    --argjson spool_wait_s "${spool_wait:-null}" --argjson budget_wait_s "$budget_wait" \
    --argjson failed "$fault_failed" --argjson checks "[$(IFS=,; echo "${checks[*]}")]" \
    '{fault:$fault, short:($short==1), at:$at, load:$load, rate:$rate, outage_s:$outage, produced:$produced,
      exchange_total:$exchange_total, stored:$stored, distinct:$distinct, spend_stored:$pg_spend,
      spend_exchange:$ex_spend, kill_lost:$kill_lost, fault_s:$fault_s, drain_s:$drain_s, reporter_exits:$reporter_exits,
      budget_micros:$budget, budgets_exhausted:$exhausted, campaigns:$campaigns, max_spend_ratio:$max_ratio,
      forfeit_left_micros:$forfeit_left, spool_wait_s:$spool_wait_s, budget_wait_s:$budget_wait_s,
      ok:($failed==0), checks:$checks}')
  echo "$res" >>"$run_root/results.jsonl"
  echo "$res" >"$dir/result.json"
}

for f in "${faults[@]}"; do
  run_fault "$f"
done
cleanup
dir=
if ((failures)); then
  say "$failures check(s) failed (results: $run_root/results.jsonl)"
  exit 1
fi
say "all checks passed (results: $run_root/results.jsonl)"
