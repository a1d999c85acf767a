"""httpx (sync) and httpcore against real local servers: what poolwatch reports for each leak."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

import poolwatch
from poolwatch import Tracker
from poolwatch.adapters._httpx import HttpxAdapter
from poolwatch.testing import Downstream, Reply

from .._helpers import in_threads, pool_of
from .._httpserver import HTML_403

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scripted() -> Iterator[Downstream]:
    """A scripted real HTTP/1.1 server on 127.0.0.1 for replies the plain server cannot give."""
    with Downstream() as downstream:
        yield downstream


def fetch_status(client: httpx.Client, url: str) -> int:
    response = client.send(client.build_request("GET", url), stream=True)  # never closed
    return response.status_code


def hold(client: httpx.Client, url: str) -> httpx.Response:
    return client.send(client.build_request("GET", url), stream=True)


@LEAK
def test_kept_streamed_response_is_a_lease_with_call_site_and_response(
    tracker: Tracker, server: str
) -> None:
    """A streamed response kept unread holds a lease naming its line, thread and response."""
    with httpx.Client() as client:
        kept = client.send(client.build_request("GET", server + "/403"), stream=True)
        (lease,) = tracker.snapshot().leases
        assert lease.state == "leased"
        assert lease.pool == f"httpx {server}"
        assert lease.callsite.filename == __file__
        assert lease.callsite.function == (
            "test_kept_streamed_response_is_a_lease_with_call_site_and_response"
        )
        assert lease.response is not None
        assert lease.response.status == 403
        assert lease.response.content_type == "text/html; charset=utf-8"
        assert lease.response.content_length == len(HTML_403)
        assert lease.thread_name == threading.current_thread().name
        kept.close()
        assert tracker.snapshot().leases == ()


@LEAK
def test_dropped_response_is_a_confirmed_leak_whose_slot_stays_lost(
    tracker: Tracker, server: str
) -> None:
    """A streamed response dropped unread is lost at its line; the pool never gets the slot."""
    limits = httpx.Limits(max_connections=1)
    with httpx.Client(limits=limits, timeout=httpx.Timeout(5, pool=0.05)) as client:
        assert fetch_status(client, server + "/403") == 403
        gc.collect()
        pool = pool_of(tracker, "httpx")
        (lease,) = pool.leases
        assert lease.state == "lost"
        assert str(lease.callsite).endswith(f"in {fetch_status.__name__}")
        assert (pool.leased, pool.confirmed_leaks) == (1, 1)
        assert dict(pool.leaks_by_callsite) == {lease.callsite: 1}
        # httpx keeps the request and its connection alive: the socket stays open (CLOSE_WAIT
        # once the server gives up on it), joinable to the lease by inode.
        (with_socket,) = tracker.snapshot(sockets=True).leases
        assert with_socket.socket is not None
        assert with_socket.socket.peer == ("127.0.0.1", int(server.rsplit(":", 1)[1]))
        with pytest.raises(httpx.PoolTimeout) as info:
            client.get(server + "/ok")
        assert f"1 x {lease.callsite}" in str(info.value)
        assert "1 lost" in str(info.value)


def test_stream_context_manager_is_clean(tracker: Tracker, server: str) -> None:
    """`with client.stream()` returns its connection even when the body is never read."""
    with httpx.Client() as client, poolwatch.no_leaks(tracker=tracker):
        with client.stream("GET", server + "/403") as response:
            assert response.status_code == 403
            assert len(tracker.snapshot().leases) == 1
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.checkouts, pool.checkins) == (0, 1, 1)


def test_dropped_stream_context_manager_closes_itself(tracker: Tracker, server: str) -> None:
    """A `client.stream()` context manager entered and dropped closes its response at once."""
    with httpx.Client() as client:
        manager = client.stream("GET", server + "/403")
        assert manager.__enter__().status_code == 403
        del manager  # the generator's finalizer closes the response
        gc.collect()
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.confirmed_leaks, pool.checkins) == (0, 0, 1)


def test_read_responses_return_to_the_pool_as_idle(tracker: Tracker, server: str) -> None:
    """Responses read in full return their connection: idle, never leased."""
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(server + "/ok").status_code == 200
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.idle, pool.checkouts, pool.checkins) == (0, 1, 3, 3)
        assert repr(pool) == f"<Pool httpx {server} [leased 0 | idle 1 | waiting 0 | max 100]>"


def test_unlimited_pool_reports_no_max(tracker: Tracker, server: str) -> None:
    """`httpx.Limits()` with no arguments is unbounded: the snapshot says so."""
    with httpx.Client(limits=httpx.Limits()) as client:
        client.get(server + "/ok")
        pool = pool_of(tracker, "httpx")
        assert pool.max is None
        assert pool.utilisation is None


@LEAK
def test_pool_timeout_message_says_everything(tracker: Tracker, server: str) -> None:
    """httpx.PoolTimeout, empty in httpx, names the pool, the lines holding it and responses."""
    limits = httpx.Limits(max_connections=2)
    with httpx.Client(limits=limits, timeout=httpx.Timeout(5, pool=0.05)) as client:
        kept = [hold(client, server + "/403") for _ in range(2)]
        with pytest.raises(httpx.PoolTimeout) as info:
            client.get(server + "/ok")
        message = str(info.value)
        site = tracker.snapshot().leases[0].callsite
        assert f"<Pool httpx {server} [leased 2 | idle 0 | waiting 1 | max 2]> is exhausted" in (
            message
        )
        assert f"2 x {site}: response 403 text/html, 86-byte body" in message
        view = "<ConnectionPool [Requests: 2 active, 1 queued | Connections: 2 active, 0 idle]>"
        assert view in message
        # httpx builds its exception from str() of httpcore's, which carries the same text.
        assert isinstance(info.value.__cause__, httpcore.PoolTimeout)
        assert str(info.value.__cause__) == message
        assert pool_of(tracker, "httpx").exhaustions == 1
        (event,) = [e for e in tracker.snapshot().events if e.kind == "exhausted"]
        assert event.message in message
        for response in kept:
            response.close()
        assert client.get(server + "/ok").status_code == 200


@LEAK
def test_caller_waiting_for_a_connection_is_visible(tracker: Tracker, server: str) -> None:
    """A thread queued in the pool shows as waiting, with its thread and line, until served."""
    limits = httpx.Limits(max_connections=1)
    client = httpx.Client(limits=limits, timeout=httpx.Timeout(5, pool=30))
    held = hold(client, server + "/403")
    done = threading.Event()

    def blocked_caller() -> None:
        client.get(server + "/ok")
        done.set()

    worker = threading.Thread(target=blocked_caller, name="blocked-worker")
    worker.start()
    deadline = time.monotonic() + 10
    pool = pool_of(tracker, "httpx")
    while not pool.waiters and time.monotonic() < deadline:
        time.sleep(0.01)
        pool = pool_of(tracker, "httpx")
    assert pool.waiting == 1
    (waiter,) = pool.waiters
    assert waiter.thread_name == "blocked-worker"
    assert waiter.callsite.function.endswith("<locals>.blocked_caller")
    assert not done.is_set()
    held.close()  # returns the connection to the pool, which hands it to the waiter
    worker.join(10)
    assert done.is_set()
    pool = pool_of(tracker, "httpx")
    assert (pool.waiting, pool.leased, pool.checkouts, pool.checkins) == (0, 0, 2, 2)
    client.close()


def test_a_request_httpcore_retries_keeps_one_lease_and_no_fault(
    tracker: Tracker, server: str
) -> None:
    """Two queued requests handed the same idle connection: httpcore retries one of them
    (ConnectionNotAvailable), which waits and is assigned again. Still one lease per request,
    and no fault counted (the retry once raised inside poolwatch: a read-only field)."""
    retries: list[str] = []
    clear_connection = httpcore._sync.connection_pool.PoolRequest.clear_connection.__code__

    def watch(frame: Any, event: str, arg: Any) -> None:  # sees httpcore's retry, changes nothing
        if event == "call" and frame.f_code is clear_connection:
            retries.append(threading.current_thread().name)

    limits = httpx.Limits(max_connections=1)
    statuses: list[int] = []
    with httpx.Client(limits=limits, timeout=httpx.Timeout(10)) as client:
        held = hold(client, server + "/ok")
        threading.setprofile(watch)
        try:
            workers = [
                threading.Thread(
                    target=lambda: statuses.append(client.get(server + "/ok").status_code)
                )
                for _ in range(2)
            ]
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + 10
            while pool_of(tracker, "httpx").waiting < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            held.read()  # read to the end: both queued requests get the connection, now idle
            for worker in workers:
                worker.join(10)
        finally:
            threading.setprofile(None)  # type: ignore[arg-type]
    assert statuses == [200, 200]
    assert len(retries) == 1
    pool = pool_of(tracker, "httpx")
    assert (pool.checkouts, pool.checkins, pool.leased) == (3, 3, 0)
    assert tracker.internal_errors == {}


class Wrapping(httpx.BaseTransport):
    """A user's own transport that delegates to another (retries, caching, signing ...)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


