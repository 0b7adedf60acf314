#!/usr/bin/env python3
"""A tiny webhook receiver for trying Herald locally: prints every request it gets and
answers 200. Usage: python3 scripts/echo-receiver.py [port]  (default 8000)."""

import http.server
import sys


class Echo(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        print(f"--- {self.command} {self.path}")
        for k, v in self.headers.items():
            print(f"{k}: {v}")
        print(body.decode("utf-8", "replace"), flush=True)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
print(f"listening on http://127.0.0.1:{port}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()
