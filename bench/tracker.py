"""Issue 2's figures: request-loop overhead of the urllib3 hooks, and the tracker's own cost.

Table 1: a keep-alive GET loop with requests and with urllib3 against a fast local server,
plain vs poolwatch vs OpenTelemetry's own requests / urllib3 instrumentation (the peer users
already run, see bench/_otel.py), alternated in one run, in several fresh processes
(``_common.in_processes``) (target: ratio <= 1.03, call sites on, and below the peer), in wall
and client CPU time, with plain run again as the A/A row (``_common.AGAIN``).
Table 2: the tracker's checkout+checkin against urllib3's own _get_conn+_put_conn
(target: <= 0.5x).
"""

from __future__ import annotations

import requests
import urllib3
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

import poolwatch
from poolwatch import Tracker

from ._common import (
    AGAIN,
    Timings,
    alternate,
    in_processes,
    paired_label,
    print_table,
    print_wall_and_cpu,
)
from ._otel import switch_off, tracer_provider
from ._server import start

ROUNDS = 2  # per process (``in_processes`` runs many)
CALLS = 2000
_OTEL_LABELS = {"requests": "OpenTelemetry requests", "urllib3": "OpenTelemetry urllib3"}


def _request_loops(url: str) -> None:
    for name, otel_label in _OTEL_LABELS.items():
        result = in_processes("bench.tracker:request_loop", name, url)
        label = paired_label(result, ROUNDS, CALLS)

        def title(what: str, name: str = name, label: str = label) -> str:
            return f"{name}: keep-alive GET loop on 127.0.0.1, {what} ({label})"

        rows = {
            "plain": f"{name} plain",
            "instrumented": f"{name} + poolwatch",
            "otel": f"{name} + {otel_label}",
        }
        print_wall_and_cpu(title, rows, result)


def request_loop(name: str, url: str) -> Timings:
    """The rounds of the ``name`` ("requests" or "urllib3") loop; run by ``in_processes``."""
    session = requests.Session()
    http = urllib3.PoolManager(maxsize=1)
    provider = tracer_provider()

    def requests_get() -> None:
        session.get(url).content  # noqa: B018 - read the body so the connection returns

    def urllib3_get() -> None:
        http.request("GET", url).data  # noqa: B018

    fn, otel = {
        "requests": (requests_get, RequestsInstrumentor()),
        "urllib3": (urllib3_get, URLLib3Instrumentor()),
    }[name]

    def otel_on() -> None:
        otel.instrument(tracer_provider=provider)

    try:
        return alternate(
            {"plain": fn, "instrumented": fn, "otel": fn, AGAIN: fn},
            calls=CALLS,
            rounds=ROUNDS,
            setup={"instrumented": lambda: poolwatch.instrument("urllib3"), "otel": otel_on},
            teardown={
                "instrumented": lambda: poolwatch.uninstrument("urllib3"),
                "otel": switch_off(otel, provider),
            },
        )
    finally:
        provider.shutdown()
        session.close()
        http.clear()


def _tracker_cost(url: str) -> None:
    pool = urllib3.connectionpool.connection_from_url(url, maxsize=1)
    pool._put_conn(pool._get_conn())  # one connection in the pool
    tracker = Tracker()
    record = tracker.pool(pool, "urllib3", "bench")
    conn = pool._get_conn()
    pool._put_conn(conn)

    def urllib3_own() -> None:
        pool._put_conn(pool._get_conn())

    def tracker_pair() -> None:
        tracker.checkin(record, id(conn))
        tracker.checkout(record, id(conn), conn)

    tracker.checkout(record, id(conn), conn)
    result = alternate({"urllib3": urllib3_own, "tracker": tracker_pair}, calls=50_000, rounds=9)
    print_table(
        "checkout+checkin: the tracker vs urllib3's own _get_conn+_put_conn",
        [
            ("urllib3 _get_conn+_put_conn", result["urllib3"]),
            ("tracker checkout+checkin (call site on)", result["tracker"]),
        ],
        baseline="urllib3 _get_conn+_put_conn",
        limit=0.5,
    )


def main() -> None:
    was = poolwatch.instrumented()
    poolwatch.uninstrument()
    url, stop = start()
    try:
        _request_loops(url)
        _tracker_cost(url)
    finally:
        stop()
        if was:
            poolwatch.instrument(*was)


if __name__ == "__main__":
    main()
