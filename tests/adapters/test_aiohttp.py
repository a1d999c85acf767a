"""aiohttp against a real local server: what poolwatch reports for each way a connection leaks."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import traceback
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import client, client_reqrep, connector, helpers
from yarl import URL

import poolwatch
from poolwatch import Tracker
from poolwatch._callsite import TASK_CALLSITE
from poolwatch.adapters import load
from poolwatch.testing import Downstream

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")
#: A response dropped unreleased is finalized by the cyclic GC after its session closed, and
#: aiohttp's Connection.__del__ may run before the response's and warn: expected there.
DROPS = pytest.mark.filterwarnings("ignore:Unclosed connection:ResourceWarning")
MIB = 1024 * 1024
#: What a connect timeout raises: ConnectionTimeoutError, or its base class in aiohttp 3.9.
CONNECT_TIMEOUT: type[Exception] = getattr(
    aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError
)


@pytest.fixture
def ds() -> Iterator[Downstream]:
    """A scripted server: /403 small HTML page, /large 1 MiB body, /slow headers after 5 s."""
    with Downstream() as server:
        server.route("/403", status=403, body="html")
        server.route("/large", status=200, body="large", size=MIB)
        server.route("/slow", status=200, body="json", delay_headers=5.0)
        server.route("/slow-body", status=200, body="large", delay_mid_body=5.0)
        yield server


def only_pool(tracker: Tracker) -> poolwatch.PoolSnapshot:
    (pool,) = [p for p in tracker.snapshot().pools if p.kind == "aiohttp"]
    return pool


async def fetch_status(session: aiohttp.ClientSession, url: str) -> int:
    response = await session.get(url)  # the incident: read the status, never read or release
    return response.status


async def in_flight(ds: Downstream, count: int) -> None:
    """Wait (in a thread, so the loop keeps running) until the server got ``count`` requests."""
    await asyncio.to_thread(ds.wait_for_requests, count, 10.0)


@pytest.mark.asyncio
async def test_small_unread_403_is_released_at_eof_and_never_a_lease(
    tracker: Tracker, ds: Downstream
) -> None:
    """A small 403 page read by nobody goes back to the pool by itself: no lease, no leak."""
    async with aiohttp.ClientSession() as session, poolwatch.no_leaks(tracker=tracker):
        response = await session.get(ds.url_for("/403"))
        assert response.status == 403
        pool = only_pool(tracker)
        assert (pool.leased, pool.idle, pool.checkouts, pool.checkins) == (0, 1, 1, 1)
        assert response.connection is None  # aiohttp released it at payload EOF
        assert pool.leases == ()


@LEAK
@pytest.mark.asyncio
async def test_unreleased_1mib_body_is_a_lease_naming_line_task_response_and_socket(
    tracker: Tracker, ds: Downstream
) -> None:
    """A 1 MiB body never read holds its connection: the lease names where, who and what."""
    async with aiohttp.ClientSession() as session:

        async def worker() -> aiohttp.ClientResponse:
            return await session.get(ds.url_for("/large"))

        response = await asyncio.create_task(worker(), name="fetch-large")
        (lease,) = tracker.snapshot(sockets=True).leases
        assert lease.state == "leased"
        assert lease.pool_kind == "aiohttp"
        assert lease.callsite.filename == __file__
        assert lease.callsite.function.endswith("<locals>.worker")
        assert lease.task_name == "fetch-large"
        assert lease.response is not None
        assert lease.response.status == 200
        assert lease.response.content_type == "application/octet-stream"
        assert lease.response.content_length == MIB
        assert lease.response.chunked is False
        assert lease.socket is not None
        assert lease.socket.peer == ("127.0.0.1", ds.port)
        assert "task fetch-large on thread" in lease.describe()
        response.release()
        pool = only_pool(tracker)
        assert (pool.leased, pool.checkouts, pool.checkins, pool.confirmed_leaks) == (0, 1, 1, 0)


@LEAK
@DROPS
@pytest.mark.asyncio
async def test_dropped_unbuffered_response_stays_leased_at_the_line_that_took_it(
    tracker: Tracker, ds: Downstream
) -> None:
    """Dropping the unread response does not free it (payload callbacks keep it alive)."""
    async with aiohttp.ClientSession() as session:
        assert await fetch_status(session, ds.url_for("/large")) == 200
        gc.collect()
        (lease,) = tracker.snapshot().leases
        assert lease.state == "leased"
        assert lease.callsite.function == "fetch_status"
        assert only_pool(tracker).confirmed_leaks == 0
    # Closing the session is what finally ends it, as a confirmed leak.
    pool = only_pool(tracker)
    assert (pool.leased, pool.confirmed_leaks) == (0, 1)
    gc.collect()  # finalize the abandoned response under this test's warning filter


@LEAK
@pytest.mark.asyncio
async def test_session_closed_while_leased_is_a_confirmed_leak(
    tracker: Tracker, ds: Downstream
) -> None:
    """session.close() with a body never released: the lease ends as 'closed', counted."""
    mark = tracker.seq
    session = aiohttp.ClientSession()
    kept = await session.get(ds.url_for("/large"))
    await session.close()
    pool = only_pool(tracker)
    assert (pool.leased, pool.checkouts, pool.checkins, pool.confirmed_leaks) == (0, 1, 0, 1)
    (leak,) = tracker.leaks_since(mark)
    assert dict(pool.leaks_by_callsite) == {leak.callsite: 1}
    assert leak.state == "closed"
    assert leak.callsite.function == test_session_closed_while_leased_is_a_confirmed_leak.__name__
    assert leak.response is not None
    assert leak.response.content_length == MIB
    assert "pool closed while leased" in leak.describe()
    assert "session.close()" in (leak.note or "")
    (event,) = [e for e in tracker.snapshot().events if e.kind == "leak.confirmed"]
    assert event.lease is not None
    assert event.lease.state == "closed"
    kept.close()


@LEAK
@pytest.mark.asyncio
async def test_no_leaks_catches_a_leak_that_the_session_close_hides(
    tracker: Tracker, ds: Downstream
) -> None:
    """no_leaks() fails on a lease ended by session close, though nothing is leased after."""
    with pytest.raises(poolwatch.LeakError) as info:
        async with poolwatch.no_leaks(tracker=tracker), aiohttp.ClientSession() as session:
            kept = await session.get(ds.url_for("/large"))
    assert only_pool(tracker).leased == 0
    (leak,) = info.value.leaks
    assert leak.state == "closed"
    assert "1 connection leaked inside no_leaks()" in str(info.value)
    assert "test_aiohttp.py:" in str(info.value)
    kept.close()


@pytest.mark.parametrize("how", ["cancel", "total-timeout", "cancel-mid-body"])
@pytest.mark.asyncio
async def test_cancelled_request_is_returned_never_a_leak(
    tracker: Tracker, ds: Downstream, how: str
) -> None:
    """A request cancelled mid-flight: aiohttp closes its connection, poolwatch sees a checkin."""
    mark = tracker.seq
    async with aiohttp.ClientSession() as session:

        async def slow_request() -> int:
            if how == "total-timeout":
                # Long enough for the lease to be seen in flight on a loaded machine first.
                timeout = aiohttp.ClientTimeout(total=2)
                await session.get(ds.url_for("/slow"), timeout=timeout)
            elif how == "cancel":
                await session.get(ds.url_for("/slow"))
            else:
                async with session.get(ds.url_for("/slow-body")) as response:
                    await response.read()
            return 0

        task = asyncio.create_task(slow_request(), name="slow")
        await in_flight(ds, 1)
        (lease,) = tracker.snapshot().leases  # in flight: a lease like any other
        assert lease.task_name == "slow"
        if how == "total-timeout":
            with pytest.raises(asyncio.TimeoutError):
                await task
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        pool = only_pool(tracker)
        assert (pool.leased, pool.checkouts, pool.checkins) == (0, 1, 1)
        assert (pool.confirmed_leaks, pool.orphans, pool.exhaustions) == (0, 0, 0)
    assert tracker.leaks_since(mark) == []


@pytest.mark.parametrize("timeout", ["connect", "total"])
@LEAK
@pytest.mark.asyncio
async def test_pool_wait_timeout_is_counted_and_carries_a_diagnosis(
    tracker: Tracker, ds: Downstream, timeout: str
) -> None:
    """Timing out while waiting for a slot is an exhaustion; the error's traceback diagnoses it."""
    connector_ = aiohttp.TCPConnector(limit=2)
    async with aiohttp.ClientSession(connector=connector_) as session:
        kept = [await session.get(ds.url_for("/large")) for _ in range(2)]
        client_timeout = (
            aiohttp.ClientTimeout(connect=0.05)
            if timeout == "connect"
            else aiohttp.ClientTimeout(total=0.05)
        )
        expected = CONNECT_TIMEOUT if timeout == "connect" else asyncio.TimeoutError
        with pytest.raises(expected) as info:
            await session.get(ds.url_for("/403"), timeout=client_timeout)
        # The connect timeout's error carries the notes itself; the total timeout's bare
        # TimeoutError is raised from the CancelledError that ended the wait, which does.
        noted = info.value
        if timeout == "total":
            assert not isinstance(info.value, aiohttp.ClientError)  # the bare one
            noted = info.value.__cause__
            assert isinstance(noted, asyncio.CancelledError)
        pool = only_pool(tracker)
        assert (pool.exhaustions, pool.leased, pool.waiting) == (1, 2, 0)
        notes = "\n".join(getattr(noted, "__notes__", []))
        assert notes in "".join(traceback.format_exception(info.value))
        assert f"poolwatch: {pool!r} is exhausted." in notes
        assert "2 x tests/adapters/test_aiohttp.py:" in notes
        assert "200 application/octet-stream, 1048576-byte body" in notes
        (event,) = [e for e in tracker.snapshot().events if e.kind == "exhausted"]
        assert event.message == notes
        for response in kept:
            response.release()


