"""Every admin endpoint over real HTTP, on a process with a real urllib3 leak."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import urllib3
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

import poolwatch
from poolwatch.admin import AdminServer, serve

from . import conftest
from .conftest import Leaker, get, pool_of

ENDPOINTS = [
    "ping",
    "healthcheck",
    "metrics",
    "threads",
    "threads?format=json",
    "leases",
    "pools",
    "sockets",
    "dashboard.json",
    "",
    "static/dashboard.js",
    "static/dashboard.css",
]


def _sample(families: object, name: str, **labels: str) -> float:
    for family in families:  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_every_endpoint_answers_with_no_store(admin: AdminServer, leaker: Leaker) -> None:
    """Each endpoint answers 200 on a leaking process and forbids caching."""
    leaker.leak(2)
    for path in ENDPOINTS:
        reply = get(admin.url + path)
        assert reply.status == 200, (path, reply.status, reply.text[:300])
        assert reply.headers.get("Cache-Control") == "no-store", path


def test_leases_show_the_leak_oldest_first(admin: AdminServer, leaker: Leaker) -> None:
    """/leases lists the leaked leases of the pool oldest first, with call site and response."""
    leaker.leak(1)
    time.sleep(0.01)
    leaker.leak(1, "/ok")
    data = get(admin.url + f"leases?pool={quote(leaker.label)}").json()
    mine = data["leases"]
    assert [lease["pool"] for lease in mine] == [leaker.label, leaker.label]
    assert mine[0]["age"] >= mine[1]["age"]
    source = Path(conftest.__file__).read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if text.strip().startswith(Leaker.LEAK_LINE))
    assert mine[0]["callsite"].endswith(f"tests/admin/conftest.py:{line} in Leaker.leak")
    assert mine[0]["response"]["status"] == 403
    assert mine[0]["response"]["content_type"].startswith("text/html")
    assert mine[1]["response"]["status"] == 200
    assert mine[0]["thread"] == "MainThread"
    assert mine[0]["socket"]["peer"] == f"127.0.0.1:{leaker.pool.port}"


def test_leases_min_age_filters(admin: AdminServer, leaker: Leaker) -> None:
    """?min_age= keeps only leases at least that old."""
    leaker.leak(1)
    assert get(admin.url + f"leases?pool={quote(leaker.label)}&min_age=0").json()["matched"] == 1
    assert get(admin.url + f"leases?pool={quote(leaker.label)}&min_age=3600").json()["matched"] == 0


def test_leases_text_format_describes_each_lease(admin: AdminServer, leaker: Leaker) -> None:
    """?format=text gives each lease's two-line description."""
    leaker.leak(1)
    reply = get(admin.url + f"leases?pool={quote(leaker.label)}&format=text")
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert f"{leaker.label}: " in reply.text
    assert "response 403 text/html" in reply.text


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("leases?min_age=soon", "min_age='soon' is not a number"),
        ("leases?min_age=-1", "min_age='-1' must be >= 0"),
        ("leases?limit=0", "limit='0' must be between 1 and 100000"),
        ("leases?state=happy", "state='happy' is not one of leased"),
        ("leases?colour=red", "unknown parameter 'colour' for /leases"),
        ("leases?pool=a&pool=b", "parameter 'pool' given 2 times"),
        ("threads?format=xml", "format='xml' is not one of text, json"),
        ("healthcheck?verbose=1", "unknown parameter 'verbose' for /healthcheck"),
        ("metrics?format=json", "unknown parameter 'format' for /metrics"),
    ],
)
def test_bad_query_parameters_get_400(admin: AdminServer, query: str, needle: str) -> None:
    """A bad query parameter gets a 400 whose message names it and what is allowed."""
    reply = get(admin.url + query)
    assert reply.status == 400
    assert needle in reply.json()["error"]


def test_unknown_path_and_method(admin: AdminServer) -> None:
    """Unknown paths get a 404 listing the pages; POST gets a 405; HEAD has no body."""
    missing = get(admin.url + "nope")
    assert missing.status == 404
    assert "/healthcheck" in missing.json()["pages"]
    assert get(admin.url + "ping", method="POST").status == 405
    head = get(admin.url + "ping", method="HEAD")
    assert head.status == 200
    assert head.body == b""


