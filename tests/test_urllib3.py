"""urllib3 and requests against a real local server: what poolwatch reports for each leak."""

from __future__ import annotations

import gc
import threading

import pytest
import requests
import urllib3
from urllib3.connectionpool import HTTPConnectionPool

import poolwatch
from poolwatch import Tracker

from ._helpers import in_threads, wait_for_waiter
from ._httpserver import HTML_403

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")


def leases_of(tracker: Tracker) -> list[poolwatch.Lease]:
    return list(tracker.snapshot().leases)


def fetch_status(session: requests.Session, url: str) -> int:
    response = session.get(url, stream=True)  # the incident: read the status, never close
    return response.status_code


@LEAK
def test_kept_leaky_response_is_a_lease_with_call_site_and_response(
    tracker: Tracker, server: str
) -> None:
    """A streamed response kept but never read holds a lease naming its line and response."""
    with requests.Session() as session:
        kept = session.get(server + "/403", stream=True)
        (lease,) = leases_of(tracker)
        assert lease.state == "leased"
        assert lease.callsite.filename == __file__
        assert lease.callsite.function == (
            "test_kept_leaky_response_is_a_lease_with_call_site_and_response"
        )
        assert lease.response is not None
        assert lease.response.status == 403
        assert lease.response.content_type == "text/html; charset=utf-8"
        assert lease.response.content_length == len(HTML_403)
        assert lease.thread_name == threading.current_thread().name
        kept.close()
    assert leases_of(tracker) == []


@LEAK
def test_dropped_response_is_a_confirmed_leak_whose_slot_stays_lost(
    tracker: Tracker, server: str
) -> None:
    """A response dropped unread is reported as lost at the line that took it, socket closed."""
    with requests.Session() as session:
        assert fetch_status(session, server + "/403") == 403
        gc.collect()
        (pool,) = tracker.snapshot().pools
        (lease,) = pool.leases
        assert lease.state == "lost"
        assert str(lease.callsite).endswith(f"in {fetch_status.__name__}")
        assert pool.confirmed_leaks == 1
        assert pool.leased == 1
        assert dict(pool.leaks_by_callsite) == {lease.callsite: 1}
        # The slot is gone but the socket was closed with the response: nothing to join.
        (with_socket,) = tracker.snapshot(sockets=True).leases
        assert with_socket.socket is None
        events = [e for e in tracker.snapshot().events if e.kind == "leak.confirmed"]
        assert len(events) == 1
        assert events[0].lease is not None
        assert events[0].lease.response is not None
        assert events[0].lease.response.status == 403


@LEAK
def test_close_without_release_conn_loses_the_slot(tracker: Tracker, server: str) -> None:
    """urllib3's HTTPResponse.close() alone never returns the connection to the pool."""
    with urllib3.PoolManager(maxsize=1, block=True) as http:
        response = http.request("GET", server + "/403", preload_content=False)
        response.close()
        (lease,) = leases_of(tracker)
        assert lease.state == "leased"
        assert lease.response is not None
        assert lease.response.status == 403
        with pytest.raises(urllib3.exceptions.EmptyPoolError):
            http.request("GET", server + "/403", pool_timeout=0.05)


def test_idle_pooled_connections_are_never_leases(tracker: Tracker, server: str) -> None:
    """Connections back in the pool count as idle, not leased."""
    with requests.Session() as session:
        for _ in range(3):
            session.get(server + "/ok").close()
        (pool,) = tracker.snapshot().pools
        assert (pool.leased, pool.idle, pool.checkouts, pool.checkins) == (0, 1, 3, 3)
        assert pool.leases == ()
        assert repr(pool) == f"<Pool urllib3 {server} [leased 0 | idle 1 | waiting 0 | max 10]>"


@LEAK
def test_non_blocking_pool_leased_beyond_maxsize(tracker: Tracker, server: str) -> None:
    """With block=False every leak opens a new connection: leased goes past max silently."""
    with urllib3.PoolManager(maxsize=2, block=False) as http:
        kept = [http.request("GET", server + "/403", preload_content=False) for _ in range(5)]
        (pool,) = tracker.snapshot().pools
        assert (pool.leased, pool.max) == (5, 2)
        assert pool.utilisation == 2.5
        for response in kept:
            response.release_conn()
        assert tracker.snapshot().pools[0].leased == 0


