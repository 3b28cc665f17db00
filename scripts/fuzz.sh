#!/usr/bin/env bash
# Fuzzes codec::decode_valid (codec/fuzz, target `decode`) with cargo-fuzz / libFuzzer and
# AddressSanitizer for a bounded time.
#   scripts/fuzz.sh [SECONDS]     default 60; `make fuzz` passes FUZZ_SECONDS
# Seeds: codec/tests/corpus/{valid,malformed}. What libFuzzer learns is kept outside the clone
# ($HELIOS_CACHE/fuzz-corpus/decode) so later runs start from it; a crash is written to
# codec/fuzz/artifacts/decode/ and makes this script fail. cargo-fuzz is installed (once) into
# $HELIOS_TOOLS. The toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z flags.
set -euo pipefail
secs=${1:-60}
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root="$here/.."
source "$here/env.sh"

if [[ ! -x "$HELIOS_TOOLS/bin/cargo-fuzz" ]]; then
  echo "fuzz: installing cargo-fuzz into $HELIOS_TOOLS"
  CARGO_TARGET_DIR="$HELIOS_CACHE/cargo-fuzz-target" \
    cargo install cargo-fuzz --locked --root "$HELIOS_TOOLS" --quiet
fi

export RUSTC_BOOTSTRAP=1
work="$HELIOS_CACHE/fuzz-corpus/decode"
mkdir -p "$work"
cd "$root/codec/fuzz"
# Its own target dir: sanitizer flags would otherwise invalidate the main build's cache.
cargo fuzz build decode --target-dir "$HELIOS_CACHE/fuzz-target"
echo "fuzz: running decode for ${secs}s (corpus $work)"
cargo fuzz run decode --target-dir "$HELIOS_CACHE/fuzz-target" \
  "$work" ../tests/corpus/valid ../tests/corpus/malformed -- \
  -max_total_time="$secs" -max_len=300000 -timeout=10 -rss_limit_mb=2048 \
  -dict=openrtb.dict -print_final_stats=1
