#!/usr/bin/env bash
# Copies the files that deploy/k8s shares with the rest of deploy/ into deploy/k8s/files/, so that
# `kubectl apply -k deploy/k8s` works without --load-restrictor (kustomize reads no file outside its
# directory). scripts/test.d/deploy-k8s.sh fails when a copy differs from its source: after editing
# deploy/haproxy/haproxy.cfg or deploy/prometheus/rules/*.yml, run this and commit the copies.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(cd "$here/.." && pwd)
out=${1:-$here/files}
mkdir -p "$out"
cp "$deploy/haproxy/haproxy.cfg" "$out/haproxy.cfg"
"$deploy/haproxy/render-appliances.sh" --dns helios-appliance.helios.svc.cluster.local:8080/9100 64 >"$out/appliances.cfg"
cp "$deploy/prometheus/rules/helios-recording.yml" "$deploy/prometheus/rules/helios-alerts.yml" "$out/"
cp "$deploy/haproxy/dev/rate-limits.map" "$out/rate-limits.map"
cp "$deploy/grafana/helios-overview.json" "$out/grafana-helios-overview.json"
