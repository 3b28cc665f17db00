#!/usr/bin/env python3
"""Offline checks of a Grafana dashboard JSON (no Grafana runs here).

  check_dashboard.py DASHBOARD.json --rules RULES.yml [--rules ...] --metric NAME [--metric ...]
  check_dashboard.py DASHBOARD.json --print-exprs      # the queries, variables substituted, one a line

Checks: the file is JSON with uid/title/schemaVersion/panels; panel ids are unique; panels lie in
the 24-column grid without overlapping; every query target has a refId and an expr and uses the
dashboard's datasource variable; every $variable used is defined (or Grafana's own); every query is
valid PromQL (written as recording rules into a temporary file and checked with
`promtool check rules`); every --metric is used by a query, directly or through a recording rule
from --rules that uses it. Prints one line per check and exits non-zero on any failure.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all"}
SUBST = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def exprs_of(dash):
    out = []
    for p in dash.get("panels", []):
        for t in p.get("targets", []) or []:
            out.append((p, t))
        for sub in p.get("panels", []) or []:  # collapsed rows keep their panels inside
            for t in sub.get("targets", []) or []:
                out.append((sub, t))
    return out


def substitute(expr, variables):
    def rep(m):
        name = m.group(1) or m.group(2)
        if name in SUBST:
            return SUBST[name]
        if name in variables:
            return ".*"
        return m.group(0)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", rep, expr)


def recording_rules(paths):
    """name -> expr, from the simple layout of our rule files (record: / expr: pairs)."""
    rules = {}
    for path in paths:
        name = None
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"\s*- record:\s*(\S+)", line)
                if m:
                    name = m.group(1)
                    continue
                m = re.match(r"\s*expr:\s*(.+)", line)
                if m and name:
                    rules[name] = m.group(1)
                    name = None
    return rules


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dashboard")
    ap.add_argument("--rules", action="append", default=[])
    ap.add_argument("--metric", action="append", default=[])
    ap.add_argument("--print-exprs", action="store_true")
    a = ap.parse_args()

    failures = 0

    def check(ok, what):
        nonlocal failures
        print(("  ok    " if ok else "  FAIL  ") + what)
        if not ok:
            failures += 1

    with open(a.dashboard, encoding="utf-8") as f:
        dash = json.load(f)  # raises (exit 1) on malformed JSON
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    targets = exprs_of(dash)
    annotations = [x for x in dash.get("annotations", {}).get("list", []) if x.get("expr")]
    all_exprs = [t["expr"] for _, t in targets if "expr" in t] + [x["expr"] for x in annotations]

    if a.print_exprs:
        for e in all_exprs:
            print(substitute(e, variables))
        return 0

    check(all(k in dash for k in ("uid", "title", "schemaVersion", "panels")), "has uid, title, schemaVersion, panels")
    ids = [p["id"] for p in dash["panels"]]
    check(len(ids) == len(set(ids)), f"{len(ids)} panel ids, all distinct")
    cells = {}
    grid_ok = True
    for p in dash["panels"]:
        g = p.get("gridPos", {})
        if not all(k in g for k in "hwxy") or g["x"] + g["w"] > 24 or g["w"] <= 0 or g["h"] <= 0:
            grid_ok = False
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    grid_ok = False
                cells[(x, y)] = p["id"]
    check(grid_ok, "panels lie in the 24-column grid without overlapping")
    data_panels = [p for p in dash["panels"] if p.get("type") != "row"]
    check(all(p.get("targets") for p in data_panels), f"each of the {len(data_panels)} data panels has queries")
    check(all(t.get("refId") and t.get("expr") for _, t in targets), f"{len(targets)} queries, each with refId and expr")
    check(all(p.get("datasource", {}).get("uid") == "${datasource}" for p in data_panels),
          "every panel uses the ${datasource} variable")
    used = set()
    for e in all_exprs:
        used |= {m.group(1) or m.group(2) for m in re.finditer(r"\$\{(\w+)\}|\$(\w+)", e)}
    undefined = used - variables - BUILTIN_VARS
    check(not undefined, f"every $variable in queries is defined (undefined: {sorted(undefined) or 'none'})")

    # PromQL validity: promtool parses each query as a recording rule's expr.
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
        tmp.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, e in enumerate(all_exprs):
            tmp.write(f"      - record: dashboard:q{i}\n        expr: {json.dumps(substitute(e, variables))}\n")
        path = tmp.name
    try:
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr, file=sys.stderr)
        check(r.returncode == 0, f"all {len(all_exprs)} queries are valid PromQL (promtool check rules)")
    finally:
        os.unlink(path)

    rules = recording_rules(a.rules)
    for m in a.metric:
        direct = any(m in e for e in all_exprs)
        via = [name for name, rexpr in rules.items() if m in rexpr and any(name in e for e in all_exprs)]
        check(direct or bool(via), f"metric {m} is shown" + (" (directly)" if direct else f" (via {', '.join(via)})" if via else ""))

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
