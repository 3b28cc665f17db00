#!/usr/bin/env python3
"""Turns one `make bench` run (helios-load JSON reports in --dir) into bench/results.json, an SVG
plot of latency percentiles against offered load, and a dated section in bench/RESULTS.md.

Standard library only. Keys of results.json this run does not measure keep the value an earlier
run (or another issue's benchmark) wrote there, else null.
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess

KEYS = [
    "machine", "date", "null_cpu_us_per_req", "helios_cpu_us_per_req", "null_rps", "helios_rps",
    "conventional_rps", "glommio_null_rps", "tokio_null_rps", "haproxy_204_rps",
    "helios_p99_us_at_50pct", "conventional_p99_us_at_50pct", "own_time_p99_us",
    "allocs_per_request", "syscalls_per_request", "decision_p99_us_1000_campaigns",
    "profile_lookup_p99_ns", "profile_lookup_prefetched_p99_ns", "profile_bytes_each_10m", "replication_lag_p99_ms",
    "pipeline_events_per_s", "reporter_ingest_events_per_s", "api_p95_ms_100m_events",
]
SERVERS = ["null", "null-epoll", "null-glommio", "haproxy", "helios", "helios-noevents",
           "helios-noevents-epoll", "helios-noevents-glommio", "conventional"]
LABEL = {"null": "null (appliance --null, io_uring)", "null-epoll": "null, epoll driver",
         "null-glommio": "null, glommio driver (bench)",
         "haproxy": "haproxy-204", "helios": "Helios full path",
         "helios-noevents": "Helios, events off (io_uring)",
         "helios-noevents-epoll": "Helios, events off, epoll driver",
         "helios-noevents-glommio": "Helios, events off, glommio driver (bench)",
         "conventional": "conventional"}
COLOUR = {"null": "#888888", "null-epoll": "#bbbbbb", "null-glommio": "#9b5de5", "haproxy": "#2a9d8f",
          "helios": "#e76f51", "helios-noevents": "#f4a261", "helios-noevents-epoll": "#e9c46a",
          "helios-noevents-glommio": "#c77dff", "conventional": "#264653"}
# Drawn in the plot (the driver variants are in the table only, to keep the plot readable).
PLOTTED = ["null", "haproxy", "helios", "helios-noevents", "conventional"]


INTRO = """Written by `make bench` (scripts/bench.sh, bench/report.py). One server at a time is pinned to
one CPU and `helios-load` to the other. Per server: closed-loop max throughput (the generator's CPU
beside it: on 2 cores the generator may saturate first), then open loop at 50% and 80% of that max,
then open loop at the common rate (50% of Helios's max) where the server's CPU time per request
(utime+stime from /proc over the measured window ÷ answers) is the primary figure and
`req/s per server core` = 1 s ÷ that time. Latency is from the intended send time (coordinated
omission corrected). Syscalls per request: `perf stat -e raw_syscalls:sys_enter` on the server
during its 50% run. Each run below is appended, newest last; bench/results.json holds the latest."""


def load(d, name, tag):
    p = os.path.join(d, f"{name}-{tag}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU, {model}, Linux {platform.release()}"


def per_core_rps(cpu_us):
    return round(1e6 / cpu_us) if cpu_us else None


def r1(v):
    return None if v is None else round(v, 2)


def svg_plot(runs, path):
    """Log-log plot: x offered req/s, y latency µs; p50 dashed, p99 solid, one colour a server."""
    pts = [(n, r["offered_rps"], r["latency"]) for n, rs in runs.items() for r in rs
           if r and r.get("offered_rps") and r["latency"]["count"] > 0]
    W, H, L, R, T, B = 840, 500, 100, 230, 40, 60
    if not pts:
        open(path, "w").write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"><text x="20" y="40">no open-loop runs</text></svg>\n')
        return
    xs = [p[1] for p in pts]
    ys = [v for p in pts for v in (p[2]["p50_us"], p[2]["p99_us"], p[2]["p999_us"]) if v > 0]
    x0, x1 = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)) + 1e-9)
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)) + 1e-9)
    x1 = max(x1, x0 + 1)
    y1 = max(y1, y0 + 1)
    sx = lambda v: L + (math.log10(v) - x0) / (x1 - x0) * (W - L - R)
    sy = lambda v: H - B - (math.log10(max(v, 10 ** y0)) - y0) / (y1 - y0) * (H - T - B)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="22" font-size="15">Latency against offered load (open loop, coordinated-omission corrected)</text>']
    for e in range(x0, x1 + 1):
        x = sx(10 ** e)
        o.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#eee"/>')
        o.append(f'<text x="{x:.1f}" y="{H - B + 18}" text-anchor="middle">{10 ** e:,}</text>')
    for e in range(y0, y1 + 1):
        y = sy(10 ** e)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#eee"/>')
        o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:,} µs</text>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">offered load, requests/s (log)</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
    ly = T + 10
    for n in PLOTTED:
        rs = sorted([p for p in pts if p[0] == n], key=lambda p: p[1])
        if not rs:
            continue
        c = COLOUR[n]
        for key, dash in (("p50_us", "5,4"), ("p99_us", "")):
            line = " ".join(f"{sx(p[1]):.1f},{sy(p[2][key]):.1f}" for p in rs)
            o.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}"/>')
            for p in rs:
                o.append(f'<circle cx="{sx(p[1]):.1f}" cy="{sy(p[2][key]):.1f}" r="3" fill="{c}"/>')
        o.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 40}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{W - R + 46}" y="{ly + 4}">{LABEL[n]}</text>')
        ly += 20
    o.append(f'<text x="{W - R + 15}" y="{ly + 10}">solid: p99, dashed: p50</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, (int,)) or (isinstance(v, float) and v >= 1000):
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--common-rate", type=int, default=0)
    ap.add_argument("--common-from", default="")
    ap.add_argument("--gen-cpu", default="0")
    ap.add_argument("--server-cpu", default="1")
    ap.add_argument("--conns", default="32")
    ap.add_argument("--duration", default="8")
    ap.add_argument("--warmup", default="2")
    a = ap.parse_args()

    runs = {n: [load(a.dir, n, t) for t in ("p50", "p80", "common")] for n in SERVERS}
    maxes = {n: load(a.dir, n, "max") for n in SERVERS}
    sysc = {}
    for n in SERVERS:
        p = os.path.join(a.dir, f"{n}-syscalls.json")
        if os.path.exists(p):
            sysc[n] = json.load(open(p))["per_request"]
    common = {n: load(a.dir, n, "common") for n in SERVERS}
    cpu = {n: (common[n] or {}).get("server_cpu_us_per_req") for n in SERVERS}
    now = datetime.datetime.now(datetime.timezone.utc)

    def side(name):
        p = os.path.join(a.dir, name)
        try:
            return json.load(open(p)) if os.path.exists(p) else None
        except ValueError:
            return None
    own = side("owntime.json") or {}
    cg = side("callgrind.json")
    ovl = side(os.path.join("overload", "summary.json"))
    own_t, dec = own.get("own_time") or {}, own.get("decision") or {}

    old = {}
    if os.path.exists(a.results):
        try:
            old = json.load(open(a.results))
        except (OSError, ValueError):
            old = {}
    res = {k: old.get(k) for k in KEYS}
    measured = {
        "machine": machine(),
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "null_cpu_us_per_req": r1(cpu["null"]),
        "helios_cpu_us_per_req": r1(cpu["helios"]),
        "null_rps": per_core_rps(cpu["null"]),
        "helios_rps": per_core_rps(cpu["helios"]),
        "conventional_rps": per_core_rps(cpu["conventional"]),
        "tokio_null_rps": per_core_rps(cpu["null-epoll"]),
        "haproxy_204_rps": per_core_rps(cpu["haproxy"]),
        "helios_p99_us_at_50pct": r1((runs["helios"][0] or {}).get("latency", {}).get("p99_us")),
        "conventional_p99_us_at_50pct": r1((common["conventional"] or {}).get("latency", {}).get("p99_us"))
        if a.common_from == "helios" else None,
        "syscalls_per_request": r1(sysc.get("helios")),
        "glommio_null_rps": per_core_rps(cpu["null-glommio"]),
        "own_time_p99_us": r1(own_t.get("p99_us")),
        "allocs_per_request": own_t.get("allocs_per_request"),
        "decision_p99_us_1000_campaigns": r1(dec.get("p99_us")) if dec.get("campaigns") == 1000 else None,
    }
    for k, v in measured.items():
        if v is not None or k in ("machine", "date"):
            res[k] = v
    with open(a.results, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    svg_plot({n: runs[n] for n in SERVERS}, a.svg)

    try:
        load_avg = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load_avg = ["?"]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"### Run {now.strftime('%Y-%m-%d %H:%M UTC')} (commit {rev or '?'})", "",
             f"Command: `make bench` (scripts/bench.sh; BENCH_DURATION={a.duration} s measured after "
             f"{a.warmup} s warm-up, {a.conns} keep-alive connections). Machine: {machine()}. "
             f"Load generator `helios-load` pinned to CPU {a.gen_cpu}, server pinned to CPU {a.server_cpu}. "
             f"Load average when the report was written: {' '.join(load_avg)} (other work on the machine "
             f"shows up as noise). Common rate: {a.common_rate:,} req/s "
             f"(50% of {a.common_from or '?'}'s max).", "",
             "| server | max req/s (closed loop) | generator CPU at max | server CPU µs/req at max | server CPU µs/req at common rate | req/s per server core | p50 / p99 / p99.9 µs at 50% | p50 / p99 / p99.9 µs at 80% | p99 µs at common rate | syscalls/req (at 50%) | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in SERVERS:
        m = maxes[n]
        if not m:
            continue
        p50, p80, cm = runs[n]
        lat = lambda r: "–" if not r else f"{fmt(r['latency']['p50_us'])} / {fmt(r['latency']['p99_us'])} / {fmt(r['latency']['p999_us'])}"
        errs = sum(sum(v for k, v in (r or {}).get("errors", {}).items() if k not in ("http_4xx", "http_5xx"))
                   for r in (m, p50, p80, cm))
        gen = f"{m['generator_cpu_util'] * 100:.0f}% ({m['generator_cpu_us_per_req']:.2f} µs/req)"
        lines.append(f"| {LABEL[n]} | {fmt(m['achieved_rps'])} | {gen} | "
                     f"{fmt(m.get('server_cpu_us_per_req'), 2)} | {fmt(cpu[n], 2)} | "
                     f"{fmt(per_core_rps(cpu[n]))} | {lat(p50)} | {lat(p80)} | "
                     f"{fmt((cm or {}).get('latency', {}).get('p99_us'))} | {fmt(sysc.get(n), 2)} | {errs} |")
    lines.append("")
    goals = []
    h, nl, hp, cv = cpu["helios"], cpu["null"], cpu["haproxy"], cpu["conventional"]
    if h and nl:
        goals.append(f"- Helios ≥ 0.8× null (per-core req/s from CPU per request): **{nl / h:.2f}×** "
                     f"({'met' if nl / h >= 0.8 else 'not met'}).")
    if h and hp:
        goals.append(f"- Helios above haproxy-204: **{hp / h:.2f}×** ({'met' if hp / h > 1 else 'not met'}).")
    if h and cv:
        goals.append(f"- Helios ≥ 5× conventional: **{cv / h:.1f}×** ({'met' if cv / h >= 5 else 'not met'}).")
    if h:
        goals.append(f"- ≥ 100k bid requests/s per core: **{1e6 / h:,.0f}** ({'met' if 1e6 / h >= 100_000 else 'not met'}).")
    hp99 = (common["helios"] or {}).get("latency", {}).get("p99_us")
    cp99 = (common["conventional"] or {}).get("latency", {}).get("p99_us")
    if hp99 and cp99:
        goals.append(f"- p99 at the same offered load ≤ 1/10 of conventional's: Helios {hp99:,.0f} µs vs "
                     f"conventional {cp99:,.0f} µs = **1/{cp99 / hp99:.1f}** ({'met' if cp99 / hp99 >= 10 else 'not met'}).")
    he = cpu["helios-noevents"]
    if h and he:
        goals.append(f"- Cost of the event pipeline: {h:.2f} µs/req with events on against {he:.2f} "
                     f"µs/req off ({(h / he - 1) * 100:+.0f}%; goal ≤ +5%).")
    if not h:
        goals.append("- The Helios full path was not measured in this run (appliance binary missing or failed).")
    lines += ["Goals:", ""] + goals + [""]

    # Drivers side by side (same core; glommio is the bench's reference driver).
    drv = [("io_uring (default)", "null", "helios-noevents"), ("epoll (tokio)", "null-epoll", "helios-noevents-epoll"),
           ("glommio 0.9 (bench)", "null-glommio", "helios-noevents-glommio")]
    if any(cpu[x] or cpu[y] for _, x, y in drv):
        lines += ["Drivers side by side (same sans-IO core, events off; server CPU µs/req at the common rate, "
                  "latency at 50% / 80% of each one's own max, syscalls/req at 50%):", "",
                  "| driver | null µs/req | full path µs/req | null p99 µs at 50% / 80% | full p99 µs at 50% / 80% | null syscalls/req | full syscalls/req |",
                  "|---|---|---|---|---|---|---|"]
        p99 = lambda n, i: fmt(((runs[n][i] or {}).get("latency") or {}).get("p99_us"))
        for label, x, y in drv:
            lines.append(f"| {label} | {fmt(cpu[x], 2)} | {fmt(cpu[y], 2)} | {p99(x, 0)} / {p99(x, 1)} | "
                         f"{p99(y, 0)} / {p99(y, 1)} | {fmt(sysc.get(x), 2)} | {fmt(sysc.get(y), 2)} |")
        lines.append("")

    # Where the server's CPU goes, by thread (at the common rate).
    thr = [(n, (common[n] or {}).get("server_threads_cpu_us_per_req") or {}) for n in ("helios", "helios-noevents")]
    if any(t for _, t in thr):
        lines += ["Server CPU by thread at the common rate, µs per request (`/proc/<pid>/task/*/stat`; "
                  "`rdk:*` are librdkafka's threads):", "", "| server | thread | µs/req |", "|---|---|---|"]
        for n, t in thr:
            for k, v in sorted(t.items(), key=lambda kv: -kv[1]):
                if v >= 0.01:
                    lines.append(f"| {LABEL[n]} | `{k}` | {v:.2f} |")
        lines.append("")

    if own_t:
        lines.append(f"Own processing time in-process (`helios-owntime`: the core, request bytes in → response "
                     f"bytes out, no socket; {own_t['requests']:,} requests = {own_t['rounds']} passes over the "
                     f"corpus, {own_t['bid_share'] * 100:.0f}% bid): p50 {own_t['p50_us']:.2f} µs, p99 "
                     f"**{own_t['p99_us']:.2f} µs**, p99.9 {own_t['p999_us']:.2f} µs (goal p99 ≤ 10 µs: "
                     f"{'met' if own_t['p99_us'] <= 10 else 'not met'}); allocations "
                     f"{own_t['allocations']} ({own_t['allocs_per_request']:.4f} per request).")
    if dec:
        lines.append(f"Decision alone, {dec['campaigns']:,} synthetic campaigns, {dec['decisions']:,} decisions: "
                     f"p50 {dec['p50_us']:.2f} µs, p99 **{dec['p99_us']:.2f} µs**, p99.9 {dec['p999_us']:.2f} µs.")
    if cg:
        lines.append(f"Instructions (valgrind callgrind) of the core path per request over the first "
                     f"{cg['requests']:,} corpus requests: **{cg['ir_per_request']:,.0f} Ir** "
                     f"((Ir of 3 passes − Ir of 1) ÷ 2 passes).")
    if ovl:
        lines.append(f"Overload (bench/overload.sh, io_uring): capacity {ovl['capacity_rps']:,} "
                     f"req/s closed loop, offered {ovl['offered_rps']:,} req/s ({ovl['factor']:.1f}×) on 256 "
                     f"connections: answered {fmt(ovl['achieved_rps'])} req/s = {ovl['goodput_vs_capacity']:.2f}× "
                     f"capacity ({ovl['dropped_by_generator']:,} due requests dropped on the generator's side for "
                     f"lack of a free connection, {ovl['failed']} connection errors, {ovl['timeouts']} cut at "
                     f"the end), {ovl['shed_overloaded']:,} shed as `overloaded`; server CPU "
                     f"{(ovl.get('server_cpu_util') or 0) * 100:.0f}% of a core; p50 / p99 / p99.9 "
                     f"of accepted (bid) answers {fmt(ovl['accepted_p50_us'])} / **{fmt(ovl['accepted_p99_us'])}** / "
                     f"{fmt(ovl['accepted_p999_us'])} µs (bound {ovl['p99_bound_us']:,} µs).")
    if own_t or dec or cg or ovl:
        lines.append("")
    lines += ["Plot: [latency.svg](latency.svg). Raw reports: "
              f"`{a.dir}`.", ""]

    md = open(a.md).read() if os.path.exists(a.md) else "# Benchmark results\n"
    head = "## End to end (make bench)"
    placeholder = "(null, haproxy-204, Helios, conventional)"
    block = "\n".join(lines)
    if head not in md:
        md = md.rstrip("\n") + f"\n\n{head}\n\n{block}"
    else:
        start = md.index(head) + len(head)
        nxt = md.find("\n## ", start)
        section = md[start:] if nxt < 0 else md[start:nxt]
        section = section.replace(placeholder, INTRO).rstrip("\n")
        section = section + "\n\n" + block if section.strip() else "\n\n" + block
        md = md[:start] + section + ("\n" if nxt < 0 else "\n" + md[nxt:])
    with open(a.md, "w") as f:
        f.write(md.rstrip("\n") + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
