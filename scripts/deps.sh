#!/usr/bin/env bash
# Installs everything Helios needs on a fresh Debian 12 machine, idempotently.
#   scripts/deps.sh            apt packages + Tansu (the Kafka-compatible broker)
#   scripts/deps.sh --apt      apt packages only
# Tools built from crates.io go under $HELIOS_CACHE (default /var/cache/helios), outside the clone,
# so a second run (or a second clone) reuses them.
set -euo pipefail
HELIOS_CACHE=${HELIOS_CACHE:-/var/cache/helios}
TOOLS="$HELIOS_CACHE/tools"
TANSU_VERSION=${TANSU_VERSION:-}   # empty = newest on crates.io at install time, pinned by --locked
mkdir -p "$HELIOS_CACHE" "$TOOLS"

here=$(cd "$(dirname "$0")" && pwd)
# One package per line in scripts/apt/*.txt ('#' starts a comment).
mapfile -t APT_PACKAGES < <(cat "$here"/apt/*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
  echo "deps: installing apt packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
[[ "${1:-}" == "--apt" ]] && exit 0

if [[ ! -x "$TOOLS/bin/tansu" ]]; then
  echo "deps: building tansu (Kafka-wire-compatible broker) into $TOOLS — takes a few minutes"
  ver=()
  [[ -n "$TANSU_VERSION" ]] && ver=(--version "$TANSU_VERSION")
  CARGO_TARGET_DIR="$HELIOS_CACHE/tansu-target" \
    cargo install tansu "${ver[@]}" --locked --features libsql,dynostore --root "$TOOLS" --quiet
fi
echo "deps: ok"