def test_pools_report_tracker_numbers(admin: AdminServer, leaker: Leaker) -> None:
    """/pools shows leased/idle/max as the tracker reports them."""
    leaker.leak(3)
    expected = pool_of(leaker.label)
    data = get(admin.url + "pools").json()
    mine = [p for p in data["pools"] if p["label"] == leaker.label]
    assert len(mine) == 1
    assert mine[0]["leased"] == expected.leased == 3
    assert mine[0]["max"] == expected.max == 4
    assert mine[0]["utilisation"] == 0.75


def test_metrics_parse_back_to_the_tracker_counts(admin: AdminServer, leaker: Leaker) -> None:
    """/metrics, parsed with prometheus_client's parser, shows the leased count of the tracker."""
    leaker.leak(3)
    reply = get(admin.url + "metrics")
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    families = list(text_string_to_metric_families(reply.text))
    expected = pool_of(leaker.label)
    port = str(leaker.pool.port)
    active = _sample(
        families,
        "http_client_open_connections",
        http_connection_state="active",
        pool=leaker.label,
        server_address="127.0.0.1",
        server_port=port,
    )
    assert active == expected.leased == 3
    assert _sample(families, "poolwatch_pool_max", pool=leaker.label) == 4
    assert _sample(families, "poolwatch_lease_age_seconds_count", pool=leaker.label) == 3
    assert _sample(families, "poolwatch_leaks_suspected", pool=leaker.label) == 0
    assert _sample(families, "poolwatch_pool_timeouts_total", pool=leaker.label) == 0


