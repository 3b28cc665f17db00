#!/usr/bin/env python3
"""Policy checks on the rendered manifests (kubectl kustomize deploy/k8s > FILE), offline.

  check_manifests.py RENDERED.yaml

What Helios's deployment promises, checked resource by resource: the appliance is a DaemonSet whose
pods are Guaranteed QoS with integer CPUs (static CPU manager → exclusive cores), configured from a
ConfigMap and a Secret, probed on /readyz and /healthz; Kafka, Redis and PostgreSQL are StatefulSets
with persistent volumes; the reporter is a Deployment; the gateway is HAProxy behind a LoadBalancer;
every container runs as non-root without privilege escalation, drops all capabilities and uses a
pinned image tag; every ConfigMap/Secret a pod needs is rendered (or documented as made by hand).
Prints one line per check; exits non-zero on any failure. Needs PyYAML (in the deploy tools venv).
"""
import sys
from fractions import Fraction

import yaml

# Secrets/ConfigMaps created by the operator, not by kustomize (README.md says how).
MADE_BY_HAND = {("Secret", "helios-gateway-tls"), ("ConfigMap", "helios-campaigns")}

failures = 0


def check(ok, what):
    global failures
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures += 1


def qty(v):
    """Kubernetes quantity → Fraction (cpu in cores, memory in bytes)."""
    s = str(v)
    units = {"m": Fraction(1, 1000), "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
             "k": 1000, "M": 1000**2, "G": 1000**3}
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return Fraction(s[: -len(u)]) * units[u]
    return Fraction(s)


def pod_spec(obj):
    return obj.get("spec", {}).get("template", {}).get("spec", {})


def base_name(name, generated):
    """kustomize appends a hash to generated names: map it back."""
    for g in generated:
        if name == g or name.startswith(g + "-") and len(name) == len(g) + 11:
            return g
    return name


def main(path):
    docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
    by = {}
    for d in docs:
        by.setdefault((d["kind"], d["metadata"]["name"]), d)
    names = {k[1] for k in by}
    generated = set()
    for kind, name in by:
        if kind in ("ConfigMap", "Secret") and len(name) > 11 and name[-11] == "-":
            generated.add(name[:-11])

    check(all(d["metadata"].get("namespace") == "helios" for d in docs if d["kind"] not in ("Namespace",)),
          "every namespaced resource is in namespace helios")

    # --- the appliance ---
    ds = by.get(("DaemonSet", "helios-appliance"))
    check(ds is not None, "appliance is a DaemonSet")
    if ds:
        spec = pod_spec(ds)
        conts = spec.get("containers", []) + spec.get("initContainers", [])
        guaranteed = all(
            c.get("resources", {}).get("requests", {}).get(r) is not None
            and qty(c["resources"]["requests"][r]) == qty(c["resources"].get("limits", {}).get(r, -1))
            for c in conts for r in ("cpu", "memory"))
        check(guaranteed, "appliance: every container (init too) has requests == limits for cpu and memory (Guaranteed QoS)")
        main_c = spec["containers"][0]
        cpu = qty(main_c["resources"]["limits"]["cpu"])
        check(cpu.denominator == 1 and cpu >= 1, f"appliance: integer CPUs ({cpu}) for exclusive cores")
        check(main_c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "appliance: readiness on /readyz")
        check(main_c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "appliance: liveness on /healthz")
        srcs = [s for v in spec.get("volumes", []) for s in v.get("projected", {}).get("sources", [])]
        cms = [s["configMap"]["name"] for s in srcs if "configMap" in s] + [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
        secs = [s["secret"]["name"] for s in srcs if "secret" in s] + [v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v]
        secs += [e["valueFrom"]["secretKeyRef"]["name"] for e in main_c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
        check(any(base_name(n, generated) == "helios-config" for n in cms), "appliance: configuration from the ConfigMap helios-config")
        check(any(base_name(n, generated) == "helios-secrets" for n in secs), "appliance: secrets from the Secret helios-secrets")
        check(ds["metadata"]["name"] in {k[1] for k in by if k[0] == "Service"}, "appliance: a (headless) Service for the gateway")
        svc = by.get(("Service", "helios-appliance"), {})
        check(svc.get("spec", {}).get("clusterIP") == "None", "appliance Service is headless (one address per pod)")

    for name in ("helios-kafka", "helios-redis", "helios-postgres"):
        st = by.get(("StatefulSet", name))
        check(st is not None and bool(st["spec"].get("volumeClaimTemplates")), f"{name}: StatefulSet with a persistent volume")
    check(("Deployment", "helios-reporter") in by, "reporter is a Deployment")
    gw = by.get(("Deployment", "helios-gateway"))
    check(gw is not None and pod_spec(gw)["containers"][0]["image"].startswith("haproxy:2.6"), "gateway is HAProxy 2.6")
    check(by.get(("Service", "helios-gateway"), {}).get("spec", {}).get("type") == "LoadBalancer", "gateway Service is a LoadBalancer (ingress)")

    # --- every workload ---
    for (kind, name), d in sorted(by.items()):
        if kind not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        spec = pod_spec(d)
        psc = spec.get("securityContext", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            who = f"{name}/{c['name']}"
            img = c["image"]
            check(":" in img and not img.endswith(":latest"), f"{who}: pinned image tag ({img})")
            check(sc.get("allowPrivilegeEscalation") is False, f"{who}: no privilege escalation")
            check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{who}: drops all capabilities")
            root_ok = sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
            # The one exception: the appliance's init container that chowns the node's spool dir.
            if who == "helios-appliance/spool-owner":
                root_ok = sc.get("capabilities", {}).get("add") == ["CHOWN"] and c.get("command", [""])[0].endswith("chown")
            check(root_ok, f"{who}: runs as non-root" + (" (except a CHOWN-only init step)" if who == "helios-appliance/spool-owner" else ""))
            check("limits" in c.get("resources", {}), f"{who}: has resource limits")
        # Referenced ConfigMaps and Secrets exist.
        refs = []
        for v in spec.get("volumes", []):
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"], v["configMap"].get("optional", False)))
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"], v["secret"].get("optional", False)))
            for s in v.get("projected", {}).get("sources", []):
                if "configMap" in s:
                    refs.append(("ConfigMap", s["configMap"]["name"], s["configMap"].get("optional", False)))
                if "secret" in s:
                    refs.append(("Secret", s["secret"]["name"], s["secret"].get("optional", False)))
        for c in spec.get("containers", []):
            for e in c.get("env", []):
                r = e.get("valueFrom", {}).get("secretKeyRef")
                if r:
                    refs.append(("Secret", r["name"], r.get("optional", False)))
        for kind2, ref, optional in refs:
            present = (kind2, ref) in by
            hand = (kind2, base_name(ref, generated)) in MADE_BY_HAND
            check(present or optional or hand, f"{name}: {kind2} {ref} is rendered" + (" (made by hand, README)" if hand and not present else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
