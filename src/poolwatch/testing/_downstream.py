"""A downstream HTTP server on a real socket, scripted per route or per call.

Mocks such as ``responses`` or ``respx`` replace the transport, so a pool never sees a
connection and can never leak one. ``Downstream`` is the opposite: an HTTP/1.1 server on
127.0.0.1 (or ::1), on a background thread so sync and async tests can both use it, whose
every response is scripted down to the wire: status, headers, body kind, framing (length,
chunked, until close), gzip, delays, and what happens to the connection afterwards (kept alive,
closed, reset mid-body, closed once idle, HTTP/1.0).

Why not werkzeug / pytest-httpserver: their WSGI layer owns the wire. It decides the framing,
cannot send a chunk and then stall before the last one, cannot reset a connection half way
through a body, does not close an idle keep-alive connection after a chosen delay, and gives no
hook to answer as HTTP/1.0. Those are exactly the behaviours that decide whether a client pool
leaks, so the server here is a small asyncio one that writes the bytes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import random
import socket
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from types import MappingProxyType, TracebackType
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "BodyKind",
    "ConnectionMode",
    "Downstream",
    "Encoding",
    "Framing",
    "RecordedRequest",
    "Reply",
    "error_page",
]

BodyKind = Literal["none", "empty", "html", "json", "text", "large"]
Framing = Literal["length", "chunked", "close"]
Encoding = Literal["identity", "gzip"]
ConnectionMode = Literal["keep-alive", "close", "reset"]
HttpVersion = Literal["1.1", "1.0"]

_BODY_KINDS: tuple[str, ...] = get_args(BodyKind)
_FRAMINGS: tuple[str, ...] = get_args(Framing)
_ENCODINGS: tuple[str, ...] = get_args(Encoding)
_CONNECTIONS: tuple[str, ...] = get_args(ConnectionMode)

#: Header names whose values are secrets: recorded as ``<redacted>``.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
_SECRET_WORDS = ("token", "secret", "password", "passwd", "api-key", "apikey", "session")
REDACTED = "<redacted>"

_MAX_HEAD = 64 * 1024
_MAX_RECORDED = 10_000
_LARGE_DEFAULT = 1024 * 1024


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_page(status: int, server: str = "poolwatch-lb") -> bytes:
    """The HTML error page a load balancer (nginx style) puts in place of a 4xx/5xx body."""
    title = f"{status} {_reason(status)}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>{server}</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode("ascii")


_large_cache: dict[int, bytes] = {}


def _large(size: int) -> bytes:
    # Pseudo-random so gzip cannot shrink it: a "large" body stays large on the wire, which is
    # what decides whether aiohttp buffers it (and so releases the connection by itself).
    data = _large_cache.get(size)
    if data is None:
        data = random.Random(size).randbytes(size)
        if len(_large_cache) < 8:
            _large_cache[size] = data
    return data


def _bodyless(status: int, method: str) -> bool:
    return method == "HEAD" or status < 200 or status in (204, 304)


@dataclass(frozen=True)
class Reply:
    """One scripted response: what goes on the wire, and what happens to the connection.

    ``body`` is a kind (``"none"``: no body and no length, so the message ends when the
    connection closes; ``"empty"``: ``Content-Length: 0``; ``"html"``: an HTML error page;
    ``"json"``; ``"text"``; ``"large"``: ``size`` incompressible bytes) or literal ``bytes``.
    ``framing`` delimits the body: ``"length"`` (Content-Length), ``"chunked"``
    (``chunk_size`` chunks), ``"close"`` (no length; the server closes after the body).
    ``connection``: ``"keep-alive"``; ``"close"`` (``Connection: close``, then closed);
    ``"reset"`` (half the body, then a TCP reset). ``close_idle_after`` closes the kept-alive
    connection once it has been idle that many seconds (the client's socket is then in
    CLOSE_WAIT until it closes it). Delays are seconds: before the status line, after half the
    body, and before the final chunk / final bytes.
    """

    status: int = 200
    body: BodyKind | bytes = "json"
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    framing: Framing = "length"
    encoding: Encoding = "identity"
    connection: ConnectionMode = "keep-alive"
    http_version: HttpVersion = "1.1"
    size: int = _LARGE_DEFAULT
    chunk_size: int = 16 * 1024
    delay_headers: float = 0.0
    delay_mid_body: float = 0.0
    delay_final_chunk: float = 0.0
    close_idle_after: float | None = None

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f"Reply: {what}")

        if not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise bad(f"status must be an int from 100 to 599, got {self.status!r}")
        if not isinstance(self.body, bytes) and self.body not in _BODY_KINDS:
            raise bad(
                f"body must be bytes or one of {', '.join(_BODY_KINDS)}; got {self.body!r} "
                "(pass literal text as bytes, e.g. b'hello')"
            )
        if self.framing not in _FRAMINGS:
            raise bad(f"framing must be one of {', '.join(_FRAMINGS)}, got {self.framing!r}")
        if self.encoding not in _ENCODINGS:
            raise bad(f"encoding must be one of {', '.join(_ENCODINGS)}, got {self.encoding!r}")
        if self.connection not in _CONNECTIONS:
            raise bad(
                f"connection must be one of {', '.join(_CONNECTIONS)}, got {self.connection!r}"
            )
        if self.http_version not in ("1.1", "1.0"):
            raise bad(f"http_version must be '1.1' or '1.0', got {self.http_version!r}")
        if self.http_version == "1.0" and self.framing == "chunked":
            raise bad("HTTP/1.0 has no chunked framing; use framing='length' or 'close'")
        if self.size < 0 or self.chunk_size < 1:
            raise bad("size must be >= 0 and chunk_size >= 1")
        for name in ("delay_headers", "delay_mid_body", "delay_final_chunk"):
            if getattr(self, name) < 0:
                raise bad(f"{name} must be >= 0 seconds")
        if self.close_idle_after is not None and self.close_idle_after < 0:
            raise bad("close_idle_after must be None or >= 0 seconds")
        # A read-only copy: a Reply stays a value, safe to share with the server's thread.
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def __hash__(self) -> int:
        return hash((self.status, self.body, tuple(sorted(self.headers.items())), self.framing))

    def with_(self, **changes: Any) -> Reply:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def payload(self, *, load_balancer: bool = False) -> tuple[bytes | None, str | None, Reply]:
        """(body bytes or None for "none", content type, the reply as sent) for this reply.

        In load-balancer mode a 4xx/5xx reply's body becomes the balancer's HTML error page,
        sent with a Content-Length and without compression, as in the incident.
        """
        reply = self
        if load_balancer and self.status >= 400:
            page = error_page(self.status)
            reply = replace(
                self, body=page, content_type="text/html", framing="length", encoding="identity"
            )
            return page, "text/html", reply
        body: bytes | None
        ctype: str | None
        kind = self.body
        if isinstance(kind, bytes):
            body, ctype = kind, "application/octet-stream"
        elif kind == "none":
            body, ctype = None, None
        elif kind == "empty":
            body, ctype = b"", None
        elif kind == "html":
            body, ctype = error_page(self.status, "poolwatch-downstream"), "text/html"
        elif kind == "json":
            body = json.dumps(
                {"status": self.status, "reason": _reason(self.status)}, sort_keys=True
            ).encode()
            ctype = "application/json"
        elif kind == "text":
            body, ctype = f"{self.status} {_reason(self.status)}\n".encode(), "text/plain"
        else:
            body, ctype = _large(self.size), "application/octet-stream"
        return body, self.content_type or ctype, reply


@dataclass(frozen=True)
class RecordedRequest:
    """A request the downstream received, with secrets redacted.

    ``target`` keeps the path and the query's keys; query values, URL credentials and the
    values of Authorization / Cookie / token-like headers are replaced by ``<redacted>``. The
    body is not kept, only its size. ``connection`` numbers the TCP connection it came on (1 =
    the first one accepted), which shows keep-alive reuse.
    """

    method: str
    target: str
    path: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body_size: int
    connection: int
    status: int

    def header(self, name: str) -> str | None:
        """The (redacted) value of a header, by case-insensitive name."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


