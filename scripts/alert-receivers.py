#!/usr/bin/env python3
"""Local alert receivers for the demos (scripts/alert-demo.sh, FLEETPULSE_ALERT_DEMO=1
scripts/run.sh): an HTTP webhook and a TCP syslog listener on 127.0.0.1 that append every
arrival, with its receive time (RFC 3339, UTC), to OUT_DIR/PREFIXwebhook.log and
OUT_DIR/PREFIXsyslog.log, one line per arrival (line breaks inside a payload are escaped), so
`wc -l` counts notifications and the first line's time measures detection delay.

Usage: alert-receivers.py OUT_DIR PREFIX HOOK_PORT SYSLOG_PORT
"""
import datetime
import http.server
import socketserver
import sys
import threading

out, prefix, hook_port, syslog_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()


def record(kind, data):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    text = data.decode("utf-8", "replace").rstrip("\n").replace("\n", "\\n")
    with lock, open(f"{out}/{prefix}{kind}.log", "a") as f:
        f.write(f"{now}\t{text}\n")


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        record("webhook", self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class Syslog(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            record("syslog", data)


socketserver.ThreadingTCPServer.allow_reuse_address = True
syslog = socketserver.ThreadingTCPServer(("127.0.0.1", syslog_port), Syslog)
threading.Thread(target=syslog.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook).serve_forever()
