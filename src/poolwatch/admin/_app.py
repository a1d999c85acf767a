"""The admin WSGI app: Dropwizard's admin servlets for a Python process, pool-aware.

One WSGI callable serves ``/ping``, ``/healthcheck``, ``/metrics``, ``/threads``, ``/leases``,
``/pools``, ``/sockets``, ``/dashboard.json`` and the dashboard (``/`` and ``/static/*``). It
imports nothing outside the standard library; prometheus_client is imported on the first
``/metrics`` request. Every response carries ``Cache-Control: no-store``. A fault inside a
handler is counted with ``tracker.internal_error`` and answered with a 500, never raised into
the server that hosts the app.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import platform
from collections.abc import Callable, Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .. import __version__
from .._api import get_tracker, instrumented
from ..export._measure import DEFAULT_SUSPECT_AFTER
from ._threads import dump_threads, format_threads
from ._views import (
    LEASE_STATES,
    CensusUnavailable,
    census_join,
    census_states,
    health,
    jsonable,
    leak_sites,
    lease_json,
    pool_json,
    runtime_part,
    timeline,
)

if TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = ["AdminApp", "BadRequest", "make_app"]

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: The dashboard loads nothing from elsewhere: scripts, styles and data from this app only.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: Paths that show nothing about the process and so need no token: liveness and static files.
_PUBLIC = frozenset({"/ping", "/", "/index.html"})


class BadRequest(ValueError):
    """A query parameter was wrong; the message says which and what is allowed."""


class _Query:
    """Query parameters of one request, checked against what the endpoint accepts."""

    def __init__(self, environ: Environ, path: str, allowed: Iterable[str]) -> None:
        try:
            raw = parse_qs(
                environ.get("QUERY_STRING", ""), keep_blank_values=True, strict_parsing=False
            )
        except ValueError as exc:
            raise BadRequest(f"malformed query string: {exc}") from None
        allowed = tuple(allowed)
        for name, values in raw.items():
            if name not in allowed:
                known = ", ".join(allowed) if allowed else "none"
                raise BadRequest(f"unknown parameter {name!r} for {path}; it accepts: {known}")
            if len(values) > 1:
                raise BadRequest(f"parameter {name!r} given {len(values)} times; give it once")
        self.values: dict[str, str] = {name: values[0] for name, values in raw.items()}
        self.path = path

    def text(self, name: str, choices: Iterable[str] | None = None) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if choices is not None:
            choices = tuple(choices)
            if value not in choices:
                raise BadRequest(
                    f"{name}={value!r} is not one of {', '.join(choices)} (for {self.path})"
                )
        return value

    def number(self, name: str, *, low: float, high: float | None = None) -> float | None:
        value = self.values.get(name)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(
                f"{name}={value!r} is not a number of seconds, e.g. {name}=5"
            ) from None
        if math.isnan(number) or number < low or (high is not None and number > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise BadRequest(f"{name}={value!r} must be {bound}")
        return number

    def integer(self, name: str, *, low: int, high: int, default: int) -> int:
        value = self.values.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadRequest(f"{name}={value!r} is not a whole number, e.g. {name}=100") from None
        if not low <= number <= high:
            raise BadRequest(f"{name}={value!r} must be between {low} and {high}")
        return number


def _wants_json(environ: Environ, query: _Query) -> bool:
    fmt = query.text("format", ("text", "json"))
    if fmt is not None:
        return fmt == "json"
    accept = environ.get("HTTP_ACCEPT", "")
    return "application/json" in accept and "text/plain" not in accept


class AdminApp:
    """The admin WSGI application. Build it with ``make_app``.

    ``runtime`` (from ``poolwatch.start``) adds the sampler's timeline, alerts and the
    delivery ledger where it has them; every part of it is optional. Without a runtime the app
    reads ``tracker`` (the default tracker when None, looked up on each request).
    """

    def __init__(
        self,
        runtime: Any = None,
        *,
        tracker: Tracker | None = None,
        token: str | None = None,
        critical: float = 0.9,
        exhaustion_window: float = 60.0,
        suspect_after: float | None = None,
        census: bool = True,
        registry: Any = None,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValueError("token must be a non-empty string (or None for no token)")
        if not 0 < critical <= 1:
            raise ValueError(f"critical must be a utilisation in (0, 1], got {critical!r}")
        if exhaustion_window <= 0:
            raise ValueError(f"exhaustion_window must be > 0 seconds, got {exhaustion_window!r}")
        self.runtime = runtime
        self._tracker = tracker
        self._token = token.encode() if token is not None else None
        self.critical = critical
        self.exhaustion_window = exhaustion_window
        if suspect_after is None:
            # The alert rules' leak age when a runtime has one, so the dashboard and the
            # alerts call the same leases suspected.
            found = runtime_part(runtime, "config", "rules", "leak_age")
            suspect_after = (
                float(found)
                if isinstance(found, (int, float)) and found > 0
                else DEFAULT_SUSPECT_AFTER
            )
        self.suspect_after = suspect_after
        # A runtime configured without the census (``census = false``) keeps it off here too.
        self.census = census and runtime_part(runtime, "config", "census") is not False
        self._registry = registry
        self._metrics_app: Callable[[Environ, StartResponse], Iterable[bytes]] | None = None
        self._static = {
            entry.name: entry
            for entry in resources.files(__package__).joinpath("static").iterdir()
            if entry.is_file() and os.path.splitext(entry.name)[1] in _STATIC_TYPES
        }
        self._routes: dict[str, Callable[[Environ, str], tuple[str, list[tuple[str, str]], bytes]]]
        self._routes = {
            "/ping": self._ping,
            "/healthcheck": self._healthcheck,
            "/threads": self._threads,
            "/leases": self._leases,
            "/pools": self._pools,
            "/sockets": self._sockets,
            "/dashboard.json": self._dashboard,
        }

    def __repr__(self) -> str:
        token = "token" if self._token else "no token"
        return f"<AdminApp [{token} | runtime {'yes' if self.runtime is not None else 'no'}]>"

    @property
    def tracker(self) -> Tracker:
        if self._tracker is not None:
            return self._tracker
        tracker = runtime_part(self.runtime, "tracker")
        return tracker if tracker is not None else get_tracker()

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "":
            # Mounted at /prefix and asked for /prefix: the dashboard's relative URLs need the
            # trailing slash.
            location = (environ.get("SCRIPT_NAME", "") or "") + "/"
            return self._send(
                start_response, "301 Moved Permanently", [("Location", location)], b"", method
            )
        if method not in ("GET", "HEAD"):
            return self._send(
                start_response,
                "405 Method Not Allowed",
                [("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8")],
                b"poolwatch admin: only GET and HEAD\n",
                method,
            )
        if not self._authorised(environ, path):
            return self._send(
                start_response,
                "401 Unauthorized",
                [
                    ("WWW-Authenticate", 'Bearer realm="poolwatch"'),
                    ("Content-Type", "application/json"),
                ],
                _dumps({"error": "this endpoint needs 'Authorization: Bearer <token>'"}),
                method,
            )
        try:
            if path == "/metrics":
                return self._metrics(environ, start_response)
            handler = self._routes.get(path)
            if handler is not None:
                status, headers, body = handler(environ, path)
            elif path in ("/", "/index.html"):
                status, headers, body = self._static_file("index.html")
            elif path.startswith("/static/") and path[len("/static/") :] in self._static:
                status, headers, body = self._static_file(path[len("/static/") :])
            else:
                status, headers, body = _json(
                    "404 Not Found",
                    {
                        "error": f"no such page {path!r}",
                        "pages": sorted([*self._routes, "/metrics", "/"]),
                    },
                )
        except BadRequest as exc:
            status, headers, body = _json("400 Bad Request", {"error": str(exc)})
        except Exception as exc:
            self.tracker.internal_error(f"admin{path}", exc)
            status, headers, body = _json(
                "500 Internal Server Error",
                {"error": f"poolwatch admin failed on {path}: {type(exc).__name__}"},
            )
        return self._send(start_response, status, headers, body, method)

    def _authorised(self, environ: Environ, path: str) -> bool:
        if self._token is None or path in _PUBLIC or path.startswith("/static/"):
            return True
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    @staticmethod
    def _send(
        start_response: StartResponse,
        status: str,
        headers: list[tuple[str, str]],
        body: bytes,
        method: str,
    ) -> list[bytes]:
        headers = [
            *headers,
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
        start_response(status, headers)
        return [] if method == "HEAD" else [body]

    # -- endpoints ---------------------------------------------------------------------------

    def _ping(self, environ: Environ, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        _Query(environ, path, ())
        return "200 OK", [("Content-Type", "text/plain; charset=utf-8")], b"pong\n"

    def _health_checks(self) -> dict[str, dict[str, Any]]:
        tracker = self.tracker
        snap = tracker.snapshot(leases=False)
        return health(
            snap,
            self.runtime,
            critical=self.critical,
            exhaustion_window=self.exhaustion_window,
            now=tracker.wall(),
        )

    def _healthcheck(self, environ: Environ, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        _Query(environ, path, ())
        checks = self._health_checks()
        ok = all(check["healthy"] for check in checks.values())
        return _json("200 OK" if ok else "500 Internal Server Error", checks)

    def _metrics(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raw = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        unknown = sorted(set(raw) - {"name[]"})
        if unknown:  # name[] (repeatable) is prometheus_client's own filter
            raise BadRequest(
                f"unknown parameter {unknown[0]!r} for /metrics; it accepts: name[] "
                f"(repeatable, e.g. name[]=http_client_open_connections)"
            )
        app = self._metrics_app
        if app is None:
            try:
                from prometheus_client import make_wsgi_app
            except ImportError:
                return self._send(
                    start_response,
                    "501 Not Implemented",
                    [("Content-Type", "text/plain; charset=utf-8")],
                    b"poolwatch: /metrics needs prometheus_client: "
                    b"pip install 'poolwatch[admin]'\n",
                    environ.get("REQUEST_METHOD", "GET"),
                )
            registry = self._registry
            if registry is None:
                from ..export import make_registry

                registry = make_registry(
                    lambda: self.tracker,
                    runtime=self.runtime,
                    suspect_after=self.suspect_after,
                    census=self.census,
                )
            app = self._metrics_app = make_wsgi_app(registry)

        def no_store(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, [*headers, ("Cache-Control", "no-store")], *rest)

        return app(environ, no_store)

    def _threads(self, environ: Environ, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        query = _Query(environ, path, ("format",))
        dump = dump_threads()
        if _wants_json(environ, query):
            return _json("200 OK", dump)
        return (
            "200 OK",
            [("Content-Type", "text/plain; charset=utf-8")],
            format_threads(dump).encode(),
        )

    def _leases(self, environ: Environ, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        query = _Query(environ, path, ("min_age", "pool", "state", "callsite", "limit", "format"))
        min_age = query.number("min_age", low=0.0)
        pool = query.text("pool")
        state = query.text("state", LEASE_STATES)
        callsite = query.text("callsite")
        limit = query.integer("limit", low=1, high=100_000, default=1000)
        fmt = query.text("format", ("json", "text"))
        tracker = self.tracker
        leases = tracker.snapshot(sockets=True).leases
        chosen = [
            lease
            for lease in leases
            if (min_age is None or lease.age >= min_age)
            and (pool is None or pool in lease.pool)
            and (state is None or lease.state == state)
            and (callsite is None or callsite in str(lease.callsite))
        ]
        shown = chosen[:limit]
        if fmt == "text":
            text = "\n".join(lease.describe() for lease in shown) or "no live leases"
            return "200 OK", [("Content-Type", "text/plain; charset=utf-8")], (text + "\n").encode()
        states = census_states() if self.census and shown else None
        return _json(
            "200 OK",
            {
                "total": len(leases),
                "matched": len(chosen),
                "shown": len(shown),
                "leases": [lease_json(lease, states) for lease in shown],
            },
        )

    def _pools(self, environ: Environ, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        _Query(environ, path, ())
        snap = self.tracker.snapshot(leases=True)
        return _json("200 OK", {"pools": self._pool_list(snap)})

    def _pool_list(self, snap: Any) -> list[dict[str, Any]]:
        return [
            pool_json(p, sum(1 for lease in p.leases if lease.age >= self.suspect_after))
            for p in snap.pools
        ]

    def _sockets(self, environ: Environ, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        _Query(environ, path, ())
        tracker = self.tracker
        try:
            data = census_join(tracker)
        except CensusUnavailable as exc:
            return _json("503 Service Unavailable", {"available": False, "error": str(exc)})
        return _json("200 OK", data)

    def _dashboard(self, environ: Environ, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        query = _Query(environ, path, ("leases",))
        lease_limit = query.integer("leases", low=0, high=10_000, default=50)
        tracker = self.tracker
        snap = tracker.snapshot(sockets=True)
        now = tracker.wall()
        checks = health(
            snap,
            self.runtime,
            critical=self.critical,
            exhaustion_window=self.exhaustion_window,
            now=now,
        )
        leases = snap.leases
        shown = leases[:lease_limit]
        states = census_states() if self.census and shown else None
        engine = runtime_part(self.runtime, "engine")
        ledger = runtime_part(self.runtime, "ledger")
        alerts = ledger_entries = None
        if engine is not None and callable(getattr(engine, "active", None)):
            alerts = jsonable(list(engine.active()))
        if ledger is not None and callable(getattr(ledger, "entries", None)):
            ledger_entries = jsonable(list(ledger.entries(20)))
        events = [
            {"kind": e.kind, "pool": e.pool, "wall": e.wall, "message": e.message.split("\n")[0]}
            for e in list(snap.events)[-20:]
        ]
        events.reverse()
        data = {
            "now": now,
            "pid": os.getpid(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "version": __version__,
            "instrumented": instrumented(),
            "critical": self.critical,
            "suspect_after": self.suspect_after,
            "healthy": all(c["healthy"] for c in checks.values()),
            "health": checks,
            "pools": self._pool_list(snap),
            "leak_sites": leak_sites(snap),
            "leases": {
                "total": len(leases),
                "shown": [lease_json(lease, states) for lease in shown],
            },
            "timeline": timeline(self.runtime, sorted({f"{p.kind} {p.name}" for p in snap.pools})),
            "alerts": alerts,
            "ledger": ledger_entries,
            "events": events,
            "internal_errors": snap.internal_errors,
        }
        return _json("200 OK", data, indent=None)

    def _static_file(self, name: str) -> tuple[str, list[tuple[str, str]], bytes]:
        body = self._static[name].read_bytes()
        ctype = _STATIC_TYPES[os.path.splitext(name)[1]]
        headers = [("Content-Type", ctype)]
        if name.endswith(".html"):
            headers.append(("Content-Security-Policy", _CSP))
            headers.append(("X-Frame-Options", "DENY"))
        return "200 OK", headers, body


def _dumps(data: Any, indent: int | None = 2) -> bytes:
    return (json.dumps(data, indent=indent, default=str) + "\n").encode()


def _json(
    status: str, data: Any, *, indent: int | None = 2
) -> tuple[str, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], _dumps(data, indent)


def make_app(
    runtime: Any = None,
    *,
    tracker: Tracker | None = None,
    token: str | None = None,
    critical: float = 0.9,
    exhaustion_window: float = 60.0,
    suspect_after: float | None = None,
    census: bool = True,
    registry: Any = None,
) -> AdminApp:
    """The admin app as a WSGI callable.

    ``token`` requires ``Authorization: Bearer <token>`` on every endpoint that shows data
    (``/ping`` and the dashboard's static page stay open; the page asks for the token).
    ``critical`` is the utilisation at which ``/healthcheck`` fails a pool;
    ``exhaustion_window`` how long (seconds) an exhaustion keeps it failing;
    ``suspect_after`` the age (seconds) from which a lease counts as a suspected leak;
    ``census=False`` skips the socket census in ``/metrics`` and ``/leases``;
    ``registry`` serves another prometheus_client registry on ``/metrics``.
    """
    return AdminApp(
        runtime,
        tracker=tracker,
        token=token,
        critical=critical,
        exhaustion_window=exhaustion_window,
        suspect_after=suspect_after,
        census=census,
        registry=registry,
    )
