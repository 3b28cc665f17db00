#!/usr/bin/env python3
"""Checks that every series the alert/recording rules and the Grafana dashboard read is really
exposed: each vector selector (metric name and label matchers) of every rule expression and every
dashboard query must select at least one series on a live Prometheus that scrapes the real
processes (appliance, reporter, gateway). A renamed metric or label value (`reason="overload"`
against the appliance's `overloaded`) is a failure here, where promtool's checks pass.

  check_exposed.py --prometheus URL --rules R.yml [--rules ...] --dashboard D.json [...]
                   [--list]     # print the selectors found and exit

Recording-rule names (`level:metric:op`) used bare are not looked up: they must be defined by a
`record:` in the given rule files, and their own expressions are checked instead; used with label
matchers they must also select a live series (so the rules must have run on traffic). `ALERTS` is
Prometheus's own and exists only while an alert is active: not looked up. Dashboard variables are
replaced by `.*` (as "All" would). Prints one line per selector, exits non-zero on any miss.
"""
import argparse
import json
import os
import re
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "grafana"))
from check_dashboard import exprs_of, substitute  # noqa: E402 — the dashboard's own reading

# Words of PromQL that look like metric names but are not.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "offset", "bool", "inf", "nan"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile"}
# Series Prometheus makes itself and only while alerts are pending or firing.
INTERNAL = {"ALERTS", "ALERTS_FOR_STATE"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def skip_string(s, i):
    q = s[i]
    i += 1
    while i < len(s) and s[i] != q:
        i += 2 if s[i] == "\\" else 1
    return i + 1


def skip_group(s, i, open_, close):
    """From s[i] == open_, the index after the matching close (strings respected)."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = skip_string(s, i)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def selectors(expr):
    """The vector selectors of a PromQL expression, as `name{matchers}` strings."""
    out = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = skip_string(expr, i)
        elif c == "[":
            i = skip_group(expr, i, "[", "]")
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            while i < n and (expr[i].isalnum() or expr[i] in "._+"):
                i += 1
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            word = expr[i:j]
            k = j
            while k < n and expr[k].isspace():
                k += 1
            nxt = expr[k] if k < n else ""
            if word.lower() in GROUPING and nxt == "(":
                i = skip_group(expr, k, "(", ")")  # label list, not series
            elif nxt == "(" or word.lower() in KEYWORDS or word in AGGREGATIONS:
                i = j  # function call, aggregation or keyword
            elif nxt == "{":
                end = skip_group(expr, k, "{", "}")
                out.append(word + expr[k:end])
                i = end
            else:
                out.append(word)
                i = j
        elif c == "{":
            end = skip_group(expr, i, "{", "}")
            out.append(expr[i:end])
            i = end
        else:
            i += 1
    return out


def rule_exprs(paths):
    """(record names, [(where, expr)]) from rule files (flow style `expr: …` or block `expr: |`)."""
    records, exprs = set(), []
    for path in paths:
        lines = open(path, encoding="utf-8").read().splitlines()
        name = path
        i = 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r"\s*- (record|alert):\s*(\S+)", line)
            if m:
                name = m.group(2)
                if m.group(1) == "record":
                    records.add(name)
            m = re.match(r"(\s*)expr:\s*(.*)$", line)
            if m:
                body = m.group(2).strip()
                if body in ("|", ">", "|-", ">-"):
                    indent = len(m.group(1))
                    block = []
                    i += 1
                    while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                        block.append(lines[i].strip())
                        i += 1
                    exprs.append((f"{path}: {name}", " ".join(block)))
                    continue
                exprs.append((f"{path}: {name}", body))
            i += 1
    return records, exprs


def dashboard_exprs(path):
    """(where, expr) of every panel query, annotation and `label_values` variable of a dashboard,
    variables substituted as deploy/grafana/check_dashboard.py does."""
    dash = json.load(open(path, encoding="utf-8"))
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    out = [(f"{path}: panel '{p.get('title')}'", substitute(t["expr"], variables))
           for p, t in exprs_of(dash) if t.get("expr")]
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((.+),\s*\w+\)$", q or "")
        if m:
            out.append((f"{path}: variable ${v['name']}", substitute(m.group(1), variables)))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"{path}: annotation '{a.get('name')}'", substitute(a["expr"], variables)))
    return out


def count(prom, sel):
    url = prom.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": f"count({sel})"})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body.get("error", "query failed"))
    res = body["data"]["result"]
    return int(float(res[0]["value"][1])) if res else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus")
    ap.add_argument("--rules", action="append", default=[])
    ap.add_argument("--dashboard", action="append", default=[])
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()

    records, exprs = rule_exprs(a.rules)
    for d in a.dashboard:
        exprs += dashboard_exprs(d)
    used = {}  # selector -> first place it is used
    for where, e in exprs:
        for s in selectors(e):
            used.setdefault(s, where)
    if a.list:
        for s, where in sorted(used.items()):
            print(f"{s}\t{where}")
        return 0
    if not a.prometheus:
        ap.error("--prometheus is needed unless --list")

    failures = 0
    names = set()
    for s, where in sorted(used.items()):
        name = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", s)
        name = name.group(0) if name else ""
        names.add(name)
        if name in INTERNAL:
            ok = True
            print(f"  ok    {s}: Prometheus's own series, present only while alerts are active ({where})")
        elif ":" in name and s == name:
            ok = name in records
            print(("  ok    " if ok else "  FAIL  ") + f"{s}: recording rule {'defined' if ok else 'NOT defined'} ({where})")
        elif ":" in name and name not in records:
            ok = False
            print(f"  FAIL  {s}: recording rule NOT defined ({where})")
        else:
            # A metric, or a recording rule narrowed by labels (`{reason="overloaded"}`): the
            # labels must match something live, so a recording rule must have been evaluated on
            # traffic (the caller waits for that).
            try:
                n = count(a.prometheus, s)
                ok, why = n > 0, f"{n} series"
            except Exception as e:  # noqa: BLE001 — reported as the failure
                ok, why = False, str(e)
            print(("  ok    " if ok else "  FAIL  ") + f"{s}: {why} ({where})")
        failures += 0 if ok else 1
    print(f"{len(used)} selectors over {len(names)} names from {len(exprs)} expressions; {failures} not exposed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
