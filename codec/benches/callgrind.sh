#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) per request for decode + validate + encode of
# corpus files, per decoder. Each figure is (Ir of 1 + N rounds − Ir of 1 round) / N, which
# removes start-up and file reading. Prints a markdown table.
#   codec/benches/callgrind.sh [ROUNDS]      (default 100)
set -euo pipefail
rounds=${1:-100}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
source scripts/env.sh
cargo build --release -q -p helios-codec --example codec_work
bin="$CARGO_TARGET_DIR/release/examples/codec_work"
corpus=codec/tests/corpus/valid
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ir() { # decoder rounds files...
  local d=$1 n=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$d" "$n" "$@" >/dev/null 2>"$out/err"
  awk '/Collected/ {print $4}' "$out/err"
}
all=$(ls "$corpus"/*.json)
echo "| input | bytes | serde_json | sonic_rs | simd_json (copy) | codec (shipped) |"
echo "|---|---|---|---|---|---|"
for set in size-small size-medium size-large all; do
  if [[ $set == all ]]; then files=$all; label="corpus (all valid files)"; else files="$corpus/$set.json"; label=$set; fi
  # shellcheck disable=SC2086
  bytes=$(cat $files | wc -c)
  row="| $label | $bytes |"
  for d in serde_json sonic_rs simd_json codec; do
    # shellcheck disable=SC2086
    a=$(ir "$d" 1 $files); b=$(ir "$d" $((rounds + 1)) $files)
    row="$row $(( (b - a) / rounds )) |"
  done
  echo "$row"
done