@pytest.mark.parametrize("how", ["cancel", "slow-response"])
@LEAK
@pytest.mark.asyncio
async def test_timeouts_that_are_not_pool_waits_are_not_exhaustions(
    tracker: Tracker, ds: Downstream, how: str
) -> None:
    """A waiter cancelled by its caller, or a timeout with free slots, is no exhaustion."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        if how == "cancel":
            kept = await session.get(ds.url_for("/large"))
            waiter = asyncio.create_task(session.get(ds.url_for("/403")))
            while only_pool(tracker).waiting == 0:
                await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            kept.release()
        else:
            with pytest.raises(asyncio.TimeoutError):
                await session.get(ds.url_for("/slow"), timeout=aiohttp.ClientTimeout(total=0.05))
        pool = only_pool(tracker)
        assert (pool.exhaustions, pool.leased, pool.waiting) == (0, 0, 0)
        assert [e for e in tracker.snapshot().events if e.kind == "exhausted"] == []


@LEAK
@pytest.mark.asyncio
async def test_task_waiting_for_a_slot_is_visible_with_its_call_site(
    tracker: Tracker, ds: Downstream
) -> None:
    """With every slot leased, a task waiting for one shows up in the pool's waiters."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        held = await session.get(ds.url_for("/large"))

        async def blocked() -> int:
            async with session.get(ds.url_for("/403")) as response:
                return response.status

        task = asyncio.create_task(blocked(), name="blocked")
        while only_pool(tracker).waiting == 0:
            await asyncio.sleep(0.01)
        pool = only_pool(tracker)
        assert (pool.leased, pool.waiting, pool.max) == (1, 1, 1)
        (waiter,) = pool.waiters
        assert waiter.callsite.function.endswith("<locals>.blocked")
        assert not task.done()
        held.release()  # frees the slot and wakes the waiter
        assert await task == 403
        pool = only_pool(tracker)
        assert (pool.leased, pool.waiting, pool.waiters) == (0, 0, ())


