#!/usr/bin/env python3
"""Hostile HTTP against the real `helios` binary (issue 12, docs/RELIABILITY.md §3).

Starts its own `helios` (1 core, events off, default HTTP limits unless overridden), sends each
hostile input over real sockets, checks the answer, samples the process's RSS from /proc, and
stops the process by its PID. Exits 1 when any check fails; prints one line per check and a JSON
summary (also written to --json).

Cases: many small headers (past the 32-header limit, and exactly at it), one huge header value
(1 MiB), a header flood (the per-core maximum of connections each holding a ~8 KiB head that never
ends, a byte a second, plus 100 connections past the maximum; twice, to see RSS not grow), slowloris
(the same with a bare request line), deep JSON nesting (arrays, objects; under and over the body
limit), huge numbers, a long finite number (must parse), invalid UTF-8 (in a string, in an unknown
field, surrogate bytes, a lone surrogate escape), a normal bid after each group, and a clean exit.

Usage: scripts/hostile.py --helios PATH [--campaigns FILE] [--port N] [--admin-port N]
       [--max-connections N] [--slow-timeout-ms N] [--json FILE]
"""

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BID = open(os.path.join(ROOT, "deploy/testing/bid-request.json"), "rb").read().strip()

results = []


def check(name, ok, detail):
    results.append({"check": name, "ok": bool(ok), "detail": detail})
    print(f"hostile: {'PASS' if ok else 'FAIL'} {name} ({detail})", flush=True)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_response(s, timeout=5.0):
    """Reads one HTTP response (head + Content-Length body). Returns (status, body, closed)."""
    s.settimeout(timeout)
    buf = b""
    closed = False
    deadline = time.time() + timeout
    while b"\r\n\r\n" not in buf and time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            closed = True
            break
        if not chunk:
            closed = True
            break
        buf += chunk
    if b"\r\n\r\n" not in buf:
        return None, b"", True
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    clen = 0
    close_hdr = False
    for h in lines[1:]:
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
        if k.strip().lower() == b"connection" and v.strip().lower() == b"close":
            close_hdr = True
    while len(body) < clen and time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        body += chunk
    return status, body[:clen], closed or close_hdr


def is_closed_by_peer(s, timeout=3.0):
    """True when the server closes the connection (EOF or reset) within `timeout`."""
    s.settimeout(timeout)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request(path, body, extra_headers=b"", method=b"POST"):
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        + extra_headers
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def normal_bid(port):
    s = connect(port)
    try:
        s.sendall(request(b"/openrtb2/bid", BID))
        st, _, _ = read_response(s)
        return st
    finally:
        s.close()


