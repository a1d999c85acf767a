"""The standalone admin server: wsgiref on a daemon thread, loopback unless told otherwise."""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
import warnings
from typing import Any
from urllib.parse import quote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .._errors import PoolwatchError, PoolwatchWarning
from ._app import AdminApp, make_app

__all__ = ["AdminBindError", "AdminServer", "check_bind", "parse_address", "serve"]


class AdminBindError(PoolwatchError, ValueError):
    """The admin server was asked to listen where it must not (or cannot)."""


def parse_address(text: str) -> tuple[str, int]:
    """`127.0.0.1:8081`, `[::1]:8081`, `localhost:0` or `:8081` -> (host, port)."""
    original = text
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            port_text = ""
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
    try:
        port = int(port_text)
    except ValueError:
        raise AdminBindError(
            f"admin address {original!r} needs HOST:PORT, e.g. 127.0.0.1:8081 "
            f"(port 0 picks a free one)"
        ) from None
    if not 0 <= port <= 65535:
        raise AdminBindError(f"admin port {port} is out of range 0-65535 (in {original!r})")
    return host or "127.0.0.1", port


def check_bind(host: str, allow_public: bool) -> None:
    """Raise ``AdminBindError`` unless ``host`` is a loopback address or ``allow_public``."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        loopback = False
    else:
        loopback = address.is_loopback
    if not loopback and not allow_public:
        raise AdminBindError(
            f"refusing to serve the poolwatch admin app on {host!r}: it shows call sites, "
            f"thread stacks and pool state, so it binds to loopback (127.0.0.1, ::1, "
            f"localhost) unless you pass allow_public=True (and, please, a token)"
        )


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without its access log (request lines may carry query strings)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class AdminServer:
    """A running admin server: ``url``, ``host``, ``port``, ``app``; ``stop()`` ends it."""

    def __init__(self, app: AdminApp, server: _Server, thread: threading.Thread) -> None:
        self.app = app
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}/"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<AdminServer {self.url} [{state}]>"

    @property
    def dashboard_url(self) -> str:
        """The dashboard's URL to print for a person; with a token, the token rides in the
        fragment (``#token=...``), which browsers never send to a server or a proxy log."""
        token = self.app._token
        if token is None:
            return self.url
        return f"{self.url}#token={quote(token.decode(), safe='')}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> None:
        """Block until the server stops; Ctrl-C stops it (for a demo's ``--serve``)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket and wait for the thread (harmless when stopped)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    runtime: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    allow_public: bool = False,
    app: AdminApp | None = None,
    **options: Any,
) -> AdminServer:
    """Serve the admin app on a daemon thread; returns the running ``AdminServer``.

    Binds ``host`` (loopback unless ``allow_public=True``) and ``port`` (0 picks a free one:
    read ``.port`` / ``.url``). Other keyword arguments go to ``make_app`` (``tracker=``,
    ``critical=``, ``exhaustion_window=`` ...); ``app`` serves a ready-made app instead.
    """
    check_bind(host, allow_public)
    if allow_public and token is None:
        warnings.warn(
            "serving the poolwatch admin app beyond loopback without a token: anyone who can "
            "reach the port can read call sites and thread stacks",
            PoolwatchWarning,
            stacklevel=2,
        )
    if app is None:
        app = make_app(runtime, token=token, **options)
    bind_host = host.strip("[]")
    family_cls = _Server6 if ":" in bind_host else _Server
    try:
        server = family_cls((bind_host, port), _QuietHandler, bind_and_activate=True)
    except OSError as exc:
        raise AdminBindError(
            f"cannot serve the poolwatch admin app on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    server.set_app(app)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.25},
        name=f"poolwatch-admin:{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return AdminServer(app, server, thread)
