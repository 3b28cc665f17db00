#!/usr/bin/env bash
# Builds the advertiser dashboard (reporter/dashboard) to static files in reporter/dashboard/dist,
# which helios-reporter serves with --dashboard-dir. Installs exactly the committed
# package-lock.json (npm ci), type-checks, runs the unit tests, then bundles with Vite.
#   scripts/build-dashboard.sh            install (if needed), test, build
#   scripts/build-dashboard.sh --no-test  skip the unit tests
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../reporter/dashboard"
command -v npm >/dev/null || { echo "build-dashboard: npm is not installed (apt-get install nodejs npm)" >&2; exit 1; }
# Reinstall only when the lock file changed since the last install.
if [[ ! -f node_modules/.package-lock.json ]] || ! cmp -s package-lock.json node_modules/.helios-lock; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.helios-lock
fi
[[ "${1:-}" == "--no-test" ]] || npm test --silent
npm run build --silent
echo "build-dashboard: $(pwd)/dist"
