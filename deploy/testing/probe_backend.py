#!/usr/bin/env python3
"""A recording HTTP/1.1 backend for the gateway tests (not a stand-in for the appliance).

It answers every request at once -- GET /readyz and /healthz with 200, anything else with 204 --
and appends one JSON line per request to the --log file: connection number, method, path and the
request headers. The tests read that file to check what the gateway forwards (which headers it adds
or strips, that it reuses keep-alive connections). Bounded: at most --max-requests requests, then it
exits; it listens on loopback (or the address given) only.
"""
import argparse
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    conn_counter = 0
    lock = threading.Lock()

    def setup(self):
        super().setup()
        with Handler.lock:
            Handler.conn_counter += 1
            self.conn_id = Handler.conn_counter

    def log_message(self, *args):  # quiet: the JSON log is the record
        pass

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1 << 20:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        rec = {
            "conn": self.conn_id,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": len(body),
        }
        server = self.server
        with Handler.lock:
            server.log.write(json.dumps(rec) + "\n")
            server.log.flush()
            server.count += 1
            done = server.count >= server.max_requests
        if self.path.split("?")[0] in ("/readyz", "/healthz"):
            payload = b'{"ready":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        else:
            self.send_response(204)
            self.send_header("X-Probe-Conn", str(self.conn_id))
            self.end_headers()
        if done:
            threading.Thread(target=server.shutdown, daemon=True).start()

    do_GET = do_POST = do_HEAD = handle_one


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--max-requests", type=int, default=100000)
    a = ap.parse_args()
    with Server((a.addr, a.port), Handler) as srv:
        srv.log = open(a.log, "a", encoding="utf-8")
        srv.count = 0
        srv.max_requests = a.max_requests
        srv.serve_forever()


if __name__ == "__main__":
    main()