def test_metrics_speak_openmetrics_when_asked(admin: AdminServer, leaker: Leaker) -> None:
    """An OpenMetrics Accept header gets OpenMetrics text, parseable by the strict parser."""
    leaker.leak(1)
    reply = get(admin.url + "metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
    families = list(openmetrics_families(reply.text))
    value = _sample(
        families,
        "http_client_open_connections",
        http_connection_state="active",
        pool=leaker.label,
    )
    assert value == 1


@pytest.fixture
def own_tracker() -> Iterator[poolwatch.Tracker]:
    """A fresh tracker fed by a second real urllib3 adapter (so no other test's pool counts)."""
    from poolwatch.adapters import load

    tracker = poolwatch.Tracker()
    adapter = load("urllib3")()
    adapter.install(tracker)
    yield tracker
    adapter.uninstall()


def test_healthcheck_fails_while_exhausted_and_recovers(
    own_tracker: poolwatch.Tracker, leaker: Leaker
) -> None:
    """/healthcheck turns 500 when a pool is exhausted and back to 200 once it recovers."""
    # The window must outlast the round trip below on a loaded machine; recovery waits it out.
    with serve(tracker=own_tracker, exhaustion_window=3) as admin:
        assert get(admin.url + "healthcheck").status == 200
        leaker.leak(4)
        with pytest.raises(urllib3.exceptions.EmptyPoolError):
            leaker.pool.urlopen("GET", "/403", preload_content=False, pool_timeout=0.05)
        sick = get(admin.url + "healthcheck")
        assert sick.status == 500
        checks = sick.json()
        assert checks["pools"]["healthy"] is False
        assert f"{leaker.label}: 4 of 4 leased (100%)" in checks["pools"]["message"]
        assert checks["exhaustion"]["healthy"] is False
        assert leaker.label in checks["exhaustion"]["message"]
        leaker.release()
        deadline = time.monotonic() + 15
        status = 500
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            status = get(admin.url + "healthcheck").status
        assert status == 200


def test_threads_text_like_a_jvm_dump(admin: AdminServer) -> None:
    """/threads lists every thread by name with its frames, innermost first."""
    import threading

    ready = threading.Event()
    release = threading.Event()

    def parked_worker() -> None:
        ready.set()
        release.wait(10)

    worker = threading.Thread(target=parked_worker, name="pw-parked")
    worker.start()
    try:
        ready.wait(5)
        text = get(admin.url + "threads").text
        data = get(admin.url + "threads", {"Accept": "application/json"}).json()
    finally:
        release.set()
        worker.join(5)
    assert text.splitlines()[1].startswith("Full thread dump")
    block = text.split('"pw-parked"')[1].split("\n\n")[0]
    assert "in parked_worker" in block
    assert block.index("in wait") < block.index("in parked_worker")
    names = {t["name"] for t in data["threads"]}
    assert {"MainThread", "pw-parked"} <= names


def test_threads_show_asyncio_tasks_of_running_loops(admin: AdminServer) -> None:
    """/threads lists the tasks of an event loop running in another thread, with await chain."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def inner_wait() -> None:
        started.set()
        await stop.wait()

    async def pw_outer() -> None:
        await inner_wait()

    async def main() -> None:
        await asyncio.create_task(pw_outer(), name="pw-task")

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="pw-loop")
    thread.start()
    try:
        started.wait(5)
        data = get(admin.url + "threads?format=json").json()
        text = get(admin.url + "threads").text
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()
    loops = [entry for entry in data["loops"] if entry["thread"] == "pw-loop"]
    assert len(loops) == 1
    task = next(t for t in loops[0]["tasks"] if t["name"] == "pw-task")
    assert task["state"] == "pending"
    assert task["coroutine"].endswith("pw_outer()")
    functions = [f["function"] for f in task["stack"]]
    assert functions[-2:] == ["inner_wait", "pw_outer"]  # innermost first, into Event.wait
    assert 'asyncio tasks of the event loop running on "pw-loop"' in text


def test_sockets_join_leases_with_census(admin: AdminServer, leaker: Leaker) -> None:
    """/sockets shows the leased connection's socket with its TCP state from the census."""
    leaker.leak(1)
    data = get(admin.url + "sockets").json()
    assert data["available"] is True
    assert data["pid"] == os.getpid()
    mine = [entry for entry in data["leases"] if entry["pool"] == leaker.label]
    assert len(mine) == 1
    assert mine[0]["socket_state"] == "ESTABLISHED"
    assert mine[0]["remote"] == f"127.0.0.1:{leaker.pool.port}"
    assert data["counts"]["ESTABLISHED"] >= 1
    assert {"leased", "idle", "unknown"} <= set(data["close_wait"])


def test_sockets_without_census_says_why(
    admin: AdminServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an importable census, /sockets answers 503 with the reason, not a crash."""
    import sys

    monkeypatch.setitem(sys.modules, "poolwatch.census", None)
    reply = get(admin.url + "sockets")
    assert reply.status == 503
    assert reply.json()["available"] is False
    assert "socket census is not available" in reply.json()["error"]


def test_a_fault_in_a_handler_is_counted_not_raised(leaker: Leaker) -> None:
    """A runtime part that raises gives a 500 and an internal error count, and the app lives."""

    class BrokenLedger:
        def healthy(self) -> tuple[bool, str]:
            raise RuntimeError("ledger exploded")

    class Runtime:
        ledger = BrokenLedger()

    tracker = poolwatch.get_tracker()
    before = tracker.internal_errors["admin/healthcheck"]
    with serve(Runtime()) as admin:
        reply = get(admin.url + "healthcheck")
        assert reply.status == 500
        assert reply.json() == {"error": "poolwatch admin failed on /healthcheck: RuntimeError"}
        assert get(admin.url + "ping").status == 200
    assert tracker.internal_errors["admin/healthcheck"] == before + 1


def test_mounted_prefix_without_slash_redirects() -> None:
    """Asked for the mount point without a trailing slash, the app redirects to it."""
    from poolwatch.admin import make_app

    app = make_app()
    seen: list[tuple[str, list[tuple[str, str]]]] = []
    body = app(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "", "SCRIPT_NAME": "/ops/pw"},
        lambda status, headers: seen.append((status, headers)),
    )
    assert list(body) == [b""]
    assert seen[0][0].startswith("301")
    assert ("Location", "/ops/pw/") in seen[0][1]


def test_wait_returns_once_the_server_stops() -> None:
    """AdminServer.wait() blocks while serving and returns when stop() is called elsewhere."""
    import threading

    server = serve()
    stopper = threading.Timer(0.2, server.stop)
    stopper.start()
    server.wait()
    stopper.join(5)
    assert not server.running
    assert repr(server).endswith("[stopped]>")
