"""Issue 2's figures: request-loop overhead of the urllib3 hooks, and the tracker's own cost.

Table 1: a keep-alive GET loop with requests and with urllib3 against a fast local server,
plain vs instrumented, alternated in one run (target: ratio <= 1.03, call sites on).
Table 2: the tracker's checkout+checkin against urllib3's own _get_conn+_put_conn
(target: <= 0.5x).
"""

from __future__ import annotations

import requests
import urllib3

import poolwatch
from poolwatch import Tracker

from ._common import alternate, print_table
from ._server import start


def _request_loops(url: str) -> None:
    session = requests.Session()
    http = urllib3.PoolManager(maxsize=1)

    def requests_get() -> None:
        session.get(url).content  # noqa: B018 - read the body so the connection returns

    def urllib3_get() -> None:
        http.request("GET", url).data  # noqa: B018

    on = {"instrumented": lambda: poolwatch.instrument("urllib3")}
    off = {"instrumented": lambda: poolwatch.uninstrument("urllib3")}
    for name, fn in (("requests", requests_get), ("urllib3", urllib3_get)):
        result = alternate(
            {"plain": fn, "instrumented": fn}, calls=2000, rounds=16, setup=on, teardown=off
        )
        assert result.cpu is not None
        for what, figures in (("wall time", result), ("client CPU time", result.cpu)):
            print_table(
                f"{name}: keep-alive GET loop on 127.0.0.1, {what} (median of 16 alternated "
                "rounds x 2000; ratio: median of blocks of two rounds' own ratios)",
                [
                    (f"{name} plain", figures["plain"]),
                    (f"{name} + poolwatch", figures["instrumented"]),
                ],
                baseline=f"{name} plain",
                limit=1.03,
                ratios={f"{name} + poolwatch": figures.ratio("instrumented", "plain")},
            )
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
