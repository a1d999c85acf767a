"""A real keep-alive HTTP/1.1 server for the tests, run in its own process.

`python tests/_httpserver.py` prints its port on the first line of stdout and serves until
stdin closes, so a test run that dies never leaves it behind.
"""

from __future__ import annotations

import http.server
import sys
import threading

HTML_403 = b"<html><head><title>403 Forbidden</title></head><body>Forbidden by the LB</body></html>"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed ACK

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/403"):
            self._send(403, "text/html; charset=utf-8", HTML_403)
        elif path.startswith("/empty"):
            self._send(403, "text/html", b"")
        elif path.startswith("/hangup"):
            self.close_connection = True  # no response at all: the client sees a broken conn
        else:
            self._send(200, "application/json", b'{"ok": true}')

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-request are part of the tests


def main() -> None:
    srv = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(srv.server_port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    srv.shutdown()


if __name__ == "__main__":
    main()