@pytest.mark.asyncio
async def test_pool_is_the_connector_with_limits_and_idle_sockets(
    tracker: Tracker, ds: Downstream
) -> None:
    """One pool per connector across hosts: its name shows the limits, its idle sockets join."""
    conn = aiohttp.TCPConnector(limit=0, limit_per_host=3)
    async with aiohttp.ClientSession(connector=conn) as session:
        for _ in range(3):
            async with session.get(ds.url_for("/403")) as response:
                await response.read()
        async with session.get(ds.url.replace("127.0.0.1", "localhost") + "/403") as response:
            await response.read()
        pool = only_pool(tracker)
        assert pool.name == f"TCPConnector {id(conn):#x}; no limit, 3 per host"
        assert (pool.leased, pool.checkouts, pool.checkins, pool.max) == (0, 4, 4, None)
        assert repr(pool) == (
            f"<Pool aiohttp {pool.name} [leased 0 | idle {pool.idle} | waiting 0 | max unbounded]>"
        )
        assert pool.idle == len(
            [sock for label, sock in tracker.idle_sockets() if label.startswith("aiohttp ")]
        )
        peers = {sock.peer for label, sock in tracker.idle_sockets() if label.startswith("aiohttp")}
        assert ("127.0.0.1", ds.port) in peers