CLIENTS: dict[str, Any] = {
    "default": httpx.Client,
    "transport": lambda: httpx.Client(transport=httpx.HTTPTransport(retries=1)),
    "mount": lambda: httpx.Client(mounts={"http://127.0.0.1": httpx.HTTPTransport()}),
    "wrapping transport": lambda: httpx.Client(transport=Wrapping(httpx.HTTPTransport())),
}


@pytest.mark.parametrize("shape", list(CLIENTS))
def test_every_client_shape_is_tracked(tracker: Tracker, server: str, shape: str) -> None:
    """Clients built with a transport, a mount or a wrapping transport are all tracked."""
    with CLIENTS[shape]() as client, client.stream("GET", server + "/403") as response:
        (lease,) = tracker.snapshot().leases
        assert lease.callsite.filename == __file__
        assert lease.response is not None
        assert lease.response.status == response.status_code == 403
    pool = pool_of(tracker, "httpx")
    assert (pool.leased, pool.checkouts, pool.checkins) == (0, 1, 1)


def test_plain_httpcore_pool_is_tracked(tracker: Tracker, server: str) -> None:
    """Code that uses httpcore's ConnectionPool directly is tracked the same way."""
    with httpcore.ConnectionPool() as pool, pool.stream("GET", server + "/403") as response:
        (lease,) = tracker.snapshot().leases
        assert lease.callsite.function == "test_plain_httpcore_pool_is_tracked"
        assert lease.response is not None
        assert lease.response.status == response.status == 403
    assert pool_of(tracker, "httpx").leased == 0


