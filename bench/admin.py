"""Cost of a /metrics scrape with 100 pools and 10,000 live leases, and of the tracker lock in it.

`python -m bench admin`. Target (issue 7): a scrape under 50 ms, the tracker lock held under
1 ms of it. The tracker is real (100 pool objects, 100 checkouts each); the scrape goes through
the admin WSGI app in-process and over HTTP to the standalone server. The lock is wrapped in a
timing proxy that records how long each acquisition holds it.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from types import TracebackType
from typing import Any

from poolwatch import Tracker
from poolwatch.admin import make_app, serve
from poolwatch.export._sources import census_states

from ._common import alternate, print_table

POOLS = 100
LEASES_PER_POOL = 100


class _Pool:
    """A stand-in pool object: the tracker needs only something it can weakly reference."""


class _Conn:
    pass


class TimedLock:
    """A lock that records how long each acquisition held it (bench only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0
        self.holds: list[float] = []

    def __enter__(self) -> TimedLock:
        self._lock.acquire()
        self._since = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.holds.append(time.perf_counter() - self._since)
        self._lock.release()


def build() -> tuple[Tracker, list[Any]]:
    tracker = Tracker()
    keep: list[Any] = []
    for i in range(POOLS):
        pool = _Pool()
        keep.append(pool)
        record = tracker.pool(
            pool, "urllib3", f"http://127.0.0.1:{20000 + i}", stats=lambda p: (128, 3, 0)
        )
        for _ in range(LEASES_PER_POOL):
            conn = _Conn()
            keep.append(conn)
            tracker.checkout(record, id(conn), conn)
    return tracker, keep


def _wsgi_get(app: Any, path: str) -> bytes:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""}
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    if not status[0].startswith("200"):
        raise RuntimeError(f"bench: {path} answered {status[0]}")
    return body


def _host_sockets() -> str:
    try:
        from poolwatch.census import host_counts

        return str(sum(host_counts().values()))
    except Exception as exc:  # a bench without a census still reports its other figures
        return f"unknown ({exc})"


def main() -> None:
    tracker, _keep = build()
    lock = TimedLock()
    tracker._lock = lock  # type: ignore[assignment]  # bench-only timing proxy
    app = make_app(tracker=tracker)
    app_no_census = make_app(tracker=tracker, census=False)
    body = _wsgi_get(app, "/metrics")
    assert b'http_client_open_connections{http_connection_state="active"' in body
    server = serve(tracker=tracker)
    url = server.url + "metrics"

    def http_scrape() -> None:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()

    try:
        results = alternate(
            {
                "tracker.snapshot(leases=False) (baseline)": lambda: tracker.snapshot(leases=False),
                "/metrics, WSGI in-process": lambda: _wsgi_get(app, "/metrics"),
                "/metrics, WSGI, census=False": lambda: _wsgi_get(app_no_census, "/metrics"),
                "/metrics over HTTP (standalone server)": http_scrape,
                "census of this process alone (in each scrape)": census_states,
                "tracker.snapshot(leases=True) (for scale)": tracker.snapshot,
            },
            calls=5,
            rounds=7,
        )
        print_table(
            f"/metrics scrape, {POOLS} pools x {LEASES_PER_POOL} live leases "
            f"({POOLS * LEASES_PER_POOL} leases)",
            list(results.items()),
            "tracker.snapshot(leases=False) (baseline)",
            unit="ms",
            scale=1e3,
        )
        lock.holds.clear()
        scrapes = 20
        per_scrape = []
        for _ in range(scrapes):
            before = len(lock.holds)
            http_scrape()
            per_scrape.append(sum(lock.holds[before:]))
        worst_hold = max(lock.holds)
        total = max(per_scrape)
        scrape = results["/metrics over HTTP (standalone server)"]
        print(
            f"\n  scrape over HTTP: {scrape * 1e3:.2f} ms (target < 50 ms: "
            f"{'ok' if scrape < 0.050 else 'OVER'})"
        )
        print(
            f"  (the census part grows with the host's TCP table, not with pools or leases: "
            f"{_host_sockets()} sockets on this host now)"
        )
        print(
            f"  tracker lock per scrape: at most {total * 1e3:.3f} ms in total over {scrapes} "
            f"scrapes, longest single hold {worst_hold * 1e3:.3f} ms (target < 1 ms: "
            f"{'ok' if total < 0.001 else 'OVER'})"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