def bad_body(port, name, body):
    """A hostile body must get 400 with a reason, on a connection that stays usable."""
    s = connect(port)
    try:
        s.sendall(request(b"/openrtb2/bid", body))
        st, text, _ = read_response(s)
        reason = text.decode("utf-8", "replace")[:120]
        check(name, st == 400 and len(text) > 0, f"{len(body)} B body → {st}: {reason!r}")
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--helios", required=True)
    ap.add_argument("--campaigns", default=os.path.join(ROOT, "bench/data/campaigns.json"))
    ap.add_argument("--port", type=int, default=17427)
    ap.add_argument("--admin-port", type=int, default=17428)
    ap.add_argument("--cpu", type=int, default=os.cpu_count() - 1)
    ap.add_argument("--max-connections", type=int, default=4096,
                    help="server.max_connections_per_core for the run (default: the product default)")
    ap.add_argument("--slow-timeout-ms", type=int, default=5000,
                    help="http.slow_client_timeout_ms for the run (default: the product default)")
    ap.add_argument("--json")
    ap.add_argument("--log", default="/dev/null")
    a = ap.parse_args()

    need = a.max_connections + 400
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    for p in (a.port, a.admin_port):
        try:
            socket.create_connection(("127.0.0.1", p), timeout=1).close()
            raise SystemExit(f"hostile: port {p} is taken by another process (--port / --admin-port)")
        except OSError:
            pass
    env = dict(os.environ)
    env.update({
        "HELIOS_EVENTS_ENABLED": "false",
        "HELIOS_SERVER_MAX_CONNECTIONS_PER_CORE": str(a.max_connections),
        "HELIOS_HTTP_SLOW_CLIENT_TIMEOUT_MS": str(a.slow_timeout_ms),
    })
    log = open(a.log, "ab")
    proc = subprocess.Popen(
        [a.helios, "--cores", str(a.cpu), "--listen", f"127.0.0.1:{a.port}",
         "--admin", f"127.0.0.1:{a.admin_port}", "--campaigns", a.campaigns, "--node", "hostile"],
        env=env, stdout=log, stderr=log)
    pid = proc.pid
    summary = {}
    try:
        for _ in range(300):
            try:
                c = socket.create_connection(("127.0.0.1", a.admin_port), timeout=1)
                c.sendall(b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
                st, _, _ = read_response(c, 2)
                c.close()
                if st == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"helios exited at start ({proc.returncode}); log {a.log}")
            time.sleep(0.1)
        base_fds = fds(pid)
        # Warm: a few normal bids, then the RSS baseline.
        for _ in range(20):
            normal_bid(a.port)
        rss0 = rss_kib(pid)
        summary["rss_start_kib"] = rss0
        check("normal bid", normal_bid(a.port) in (200, 204), f"RSS {rss0} KiB")

        # --- headers -------------------------------------------------------------------------
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(40))
        s = connect(a.port)
        s.sendall(request(b"/openrtb2/bid", BID, many))
        st, text, closed = read_response(s)
        closed = closed or is_closed_by_peer(s)
        s.close()
        check("40 small headers → 431 + close", st == 431 and closed, f"{st}, closed {closed}, {text[:60]!r}")

        # Exactly at the limit: Host, Content-Type, Content-Length + 29 = 32 headers.
        at = b"".join(b"X-H%d: v\r\n" % i for i in range(29))
        s = connect(a.port)
        s.sendall(request(b"/openrtb2/bid", BID, at))
        st, _, _ = read_response(s)
        s.close()
        check("32 headers (the limit) accepted", st in (200, 204), f"{st}")

        s = connect(a.port)
        huge = b"X-Huge: " + b"a" * (1 << 20) + b"\r\n"
        sent = 0
        payload = request(b"/openrtb2/bid", BID, huge)
        # Read while sending: the answer comes as soon as the head passes the limit, and the
        # server stops reading after its linger time (then a reset could drop the answer).
        early = b""
        try:
            s.settimeout(5)
            while sent < len(payload) and b"\r\n\r\n" not in early:
                sel = selectors.DefaultSelector()
                sel.register(s, selectors.EVENT_READ)
                if sel.select(0):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    early += chunk
                sel.close()
                sent += s.send(payload[sent:sent + 65536])
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        if early.startswith(b"HTTP/1.1 "):
            st, text = int(early[9:12]), early.partition(b"\r\n\r\n")[2]
        else:
            st, text, _ = read_response(s)
        s.close()
        check("1 MiB header value → 431", st == 431, f"{st} after {sent} of {len(payload)} bytes sent, {text[:60]!r}")
        check("alive after header cases", normal_bid(a.port) in (200, 204), f"RSS {rss_kib(pid)} KiB")

        # --- header flood and slowloris: up to the per-core maximum ---------------------------
        def flood(round_no, head_bytes):
            """Opens max_connections connections, each sending `head_bytes` of a head that never
            ends (a request line and headers, no blank line), plus 100 past the maximum."""
            conns = []
            refused = 0
            line = b"POST /openrtb2/bid HTTP/1.1\r\nHost: h\r\n"
            filler = b""
            while len(line) + len(filler) + 16 < head_bytes:
                filler += b"X-F: " + b"b" * 1000 + b"\r\n"
            t0 = time.time()
            peak = rss_kib(pid)
            for i in range(a.max_connections + 100):
                try:
                    s = socket.create_connection(("127.0.0.1", a.port), timeout=2)
                    s.setblocking(False)
                    try:
                        s.send(line + filler)
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
                    conns.append(s)
                except OSError:
                    refused += 1
                if i % 256 == 0:
                    peak = max(peak, rss_kib(pid))
            open_at_peak = fds(pid) - base_fds
            peak = max(peak, rss_kib(pid))
            # Connections past the maximum are closed at once by the server.
            time.sleep(0.5)
            closed_early = 0
            for s in conns[a.max_connections:]:
                try:
                    if s.recv(1) == b"":
                        closed_early += 1
                except BlockingIOError:
                    pass
                except (ConnectionResetError, OSError):
                    closed_early += 1
            # A legitimate client while every slot is held: refused (the bound), counted.
            try:
                legit_during = normal_bid(a.port) or "closed without an answer"
            except OSError as e:
                legit_during = type(e).__name__
            # Trickle one byte per second on every held connection until the server times them out.
            deadline = time.time() + a.slow_timeout_ms / 1000 * 2 + 5
            got408 = 0
            closed = 0
            answers = {}
            pending = set(range(min(len(conns), a.max_connections)))
            last_trickle = 0.0
            sel = selectors.EpollSelector()
            for i in pending:
                sel.register(conns[i], selectors.EVENT_READ, i)
            while pending and time.time() < deadline:
                if time.time() - last_trickle >= 1.0:
                    last_trickle = time.time()
                    for i in list(pending):
                        try:
                            conns[i].send(b"X")
                        except (BlockingIOError, BrokenPipeError, ConnectionResetError, OSError):
                            pass
                    peak = max(peak, rss_kib(pid))
                for key, _ in sel.select(0.2):
                    s, i = key.fileobj, key.data
                    try:
                        data = s.recv(4096)
                    except (ConnectionResetError, OSError):
                        data = b""
                    if data.startswith(b"HTTP/1.1 "):
                        code = data[9:12].decode()
                        answers[code] = answers.get(code, 0) + 1
                    if data.startswith(b"HTTP/1.1 408"):
                        got408 += 1
                    if data == b"" or data.startswith(b"HTTP/1.1 4"):
                        closed += 1
                        pending.discard(i)
                        sel.unregister(s)
            took = time.time() - t0
            sel.close()
            for s in conns:
                s.close()
            time.sleep(0.5)
            after = normal_bid(a.port)
            return {
                "round": round_no, "head_bytes": len(line) + len(filler), "opened": len(conns),
                "refused_by_connect": refused, "server_fds_at_peak": open_at_peak,
                "past_max_closed_at_once": closed_early, "past_max": max(0, len(conns) - a.max_connections),
                "legit_during": legit_during, "answers": answers, "answered_408": got408, "closed_by_server": closed,
                "still_open": len(pending), "peak_rss_kib": peak, "rss_after_kib": rss_kib(pid),
                "seconds": round(took, 1), "bid_after": after,
            }

        r1 = flood(1, 7800)
        print("hostile: header flood round 1:", json.dumps(r1), flush=True)
        check("header flood: connections past the per-core max closed at once",
              r1["past_max_closed_at_once"] >= r1["past_max"] * 0.95,
              f"{r1['past_max_closed_at_once']} of {r1['past_max']}")
        check("header flood: every held connection answered (408 slow client, 431 head too large) and closed",
              r1["still_open"] == 0, f"answers {r1['answers']}, closed {r1['closed_by_server']}, still open {r1['still_open']}, {r1['seconds']} s")
        check("header flood: bids answered afterwards", r1["bid_after"] in (200, 204), f"{r1['bid_after']}")
        r2 = flood(2, 7800)
        print("hostile: header flood round 2:", json.dumps(r2), flush=True)
        per_conn = (r1["peak_rss_kib"] - rss0) / max(1, a.max_connections)
        check("header flood: RSS bounded (round 2 peak ≤ round 1 peak + 5%)",
              r2["peak_rss_kib"] <= r1["peak_rss_kib"] * 1.05,
              f"start {rss0} KiB, peaks {r1['peak_rss_kib']} / {r2['peak_rss_kib']} KiB, "
              f"≈ {per_conn:.1f} KiB per held connection, after {r2['rss_after_kib']} KiB")
        r3 = flood(3, 0)  # classic slowloris: a request line, then a byte a second
        print("hostile: slowloris:", json.dumps(r3), flush=True)
        check("slowloris: every slow connection timed out by the server",
              r3["still_open"] == 0, f"408 {r3['answered_408']}, closed {r3['closed_by_server']}, "
              f"still open {r3['still_open']}, {r3['seconds']} s")
        check("slowloris: bids answered afterwards, RSS not above the flood peak",
              r3["bid_after"] in (200, 204) and r3["peak_rss_kib"] <= r1["peak_rss_kib"] * 1.05,
              f"{r3['bid_after']}, peak {r3['peak_rss_kib']} KiB")
        summary.update({"flood": [r1, r2], "slowloris": r3})

        # --- bodies ------------------------------------------------------------------------------
        # Under the 64 KiB body limit (a larger body is refused by length first: 413, tested above).
        deep = b'{"id":"x","imp":[{"id":"1","banner":{"w":1,"h":1}}],"ext":' + b"[" * 32000 + b"]" * 32000 + b"}"
        bad_body(a.port, "deep array nesting (32,000 levels) → 400", deep)
        deep_obj = b'{"id":"x","ext":' + b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"}"
        bad_body(a.port, "deep object nesting (10,000 levels) → 400", deep_obj)
        s = connect(a.port)
        big = deep + b" " * (70000 - len(deep))
        s.sendall(request(b"/openrtb2/bid", big))
        st, text, _ = read_response(s)
        s.close()
        check("nesting past the body limit → 413 by length", st == 413, f"{len(big)} B → {st}: {text[:40]!r}")
        bad_body(a.port, "huge integer (tmax with 5,000 digits) → 400",
                 BID.replace(b'"tmax":200', b'"tmax":' + b"9" * 5000))
        bad_body(a.port, "huge float (bidfloor 1e400) → 400",
                 BID.replace(b'"bidfloor":0.01', b'"bidfloor":1e400'))
        bad_body(a.port, "huge number (bidfloor with 20,000 integer digits) → 400",
                 BID.replace(b'"bidfloor":0.01', b'"bidfloor":1' + b"0" * 20000 + b".5"))
        # A long but finite number is valid JSON: it must be parsed (bounded by the body size).
        s = connect(a.port)
        s.sendall(request(b"/openrtb2/bid", BID.replace(b'"bidfloor":0.01', b'"bidfloor":0.' + b"1" * 20000)))
        st, _, _ = read_response(s)
        s.close()
        check("finite number with 20,000 fraction digits parsed (bid or no-bid)", st in (200, 204), f"{st}")
        bad_body(a.port, "invalid UTF-8 in the id → 400", BID.replace(b"deploy-test-1", b"deploy-\xff\xfe-1"))
        bad_body(a.port, "invalid UTF-8 in an unknown field → 400",
                 BID.replace(b'"at":1', b'"at":1,"zz":"\xc3\x28"'))
        bad_body(a.port, "UTF-8 surrogate bytes → 400", BID.replace(b"example.com", b"ex\xed\xa0\x80.com"))
        bad_body(a.port, "lone surrogate escape → 400", BID.replace(b"deploy-test-1", b"deploy-\\ud800-1"))

        rss_end = rss_kib(pid)
        summary["rss_end_kib"] = rss_end
        check("alive and bidding at the end", proc.poll() is None and normal_bid(a.port) in (200, 204),
              f"RSS start {rss0} KiB, end {rss_end} KiB")
    finally:
        if proc.poll() is None:
            os.kill(pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                proc.wait()
        summary["exit_code"] = proc.returncode
    check("clean exit on SIGTERM", proc.returncode == 0, f"exit {proc.returncode}")
    summary["checks"] = results
    summary["load"] = open("/proc/loadavg").read().split()[:3]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    failed = [r for r in results if not r["ok"]]
    print(f"hostile: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
