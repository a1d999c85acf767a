"""Real parts for the alert tests: SMTP servers (aiosmtpd), a webhook receiver, a downstream."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from poolwatch.alerts import SmtpSink
from poolwatch.testing import Downstream, Reply

LEAK = pytest.mark.allow_leaks(reason="holds connections on purpose to push a pool past 75%")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records each POST; ``status`` is what it answers."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, count: int = 1, timeout: float = 10.0, path: str | None = None) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.matching(path)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def matching(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if path is None or r.path == path]


def _receiver_handler(receiver: WebhookReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status = receiver.status
            with receiver.cond:
                if 200 <= status < 300:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                receiver.cond.notify_all()
            reply = b"OK"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_POST = _record
        do_GET = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook receiver on a free port of 127.0.0.1."""
    receiver = WebhookReceiver(url="")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _receiver_handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/T000/secret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A plain SMTP server (aiosmtpd) on 127.0.0.1."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def downstream() -> Iterator[tuple[str, int]]:
    """A real keep-alive server answering 403 with an HTML page (its pool label is unique)."""
    page = Reply(
        403, body=b"<html><body>Forbidden by the LB</body></html>", content_type="text/html"
    )
    with Downstream(default=page) as server:
        yield "127.0.0.1", server.port


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"
