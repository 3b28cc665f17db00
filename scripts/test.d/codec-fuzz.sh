#!/usr/bin/env bash
# make test: fuzz the codec's decoder briefly (30 s); fails on any crash libFuzzer finds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../fuzz.sh" "${CODEC_FUZZ_SECONDS:-30}"
