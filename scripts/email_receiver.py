"""The demo's `email_service`: prints each alert the sidecar's sink sends, answers 202.

`python scripts/email_receiver.py [PORT]` (default 8025, where policies.yaml points it).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            alert = json.loads(body)
            text = f"#{alert['id']} {alert['severity']}: {alert['title']} - {alert['message']}"
        except (ValueError, KeyError, TypeError):
            text = f"{len(body)} bytes: {body[:200]!r}"
        print(f"email_service {self.path}: {text}", flush=True)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Print the alerts only, not an access line per request."""


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8025
    with ThreadingHTTPServer(("127.0.0.1", port), Receiver) as server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
