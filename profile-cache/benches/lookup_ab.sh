#!/usr/bin/env bash
# A/B run of two or more builds of the `lookup_tail` bench (benches/lookup_tail.rs built against
# different versions of the library — since session 5 the bench uses the prefetch API, so the
# library must have it; the bench includes benches/support/, which goes with it), run
# alternately as separate processes on one machine, so every build sees the same spells of load
# from other tenants.
#
# Usage: lookup_ab.sh RUNS LABEL=BINARY [LABEL=BINARY ...]
#   RUNS     how many times each build runs (the order of builds reverses every other run)
#   LABEL    name of the build in the output (e.g. s3, s4)
#   BINARY   a `lookup_tail` bench binary (`cargo bench --bench lookup_tail --no-run` prints it)
# The bench's own environment passes through (PROFILES, LOOKUPS, ROUNDS, VARIANTS, CPU, CPU_W,
# FIFO_PRIO, UPDATES); each process builds its own replica, then runs ROUNDS rounds.
# Output (stdout): every line the bench printed, as JSON with "build" and "run" added, then one
# "ab_summary" line per build, variant and case: the median, min and max over every round of
# every run of the timer-subtracted per-lookup p99, and the medians of p50 and p99.9.
# Every process is bounded by AB_TIMEOUT seconds (default 600).
set -euo pipefail
if (($# < 2)); then
    sed -n '2,17p' "$0" >&2
    exit 2
fi
runs=$1
shift
builds=("$@")
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for ((r = 0; r < runs; r++)); do
    order=("${builds[@]}")
    if ((r % 2 == 1)); then
        order=()
        for ((i = ${#builds[@]} - 1; i >= 0; i--)); do order+=("${builds[i]}"); done
    fi
    for b in "${order[@]}"; do
        label=${b%%=*}
        bin=${b#*=}
        timeout "${AB_TIMEOUT:-600}" "$bin" --bench |
            jq -c --arg b "$label" --argjson r "$r" '. + {build: $b, run: $r}' | tee -a "$tmp"
    done
done
jq -sc '
  [ .[] | select(.per_lookup_ns != null) ]
  | group_by([.build, .variant, .case])[]
  | (map(.per_lookup_ns.net_p99) | sort) as $p99
  | (map(.per_lookup_ns.net_p50) | sort) as $p50
  | (map(.per_lookup_ns.net_p999) | sort) as $p999
  | { ab_summary: .[0].build, variant: .[0].variant, case: .[0].case, rounds: length,
      net_p50_median: $p50[length / 2 | floor], net_p99_median: $p99[length / 2 | floor],
      net_p99_min: $p99[0], net_p99_max: $p99[-1], net_p999_median: $p999[length / 2 | floor] }
' "$tmp"