@pytest.mark.parametrize(
    ("reply", "facts"),
    [
        (Reply(status=200, body="json", framing="chunked"), (200, "application/json", None, True)),
        (Reply(status=204, body="empty"), (204, None, None, False)),
        (Reply(status=403, body="html"), (403, "text/html", "length", False)),
        (Reply(status=200, body="large", size=4096), (200, None, 4096, False)),
    ],
)
def test_response_facts_come_from_the_headers(
    tracker: Tracker, scripted: Downstream, reply: Reply, facts: tuple[Any, ...]
) -> None:
    """Status, content type and framing of the response on the lease match what was sent."""
    scripted.route("/r", reply)
    status, content_type, length, chunked = facts
    with httpx.Client() as client, client.stream("GET", scripted.url_for("/r")) as response:
        (lease,) = tracker.snapshot().leases
        seen = lease.response
        assert seen is not None
        assert seen.status == status
        if content_type is not None:
            assert (seen.content_type or "").startswith(content_type)
        expected_length = response.headers.get("content-length")
        if length == "length":
            assert seen.content_length == int(expected_length) > 0
        elif length is not None:
            assert seen.content_length == length
        else:
            assert seen.content_length is None or status == 204
        assert seen.chunked is chunked
        if status == 204:
            assert seen.has_body is False


def test_lease_and_idle_sockets_join_by_inode(tracker: Tracker, server: str) -> None:
    """A leased connection's socket identity is the one that goes idle after the close."""
    port = int(server.rsplit(":", 1)[1])
    with httpx.Client() as client:
        with client.stream("GET", server + "/403") as response:
            (lease,) = tracker.snapshot(sockets=True).leases
            assert lease.socket is not None
            assert lease.socket.peer == ("127.0.0.1", port)
            assert lease.socket.inode is not None
            response.read()  # read in full, so the connection is kept alive, idle
        idle = [info for label, info in tracker.idle_sockets() if label == f"httpx {server}"]
        assert [info.inode for info in idle] == [lease.socket.inode]


@LEAK
def test_client_closed_with_response_open_is_reported(tracker: Tracker, server: str) -> None:
    """Closing the client while a streamed response is open reports it as closed while leased."""
    client = httpx.Client()
    kept = hold(client, server + "/403")
    client.close()
    (pool,) = [p for p in tracker.snapshot().pools if p.kind == "httpx"]
    assert (pool.leased, pool.confirmed_leaks) == (0, 1)
    (leak,) = tracker.leaks_since(0)
    assert leak.state == "closed"
    assert leak.callsite.function == "hold"
    assert leak.note == "the client was closed with this response open"
    kept.close()  # no second report, no error
    assert pool_of(tracker, "httpx").confirmed_leaks == 1


@LEAK
def test_no_leaks_names_the_line_and_passes_clean_code(tracker: Tracker, server: str) -> None:
    """no_leaks() raises LeakError naming the leaking line; clean code passes through."""
    with httpx.Client() as client:
        with pytest.raises(poolwatch.LeakError) as info, poolwatch.no_leaks(tracker=tracker):
            fetch_status(client, server + "/403")
        assert "in fetch_status" in str(info.value)
        assert "403 text/html, 86-byte body" in str(info.value)
        with poolwatch.no_leaks(tracker=tracker):
            client.get(server + "/403")