@pytest.mark.parametrize("leaks", [0, 23])
@LEAK
@pytest.mark.asyncio
async def test_exact_counts_with_200_concurrent_tasks(
    tracker: Tracker, ds: Downstream, leaks: int
) -> None:
    """200 tasks x 5 requests through one session: leased equals the leaks made, exactly."""
    leak_at = set(range(0, 1000, 1000 // leaks)[:leaks]) if leaks else set()
    kept: list[aiohttp.ClientResponse] = []

    async with aiohttp.ClientSession() as session:

        async def worker(index: int) -> None:
            for i in range(5):
                n = index * 5 + i
                if n in leak_at:
                    kept.append(await session.get(ds.url_for("/large")))
                else:
                    async with session.get(ds.url_for("/ok")) as response:
                        await response.read()

        await asyncio.wait_for(
            asyncio.gather(*(asyncio.create_task(worker(t), name=f"w{t}") for t in range(200))),
            120,
        )
        pool = only_pool(tracker)
        assert pool.leased == len(kept) == leaks
        assert pool.checkouts == 1000
        assert pool.checkins == 1000 - leaks
        assert pool.confirmed_leaks == 0
        leases = tracker.snapshot().leases
        assert {lease.task_name for lease in leases} == {f"w{n // 5}" for n in leak_at}
        assert {lease.callsite.function for lease in leases} <= {
            "test_exact_counts_with_200_concurrent_tasks.<locals>.worker"
        }
        for response in kept:
            response.release()
        assert only_pool(tracker).leased == 0


@LEAK
@DROPS
@pytest.mark.asyncio
async def test_connection_dropped_unreleased_is_returned_only_by_the_gc(
    tracker: Tracker, ds: Downstream
) -> None:
    """A Connection taken from connector.connect() and dropped: the GC returned it, a leak."""
    mark = tracker.seq
    async with aiohttp.ClientSession() as session:

        async def take_and_drop() -> None:
            request = client_reqrep.ClientRequest(
                "GET", URL(ds.url_for("/403")), loop=asyncio.get_running_loop()
            )
            assert session.connector is not None
            await session.connector.connect(request, traces=[], timeout=aiohttp.ClientTimeout())

        await take_and_drop()
        gc.collect()
        pool = only_pool(tracker)
        assert (pool.leased, pool.checkouts, pool.confirmed_leaks) == (0, 1, 1)
        (leak,) = tracker.leaks_since(mark)
        assert leak.state == "gc_returned"
        assert leak.callsite.function.endswith("<locals>.take_and_drop")
        assert "Connection.__del__" in (leak.note or "")


def test_plain_asyncio_run_in_a_sync_test_is_tracked(tracker: Tracker, ds: Downstream) -> None:
    """asyncio.run() inside a plain test: leases are tracked and released like any other."""

    async def main() -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            kept = await session.get(ds.url_for("/large"))
            leased = only_pool(tracker).leased
            kept.release()
            return leased, only_pool(tracker).leased

    assert asyncio.run(main()) == (1, 0)


def test_uninstrument_restores_aiohttp_exactly() -> None:
    """After uninstrument() the hooked classes hold exactly the attributes they had before."""
    classes = (
        connector.BaseConnector,
        connector.Connection,
        client.ClientSession,
        client_reqrep.ClientResponse,
        CONNECT_TIMEOUT,
        helpers.TimerContext,
    )
    was_installed = "aiohttp" in poolwatch.instrumented()
    poolwatch.uninstrument("aiohttp")
    try:
        plain = [dict(vars(cls)) for cls in classes]
        poolwatch.instrument("aiohttp")
        assert connector.Connection.__init__ is not plain[1]["__init__"]
        assert client_reqrep.ClientResponse.__del__ is not plain[3]["__del__"]
        assert helpers.TimerContext.timeout is not plain[5]["timeout"]
        poolwatch.uninstrument("aiohttp")
        assert [dict(vars(cls)) for cls in classes] == plain
    finally:
        if was_installed:
            poolwatch.instrument("aiohttp")


def test_missing_aiohttp_is_skipped_quietly_and_an_error_when_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without aiohttp, instrument() skips it; instrument('aiohttp') says how to install it."""
    was_installed = "aiohttp" in poolwatch.instrumented()
    poolwatch.uninstrument("aiohttp")
    try:
        with monkeypatch.context() as patched:
            patched.setitem(sys.modules, "aiohttp", None)  # what an absent package looks like
            assert not load("aiohttp").available()
            assert "aiohttp" not in poolwatch.instrument()
            with pytest.raises(poolwatch.AdapterNotAvailable, match=r"poolwatch\[aiohttp\]"):
                poolwatch.instrument("aiohttp")
    finally:
        if was_installed:
            poolwatch.instrument("aiohttp")


def test_version_outside_the_tested_range_warns_and_still_installs() -> None:
    """An aiohttp release outside the tested range gives a clear warning, not a failure."""

    class Future(load("aiohttp")):  # type: ignore[misc]
        tested = ((99, 0), (100, 0))

    adapter = Future()
    with pytest.warns(poolwatch.PoolwatchWarning, match=r"tested with aiohttp 99\.0 to before"):
        version = adapter.check_version()
    assert version == aiohttp.__version__


@LEAK
@pytest.mark.asyncio
async def test_fault_in_the_tracker_never_reaches_the_request(
    ds: Downstream, faulty_tracker: Tracker
) -> None:
    """A tracker whose clock raises: requests still succeed and the faults are counted."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(5):
            async with session.get(ds.url_for("/large")) as response:
                assert len(await response.read()) == MIB
    assert faulty_tracker.internal_errors["aiohttp.checkout"] >= 5


@LEAK
@pytest.mark.asyncio
async def test_no_secret_reaches_any_report(tracker: Tracker, ds: Downstream) -> None:
    """URL credentials, query strings, Authorization and Cookie never appear in a report."""
    secret_url = ds.url.replace("http://", "http://alice:hunter2pass@") + "/large?token=s3cr3tq"
    query_url = ds.url_for("/large?token=s3cr3tq")
    cookie = {"Cookie": "sid=COOKIESECRET"}
    # aiohttp refuses an Authorization header together with credentials in the URL.
    headers = {"Authorization": "Bearer tok-AUTHSECRET", **cookie}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        held = await session.get(secret_url, headers=cookie)
        with pytest.raises(CONNECT_TIMEOUT) as info:
            await session.get(secret_url, timeout=aiohttp.ClientTimeout(connect=0.01))
        texts = [
            repr(tracker.snapshot().pools),
            *(lease.describe() for lease in tracker.snapshot(sockets=True).leases),
            *(event.message for event in tracker.snapshot().events),
            "\n".join(info.value.__notes__),
        ]
        held.release()
        with pytest.raises(poolwatch.LeakError) as leak_info:
            async with poolwatch.no_leaks(tracker=tracker):
                kept = await session.get(query_url, headers=headers)
        texts.append(str(leak_info.value))
        kept.release()
    blob = "\n".join(texts)
    assert "1048576-byte body" in blob  # the reports are there ...
    for secret in ("hunter2pass", "alice", "s3cr3tq", "token=", "AUTHSECRET", "COOKIESECRET"):
        assert secret not in blob  # ... and hold no secret


class _DeadlockDetectingLock:
    """The tracker's lock, but acquiring it while held fails instead of hanging the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(timeout=2.0):
            raise RuntimeError("deadlock: the tracker's lock was taken again while held")
        return True

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@LEAK
@DROPS
@pytest.mark.asyncio
async def test_finalizer_under_the_tracker_lock_ends_the_lease_without_deadlock(
    ds: Downstream,
) -> None:
    """A GC finalizer that releases a connection while this thread holds the tracker's lock
    (the collector ran inside a snapshot) ends the lease without taking the lock again."""
    previous = poolwatch.get_tracker()
    fresh = Tracker()
    lock = _DeadlockDetectingLock()
    fresh._lock = lock  # type: ignore[assignment]
    poolwatch.instrument(tracker=fresh)
    try:
        async with aiohttp.ClientSession() as session:
            assert session.connector is not None
            request = client_reqrep.ClientRequest(
                "GET", URL(ds.url_for("/403")), loop=asyncio.get_running_loop()
            )
            dropped = await session.connector.connect(
                request, traces=[], timeout=aiohttp.ClientTimeout()
            )
            with lock:
                del dropped  # Connection.__del__ runs here, inside the held lock
            pool = only_pool(fresh)
            assert (pool.leased, pool.confirmed_leaks, pool.checkouts) == (0, 1, 1)
            (event,) = [e for e in fresh.snapshot().events if e.kind == "leak.confirmed"]
            assert event.lease is not None
            assert event.lease.state == "gc_returned"
            async with session.get(ds.url_for("/403")) as response:  # the pool still works
                assert response.status == 403
        assert dict(fresh.internal_errors) == {}
    finally:
        poolwatch.instrument(tracker=previous)


@pytest.mark.parametrize("leaky", [True, False])
@LEAK
@DROPS
def test_no_leaks_decorates_a_coroutine_run_by_asyncio_run(
    tracker: Tracker, ds: Downstream, leaky: bool
) -> None:
    """@no_leaks() on a coroutine function raises LeakError only when it leaked."""

    @poolwatch.no_leaks(tracker=tracker)
    async def handler() -> int:
        async with aiohttp.ClientSession() as session:
            if leaky:
                return await fetch_status(session, ds.url_for("/large"))
            async with session.get(ds.url_for("/large")) as response:
                return response.status

    if not leaky:
        assert asyncio.run(handler()) == 200
        return
    with pytest.raises(poolwatch.LeakError) as info:
        asyncio.run(handler())
    (leak,) = info.value.leaks
    assert (leak.state, leak.callsite.function) == ("closed", "fetch_status")
    del info
    gc.collect()  # finalize the abandoned response under this test's warning filter


@LEAK
def test_request_run_as_its_own_task_is_not_blamed_on_the_asyncio_run_line(
    tracker: Tracker, ds: Downstream
) -> None:
    """gather(session.get(...)) leaves no user frame: the lease says so, naming no wrong line."""

    async def main() -> poolwatch.Lease:
        async with aiohttp.ClientSession() as session:
            (kept,) = await asyncio.gather(session.get(ds.url_for("/large")))
            (lease,) = tracker.snapshot().leases
            kept.release()
            return lease

    lease = asyncio.run(main())
    assert lease.callsite == TASK_CALLSITE
    assert "request run as its own task" in lease.describe()