def _redact_header(name: str, value: str) -> str:
    lowered = name.lower()
    if lowered in _SECRET_HEADERS or any(word in lowered for word in _SECRET_WORDS):
        return REDACTED
    return value


def _redact_target(target: str) -> tuple[str, str]:
    """(redacted target, path) of a request target in origin or absolute form."""
    parts = urlsplit(target)
    path = parts.path or "/"
    prefix = ""
    if parts.scheme and parts.hostname:
        # Absolute form (proxies): keep scheme, host and port, never user:password.
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        prefix = f"{parts.scheme}://{host}{port}"
    query = ""
    if parts.query:
        keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True)]
        query = "?" + "&".join(f"{key}={REDACTED}" for key in keys) if keys else f"?{REDACTED}"
    return prefix + path + query, path


class _BadRequest(Exception):
    pass


class Downstream:
    """A scripted HTTP/1.1 server on a real socket, on a background thread.

    ``with Downstream() as ds:`` (or ``async with``) starts it on a free port of 127.0.0.1;
    ``ds.url`` is its base URL. ``ds.route(path, status=403, body="html")`` scripts every
    request to ``path`` (``"*"``: any path without its own route); ``ds.enqueue(reply, ...)``
    scripts the next requests one by one, ahead of the routes. ``load_balancer=True`` replaces
    4xx/5xx bodies by an HTML error page. ``host="::1"`` listens on IPv6 loopback; ``tls=True``
    serves HTTPS with a trustme test CA (``ds.ca_file``, ``ds.client_ssl_context()``).
    ``idle_timeout`` closes any kept-alive connection idle that long (a reply's own
    ``close_idle_after`` wins). ``ds.requests`` lists what was received, secrets redacted.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Reply | None = None,
        load_balancer: bool = False,
        tls: bool = False,
        idle_timeout: float | None = None,
    ) -> None:
        if idle_timeout is not None and idle_timeout < 0:
            raise ValueError("Downstream: idle_timeout must be None or >= 0 seconds")
        self.host = host
        self._requested_port = port
        self.load_balancer = load_balancer
        self.tls = tls
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._routes: dict[str, Reply] = {"*": default or Reply()}
        self._queue: deque[tuple[str, Reply]] = deque()
        self._requests: list[RecordedRequest] = []
        self._requests_dropped = 0
        self._changed = threading.Condition(self._lock)
        self._connections_opened = 0
        self._open: dict[int, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._ca: Any = None
        self._ca_file: str | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Downstream:
        """Listen and serve on a background thread; returns once the port is open."""
        if self._thread is not None:
            return self
        ssl_context = self._server_ssl_context() if self.tls else None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready, ssl_context), name="poolwatch-downstream", daemon=True
        )
        self._thread.start()
        if not ready.wait(10.0):
            raise RuntimeError("Downstream: the server thread did not start within 10 s")
        if self._startup_error is not None:
            error = self._startup_error
            self._thread.join(1.0)
            self._thread = None
            raise RuntimeError(
                f"Downstream: cannot listen on {self.host}:{self._requested_port}: {error}"
            ) from error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (FIN, not reset), stop listening and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            with contextlib.suppress(RuntimeError):
                future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
                with contextlib.suppress(Exception):
                    future.result(timeout)
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None
        if self._ca_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._ca_file)
            self._ca_file = None

    def __enter__(self) -> Downstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Downstream:
        # Starting blocks for a few milliseconds (a thread handshake); do it off the loop.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self, ready: threading.Event, ssl_context: Any) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._serve,
                        self.host,
                        self._requested_port,
                        ssl=ssl_context,
                        limit=_MAX_HEAD,
                        reuse_address=True,
                    )
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                self._startup_error = exc
                ready.set()
                return
            ready.set()
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open.values()):
            with contextlib.suppress(Exception):
                writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # -- addresses and TLS -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (after ``start``)."""
        if self._port is None:
            raise RuntimeError("Downstream: not started; use `with Downstream() as ds:`")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` / `https://[::1]:PORT`, no trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def url_for(self, path: str = "/") -> str:
        """The full URL of ``path`` on this server."""
        return self.url + (path if path.startswith("/") else "/" + path)

    def _server_ssl_context(self) -> Any:
        import ssl

        try:
            import trustme
        except ImportError:
            raise RuntimeError(
                "Downstream(tls=True) needs trustme: pip install 'poolwatch[testing]'"
            ) from None
        self._ca = trustme.CA()
        cert = self._ca.issue_cert("127.0.0.1", "::1", "localhost")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        fd, path = tempfile.mkstemp(prefix="poolwatch-ca-", suffix=".pem")
        os.close(fd)
        self._ca.cert_pem.write_to_path(path)
        self._ca_file = path
        return ctx

    @property
    def ca_file(self) -> str:
        """Path of the test CA's PEM file (for ``requests``' ``verify=``, httpx ``verify=``)."""
        if self._ca_file is None:
            raise RuntimeError("Downstream: ca_file exists only with tls=True, once started")
        return self._ca_file

    def client_ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` that trusts this server's test certificate."""
        import ssl

        if self._ca is None:
            raise RuntimeError("Downstream: client_ssl_context() needs tls=True, once started")
        ctx = ssl.create_default_context()
        self._ca.configure_trust(ctx)
        return ctx

    # -- scripting ---------------------------------------------------------------------------

    def route(self, path: str = "*", reply: Reply | None = None, **fields: Any) -> Reply:
        """Answer every request to ``path`` with ``reply`` (or ``Reply(**fields)``)."""
        if reply is not None and fields:
            raise TypeError("Downstream.route: pass a Reply or Reply fields, not both")
        chosen = reply if reply is not None else Reply(**fields)
        with self._lock:
            self._routes[_normal_path(path)] = chosen
        return chosen

    def enqueue(self, *replies: Reply, path: str = "*") -> None:
        """Answer the next requests to ``path`` (``"*"``: to any path) with these, in order."""
        with self._lock:
            self._queue.extend((_normal_path(path), reply) for reply in replies)

    def reset(self) -> None:
        """Forget routes, queued replies and recorded requests (the default route stays)."""
        with self._lock:
            default = self._routes["*"]
            self._routes = {"*": default}
            self._queue.clear()
            self._requests.clear()

    def _pick(self, path: str) -> Reply:
        with self._lock:
            for index, (queued_path, reply) in enumerate(self._queue):
                if queued_path in ("*", path):
                    del self._queue[index]
                    return reply
            return self._routes.get(path) or self._routes["*"]

    # -- what happened -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far (secrets redacted), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def connections_opened(self) -> int:
        """How many TCP connections the server accepted."""
        return self._connections_opened

    @property
    def open_connections(self) -> int:
        """How many accepted connections the server has not closed yet."""
        return len(self._open)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (``TimeoutError`` after ``timeout`` s)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"Downstream: {len(self._requests)} of {count} requests after {timeout} s"
                )
            return list(self._requests)

    def wait_connections_closed(self, timeout: float = 5.0) -> bool:
        """Block until the server has closed all its connections; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._open, timeout)

    def __repr__(self) -> str:
        where = self.url if self._port is not None else f"{self.host} (not started)"
        mode = " | load-balancer" if self.load_balancer else ""
        return (
            f"<Downstream {where} [requests {len(self._requests)} | "
            f"connections open {len(self._open)}{mode}]>"
        )

    # -- the server --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._changed:
            self._connections_opened += 1
            number = self._connections_opened
            self._open[number] = writer
        try:
            idle: float | None = self.idle_timeout
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle)
                except (TimeoutError, asyncio.TimeoutError):
                    return  # idle too long: close (FIN); the client is left in CLOSE_WAIT
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                    return
                try:
                    keep, idle = await self._exchange(head, reader, writer, number)
                except _BadRequest:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n")
                    writer.write(b"Connection: close\r\n\r\n")
                    return
                if not keep:
                    return
        except (OSError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # Stopping the server cancels its handlers; asyncio's stream callback would log a
            # cancelled handler as an error, so end quietly instead.
            return
        finally:
            # Close before telling waiters: wait_connections_closed() promises the FIN is sent.
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            with self._changed:
                self._open.pop(number, None)
                self._changed.notify_all()
            self._tasks.discard(task)

    async def _exchange(
        self,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
    ) -> tuple[bool, float | None]:
        """Read one request's body, answer it; (keep the connection open?, idle timeout)."""
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadRequest from None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest
            headers.append((name.strip(), value.strip()))
        lowered = {name.lower(): value for name, value in headers}
        if lowered.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body_size = await _read_body(reader, lowered)
        redacted_target, path = _redact_target(target)
        reply = self._pick(path)
        recorded = RecordedRequest(
            method=method,
            target=redacted_target,
            path=path,
            http_version=version.removeprefix("HTTP/"),
            headers=tuple((name, _redact_header(name, value)) for name, value in headers),
            body_size=body_size,
            connection=number,
            status=reply.status,
        )
        with self._changed:
            if len(self._requests) < _MAX_RECORDED:
                self._requests.append(recorded)
            else:
                self._requests_dropped += 1
            self._changed.notify_all()
        client_keep = "close" not in lowered.get("connection", "").lower() and (
            version != "HTTP/1.0" or "keep-alive" in lowered.get("connection", "").lower()
        )
        keep = await self._respond(reply, method, writer, client_keep)
        idle = reply.close_idle_after if reply.close_idle_after is not None else self.idle_timeout
        return keep, idle

    async def _respond(
        self, reply: Reply, method: str, writer: asyncio.StreamWriter, client_keep: bool
    ) -> bool:
        body, ctype, sent = reply.payload(load_balancer=self.load_balancer)
        no_body = _bodyless(sent.status, method)
        if body is not None and sent.encoding == "gzip" and body:
            body = gzip.compress(body, mtime=0)
        framing = sent.framing
        if body is None and not _bodyless(sent.status, "GET"):
            framing = "close"  # no length: the message ends when the connection closes
        keep = (
            client_keep
            and sent.connection == "keep-alive"
            and sent.http_version == "1.1"
            and framing != "close"
        )
        lines = [f"HTTP/{sent.http_version} {sent.status} {_reason(sent.status)}"]
        lines.append("Server: poolwatch-lb" if self.load_balancer else "Server: poolwatch")
        if ctype and body is not None:
            lines.append(f"Content-Type: {ctype}")
        if body is not None and sent.encoding == "gzip" and body:
            lines.append("Content-Encoding: gzip")
        if not _bodyless(sent.status, "GET") and body is not None:
            if framing == "length":
                lines.append(f"Content-Length: {len(body)}")
            elif framing == "chunked":
                lines.append("Transfer-Encoding: chunked")
        if sent.connection == "close" or (not keep and sent.connection != "reset"):
            lines.append("Connection: close")
        elif sent.http_version == "1.0" and keep:
            lines.append("Connection: keep-alive")
        lines.extend(f"{name}: {value}" for name, value in sent.headers.items())
        if sent.delay_headers:
            await asyncio.sleep(sent.delay_headers)
        # One write per stretch without a scripted pause: the head and a small body leave in
        # one segment, as from a real server, so whether a client has the whole body when it
        # sees the status does not depend on scheduling.
        out = _Out(writer)
        out.add(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if no_body or not body:
            if sent.connection == "reset":
                await out.flush()
                await _reset(writer)
                return False
            if framing == "chunked" and body is not None and not no_body:
                out.add(b"0\r\n\r\n")
            await out.flush()
            return keep
        await self._write_body(sent, body, framing, out)
        return keep

    async def _write_body(self, reply: Reply, body: bytes, framing: str, out: _Out) -> None:
        half = len(body) // 2
        pieces = [body[i : i + reply.chunk_size] for i in range(0, len(body), reply.chunk_size)]
        sent = 0
        paused = False
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            chunk = piece
            if reply.connection == "reset" and sent + len(chunk) > half:
                out.add(_frame(chunk[: max(half - sent, 1)], framing))
                await out.flush()
                await _reset(out.writer)
                return
            if last and reply.delay_final_chunk and framing != "chunked":
                # No chunk boundary to stall at: stall before the final bytes instead.
                await out.flush()
                await asyncio.sleep(reply.delay_final_chunk)
            if reply.delay_mid_body and not paused and sent + len(chunk) > half:
                split = half - sent
                if split:
                    out.add(_frame(chunk[:split], framing))
                await out.flush()
                await asyncio.sleep(reply.delay_mid_body)
                chunk = chunk[split:]
                paused = True
            out.add(_frame(chunk, framing))
            sent += len(piece)
        if framing == "chunked":
            if reply.delay_final_chunk:
                await out.flush()
                await asyncio.sleep(reply.delay_final_chunk)
            out.add(b"0\r\n\r\n")
        await out.flush()


class _Out:
    """Bytes gathered until the next scripted pause, then written in one go."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._parts: list[bytes] = []

    def add(self, data: bytes) -> None:
        if data:
            self._parts.append(data)

    async def flush(self) -> None:
        if self._parts:
            self.writer.write(b"".join(self._parts))
            self._parts.clear()
        await self.writer.drain()


def _frame(piece: bytes, framing: str) -> bytes:
    if framing != "chunked" or not piece:
        return piece
    return b"%x\r\n%s\r\n" % (len(piece), piece)


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST once what was written has left the process."""
    transport = writer.transport
    for _ in range(200):
        if not transport.get_write_buffer_size():
            break
        await asyncio.sleep(0.005)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger 0: close() discards and sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
    """Read (and drop) the request body; returns its size."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest from None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return total
            await reader.readexactly(size + 2)
            total += size
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest from None
    if length < 0:
        raise _BadRequest
    remaining = length
    while remaining:
        chunk = await reader.read(min(remaining, 1 << 16))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(chunk)
    return length


def _normal_path(path: str) -> str:
    if path == "*":
        return path
    return "/" + path.lstrip("/").split("?", 1)[0]