def test_uninstrument_restores_httpcore_exactly() -> None:
    """After uninstrument() httpcore's pool classes hold exactly what they had before."""
    from httpcore._async import connection_pool as aio
    from httpcore._sync import connection_pool as sync

    classes = [
        aio.AsyncConnectionPool,
        aio.AsyncPoolRequest,
        aio.PoolByteStream,
        sync.ConnectionPool,
        sync.PoolRequest,
        sync.PoolByteStream,
    ]
    was_installed = "httpx" in poolwatch.instrumented()
    poolwatch.uninstrument("httpx")
    plain = [dict(vars(cls)) for cls in classes]
    poolwatch.instrument("httpcore")  # the alias installs the httpx adapter
    assert "httpx" in poolwatch.instrumented()
    assert sync.ConnectionPool.handle_request is not plain[3]["handle_request"]
    poolwatch.uninstrument("httpx")
    assert [dict(vars(cls)) for cls in classes] == plain
    if was_installed:
        poolwatch.instrument("httpx")


def test_version_outside_tested_range_warns() -> None:
    """An httpcore version outside the tested range warns clearly instead of failing."""

    class Future(HttpxAdapter):
        tested = ((9, 0), (10, 0))

    with pytest.warns(poolwatch.PoolwatchWarning, match=r"tested with httpcore 9\.0"):
        version = Future.check_version()
    assert version == httpcore.__version__
    assert HttpxAdapter.check_version() == httpcore.__version__  # in range: no warning


@pytest.mark.parametrize("leaks", [0, 13])
@LEAK
def test_exact_counts_under_8_threads(tracker: Tracker, server: str, leaks: int) -> None:
    """8 threads x 250 requests through one Client: leased equals the leaks made, exactly."""
    client = httpx.Client(limits=httpx.Limits(max_connections=64))
    leak_at = set(range(0, 2000, 2000 // leaks)[:leaks]) if leaks else set()

    def step(n: int) -> httpx.Response | None:
        if n in leak_at:
            return hold(client, server + "/ok")
        client.get(server + "/ok")
        return None

    kept = in_threads(8, 250, step)
    pool = pool_of(tracker, "httpx")
    assert pool.leased == len(kept) == leaks
    assert (pool.checkouts, pool.checkins) == (2000, 2000 - leaks)
    for response in kept:
        response.close()
    assert pool_of(tracker, "httpx").leased == 0
    client.close()


def test_fault_in_the_tracker_never_reaches_the_request(
    server: str, faulty_tracker: Tracker
) -> None:
    """A tracker whose clock raises: httpx requests still succeed and the faults are counted."""
    with httpx.Client() as client:
        for _ in range(5):
            assert client.get(server + "/403").status_code == 403
            with client.stream("GET", server + "/403") as response:
                assert response.status_code == 403
    assert faulty_tracker.internal_errors["httpx.checkout"] >= 10


@LEAK
def test_no_secret_reaches_any_report(tracker: Tracker, server: str) -> None:
    """URL credentials, query strings, Authorization and Cookie never appear in a report."""
    secret_url = server.replace("http://", "http://alice:hunter2pass@") + "/403?token=s3cr3tq"
    headers = {"Authorization": "Bearer tok-AUTHSECRET", "Cookie": "sid=COOKIESECRET"}
    limits = httpx.Limits(max_connections=1)
    with httpx.Client(limits=limits, timeout=httpx.Timeout(5, pool=0.01)) as client:
        held = client.send(client.build_request("GET", secret_url, headers=headers), stream=True)
        with pytest.raises(httpx.PoolTimeout) as info:
            client.get(secret_url, headers=headers)
        texts = [
            repr(tracker.snapshot().pools),
            *(lease.describe() for lease in tracker.snapshot(sockets=True).leases),
            *(event.message for event in tracker.snapshot().events),
            str(info.value),
        ]
        held.close()
        with pytest.raises(poolwatch.LeakError) as leak_info, poolwatch.no_leaks(tracker=tracker):
            fetch_status(client, secret_url)
        texts.append(str(leak_info.value))
    blob = "\n".join(texts)
    for secret in ("hunter2pass", "alice", "s3cr3tq", "token=", "AUTHSECRET", "COOKIESECRET"):
        assert secret not in blob


def test_generated_sync_hooks_match_their_async_source() -> None:
    """_httpx_sync.py is exactly what scripts/unasync.py makes of _httpx_async.py."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ipv6_pool_name_brackets_the_address(tracker: Tracker) -> None:
    """A pool first used for an IPv6 literal is named `http://[::1]:port`, as URLs write it."""
    with Downstream(host="::1") as downstream, httpx.Client() as client:
        assert client.get(downstream.url_for("/ok")).status_code == 200
        assert pool_of(tracker, "httpx").name == f"http://[::1]:{downstream.port}"
