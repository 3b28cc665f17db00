#!/usr/bin/env bash
# Runs every test: format and lint gates, unit/property/integration tests against real services
# (started here, stopped by PID on exit), then the non-Rust checks that exist.
#   scripts/test.sh              everything
#   scripts/test.sh --lint-only  fmt + clippy
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
source scripts/env.sh

step() { printf '\n== %s ==\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
[[ "${1:-}" == "--lint-only" ]] && exit 0

step "services (redis, postgres, kafka)"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
scripts/services.sh start
# Integration tests fail (never skip) when a service they need is missing.
export HELIOS_REQUIRE_SERVICES=1

step "doc tests"
cargo test --workspace --locked --doc -q
step "cargo nextest (unit, property, integration)"
cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$HELIOS_CACHE/nextest.log"
rust_passed=$(grep -Eo '[0-9]+ passed' "$HELIOS_CACHE/nextest.log" | tail -1 | grep -Eo '[0-9]+')

extra_passed=0
for extra in scripts/test.d/*.sh; do
  [[ -e "$extra" ]] || continue
  step "$extra"
  bash "$extra"
  extra_passed=$((extra_passed + 1))
done
step "all tests passed"
echo "rust tests: ${rust_passed:-0}, extra suites: $extra_passed"
echo "total: $((${rust_passed:-0} + extra_passed)) passed, 0 failed"