@LEAK
def test_empty_pool_error_is_counted_and_carries_a_diagnosis(tracker: Tracker, server: str) -> None:
    """EmptyPoolError is an exhaustion event and its notes name the pool and the call sites."""
    with urllib3.PoolManager(maxsize=2, block=True) as http:
        kept = [http.request("GET", server + "/403", preload_content=False) for _ in range(2)]
        with pytest.raises(urllib3.exceptions.EmptyPoolError) as info:
            http.request("GET", server + "/ok", pool_timeout=0.05)
        (pool,) = tracker.snapshot().pools
        assert pool.exhaustions == 1
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert f"<Pool urllib3 {server} [leased 2 | idle 0 |" in notes
        assert f"2 x {__file__.rsplit('/', 1)[-1]}" in notes or "2 x tests/test_urllib3.py" in notes
        assert "403 text/html" in notes
        (event,) = [e for e in tracker.snapshot().events if e.kind == "exhausted"]
        assert event.message == notes
        for response in kept:
            response.release_conn()


@LEAK
def test_caller_blocked_without_timeout_is_visible_as_waiting(
    tracker: Tracker, server: str
) -> None:
    """requests with pool_block=True waits forever: the snapshot shows who waits and how long."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=1, pool_block=True))
    held = session.get(server + "/403", stream=True)
    done = threading.Event()

    def blocked_caller() -> None:
        session.get(server + "/ok").close()
        done.set()

    worker = threading.Thread(target=blocked_caller, name="blocked-worker")
    worker.start()
    pool = wait_for_waiter(tracker)
    assert pool.waiting == 1
    (waiter,) = pool.waiters
    assert waiter.thread_name == "blocked-worker"
    assert waiter.waited >= 0
    assert waiter.callsite.function.endswith("<locals>.blocked_caller")
    assert not done.is_set()
    held.close()  # requests' close() returns the slot and wakes the waiter
    worker.join(5)
    assert done.is_set()
    assert tracker.snapshot().pools[0].waiting == 0
    session.close()


@pytest.mark.parametrize("block", [True, False])
def test_connection_discarded_on_error_is_paired_with_its_lease(
    tracker: Tracker, server: str, block: bool
) -> None:
    """urllib3's _put_conn(None) after a broken response ends the lease it belongs to.

    The pool is seen first at the ok request, then breaks: a checkout of a pool seen before
    (C where this build has it, unless the pool blocks) followed by the discard."""
    with urllib3.PoolManager(maxsize=1, block=block, retries=False) as http:
        assert http.request("GET", server + "/ok").status == 200
        with pytest.raises(urllib3.exceptions.ProtocolError):
            http.request("GET", server + "/hangup")
        (pool,) = tracker.snapshot().pools
        assert pool.leased == 0
        assert pool.checkouts == pool.checkins == 2
        # The slot came back: the next request gets a connection at once.
        assert http.request("GET", server + "/ok", pool_timeout=1).status == 200


@LEAK
@pytest.mark.parametrize("block", [True, False])
def test_a_request_given_no_connection_never_ends_an_older_lease(
    tracker: Tracker, server: str, block: bool
) -> None:
    """A pool closed while this thread holds a streamed response (a PoolManager evicting it):
    the next request's ClosedPoolError makes urllib3 put back None. That None is not the held
    response's connection, whose lease stays open; it once ended as "discarded", hiding a leak.
    """
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", int(server.rsplit(":", 1)[1]), maxsize=2, block=block
    )
    held = pool.request("GET", "/403", preload_content=False)  # registers the pool
    pool.close()
    with pytest.raises(urllib3.exceptions.ClosedPoolError):
        pool.request("GET", "/ok")  # a pool seen before: C where built, unless it blocks
    (snap,) = tracker.snapshot().pools
    assert (snap.leased, snap.checkouts, snap.checkins) == (1, 1, 0)
    (lease,) = snap.leases
    assert lease.state == "leased"
    assert lease.response is not None
    assert lease.response.status == 403
    held.release_conn()


def test_uninstrument_restores_urllib3_exactly() -> None:
    """After uninstrument() the pool class holds exactly the attributes it had before."""
    was_installed = "urllib3" in poolwatch.instrumented()
    poolwatch.uninstrument("urllib3")
    plain = dict(vars(HTTPConnectionPool))
    poolwatch.instrument("urllib3")
    assert HTTPConnectionPool._get_conn is not plain["_get_conn"]
    poolwatch.uninstrument("urllib3")
    assert dict(vars(HTTPConnectionPool)) == plain
    if was_installed:
        poolwatch.instrument("urllib3")


@pytest.mark.parametrize("leaks", [0, 37])
@LEAK
def test_exact_counts_under_16_threads(tracker: Tracker, server: str, leaks: int) -> None:
    """16 threads x 1,000 requests through one Session: leased equals the leaks made, exactly."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=64)
    session.mount("http://", adapter)
    leak_at = set(range(0, 16_000, 16_000 // leaks)) if leaks else set()
    leak_at = set(sorted(leak_at)[:leaks])

    def step(n: int) -> requests.Response | None:
        response = session.get(server + "/ok", stream=n in leak_at)
        if n in leak_at:
            return response
        response.close()
        return None

    kept = in_threads(16, 1000, step)
    (pool,) = tracker.snapshot().pools
    assert pool.leased == len(kept) == leaks
    assert pool.checkouts == 16_000
    assert pool.checkins == 16_000 - leaks
    for response in kept:
        response.close()
    assert tracker.snapshot().pools[0].leased == 0
    session.close()


@LEAK
def test_fault_in_the_tracker_never_reaches_the_request(
    server: str, faulty_tracker: Tracker
) -> None:
    """A tracker whose clock raises: requests still succeed and the faults are counted."""
    with requests.Session() as session:
        for _ in range(5):
            response = session.get(server + "/403")
            assert response.status_code == 403
            response.close()
    assert faulty_tracker.internal_errors["urllib3.checkout"] >= 5


@LEAK
def test_no_secret_reaches_any_report(tracker: Tracker, server: str) -> None:
    """URL credentials, query strings, Authorization and Cookie never appear in a report."""
    secret_url = server.replace("http://", "http://alice:hunter2pass@") + "/403?token=s3cr3tq"
    with urllib3.PoolManager(maxsize=1, block=True) as http:
        held = http.request(
            "GET",
            secret_url,
            preload_content=False,
            headers={"Authorization": "Bearer tok-AUTHSECRET", "Cookie": "sid=COOKIESECRET"},
        )
        with pytest.raises(urllib3.exceptions.EmptyPoolError) as info:
            http.request("GET", secret_url, pool_timeout=0.01)
        texts = [
            repr(tracker.snapshot().pools),
            *(lease.describe() for lease in tracker.snapshot(sockets=True).leases),
            *(event.message for event in tracker.snapshot().events),
            "\n".join(info.value.__notes__),
        ]
        with (
            pytest.raises(poolwatch.LeakError) as leak_info,
            poolwatch.no_leaks(tracker=tracker),
            requests.Session() as session,
        ):
            fetch_status(session, secret_url)
        texts.append(str(leak_info.value))
        blob = "\n".join(texts)
        for secret in ("hunter2pass", "alice", "s3cr3tq", "token=", "AUTHSECRET", "COOKIESECRET"):
            assert secret not in blob
        held.release_conn()


@LEAK
def test_closed_pool_keeps_its_capacity(tracker: Tracker, server: str) -> None:
    """A pool closed with a connection still out reports its max, not "unbounded"."""
    pool = urllib3.HTTPConnectionPool("127.0.0.1", int(server.rsplit(":", 1)[1]), maxsize=3)
    held = pool.request("GET", "/403", preload_content=False)
    pool.close()
    (snap,) = tracker.snapshot().pools
    assert (snap.leased, snap.idle, snap.max) == (1, 0, 3)
    assert repr(snap).endswith("[leased 1 | idle 0 | waiting 0 | max 3]>")
    held.release_conn()


def take_directly(pool: HTTPConnectionPool) -> object:
    """Code that calls the private _get_conn itself, not through urlopen."""
    return pool._get_conn()


def test_direct_get_conn_caller_is_the_call_site(tracker: Tracker, server: str) -> None:
    """The jump over urlopen is checked: a direct _get_conn caller is named, not its caller."""
    pool = urllib3.HTTPConnectionPool("127.0.0.1", int(server.rsplit(":", 1)[1]), maxsize=1)
    for _ in range(2):  # a pool seen first, then seen before (the C hook where built)
        conn = take_directly(pool)
        (lease,) = tracker.snapshot().leases
        assert lease.callsite.function == "take_directly"
        pool._put_conn(conn)
    via_urlopen = pool.request("GET", "/403", preload_content=False)
    (lease,) = tracker.snapshot().leases
    assert lease.callsite.function == "test_direct_get_conn_caller_is_the_call_site"
    via_urlopen.release_conn()
    pool.close()
