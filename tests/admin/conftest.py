"""Fixtures for the admin app: a real downstream server, leaked responses, an HTTP getter."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import urllib3

import poolwatch
from poolwatch import Tracker
from poolwatch.admin import AdminServer, serve

BODY_403 = b"<html><body>Forbidden by the load balancer</body></html>"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/ok"):
            status, ctype, body = 200, "application/json", b'{"ok": true}'
        else:
            status, ctype, body = 403, "text/html; charset=utf-8", BODY_403
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def downstream() -> Iterator[str]:
    """Base URL of a fresh HTTP/1.1 server on 127.0.0.1 (a new port, so a new pool label)."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, name="downstream", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@dataclass
class Leaker:
    """A urllib3 pool to ``downstream`` whose responses are kept unread (a leak)."""

    pool: urllib3.HTTPConnectionPool
    kept: list[Any]

    @property
    def label(self) -> str:
        return f"urllib3 http://127.0.0.1:{self.pool.port}"

    #: The line that takes the connection, as call sites report it.
    LEAK_LINE = "self.kept.append(self.pool.request("

    def leak(self, n: int = 1, path: str = "/403") -> None:
        for _ in range(n):
            self.kept.append(self.pool.request("GET", path, preload_content=False))

    def release(self) -> None:
        while self.kept:
            response = self.kept.pop()
            response.drain_conn()
            response.release_conn()


@pytest.fixture
def leaker(downstream: str) -> Iterator[Leaker]:
    """Leaks on demand; every leaked response is drained and returned at teardown."""
    port = int(downstream.rsplit(":", 1)[1])
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=4, block=True, timeout=5)
    leaker = Leaker(pool, [])
    yield leaker
    leaker.release()
    pool.close()


@pytest.fixture
def admin(tracker: Tracker) -> Iterator[AdminServer]:
    """The admin app on a background thread, on a free loopback port, over a fresh tracker.

    Fresh, so that an exhaustion another test caused on purpose (it stays "recent" for a minute)
    cannot turn this test's /healthcheck red.
    """
    server = serve(tracker=tracker)
    yield server
    server.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
    """One real HTTP request with urllib (not instrumented, so it never takes a lease)."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers.items()), error.read())


def pool_of(label: str) -> poolwatch.PoolSnapshot:
    """The tracker's own view of one pool (what the endpoints must agree with)."""
    matches = [p for p in poolwatch.pools() if f"{p.kind} {p.name}" == label]
    assert len(matches) == 1, f"expected one pool {label}, got {matches}"
    return matches[0]
