"""The tracker and call-site capture, through real requests where the behaviour is the user's."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections import Counter, deque

import pytest
import requests

import poolwatch
from poolwatch import Tracker
from poolwatch._callsite import CallSiteFinder
from poolwatch._models import ResponseFacts
from poolwatch._tracker import PoolRecord

from . import _wrapper

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")


class _Owner:
    """Something a lease can be owned by (weak-referenceable)."""


def test_call_site_skips_standard_library_frames() -> None:
    """capture() called by stdlib code (weakref.finalize.__call__) lands on this test."""
    finder = CallSiteFinder()
    owner = _Owner()
    via_stdlib = weakref.finalize(owner, finder.capture)  # its __call__ is weakref.py code
    site, stack = via_stdlib()
    assert site.filename == __file__
    assert site.function == "test_call_site_skips_standard_library_frames"
    assert stack == ()
    direct_site, _ = finder.capture()
    assert direct_site.filename == __file__


@LEAK
def test_call_site_moves_past_a_declared_wrapper(tracker: Tracker, server: str) -> None:
    """A company wrapper is the call site until declared a library; then its caller is."""
    with requests.Session() as session:
        first = _wrapper.get_streamed(session, server + "/ok")
        tracker.callsites.add_library_modules(["tests._wrapper"])
        second = _wrapper.get_streamed(session, server + "/ok")
        sites = [lease.callsite for lease in tracker.snapshot().leases]
        assert sites[0].filename == _wrapper.__file__
        assert sites[0].function == "get_streamed"
        assert sites[1].filename == __file__
        assert sites[1].function == "test_call_site_moves_past_a_declared_wrapper"
        first.close()
        second.close()


def test_a_wrapper_declared_while_a_capture_decides_its_kind_is_skipped_after() -> None:
    """add_library_modules runs while another thread's checkout is working out the wrapper
    file's kind with the old prefixes: that stale kind is not kept, and the next lease taken
    through the wrapper names the wrapper's caller."""
    tracker = Tracker()
    finder = tracker.callsites
    deciding, go_on = threading.Event(), threading.Event()
    real = finder.is_library

    def is_library(filename: str) -> bool:
        answer = real(filename)  # with the prefixes of this moment
        if filename == _wrapper.__file__ and threading.current_thread().name == "A":
            deciding.set()
            go_on.wait(10)
        return answer

    finder.is_library = is_library  # type: ignore[method-assign]
    pool_obj = _Owner()
    pool = tracker.pool(pool_obj, "test", "p")
    thread_a = threading.Thread(target=_wrapper.check_out, args=(tracker, pool, 1, None), name="A")
    thread_a.start()
    assert deciding.wait(10)
    finder.add_library_modules(["tests._wrapper"])
    go_on.set()
    thread_a.join(10)
    lease = _wrapper.check_out(tracker, pool, 2, None)
    assert lease.callsite.filename == __file__


@LEAK
def test_call_sites_are_interned_per_line(tracker: Tracker, server: str) -> None:
    """Leases from one line share one CallSite object, whatever the number of leases."""
    with requests.Session() as session:
        kept = [session.get(server + "/ok", stream=True) for _ in range(3)]
        sites = [lease.callsite for lease in tracker.snapshot().leases]
        assert len(sites) == 3
        assert sites[0] is sites[1] is sites[2]
        for response in kept:
            response.close()


@LEAK
def test_short_stack_on_demand(server: str) -> None:
    """stack_depth=N records the user frames that led to the call site, outward."""
    previous = poolwatch.get_tracker()
    deep = Tracker(stack_depth=2)
    poolwatch.instrument(tracker=deep)
    try:

        def inner(session: requests.Session) -> requests.Response:
            return session.get(server + "/ok", stream=True)

        def outer(session: requests.Session) -> requests.Response:
            return inner(session)

        with requests.Session() as session:
            response = outer(session)
            (lease,) = deep.snapshot().leases
            assert lease.callsite.function.endswith("inner")
            assert [frame.function.rsplit(".", 1)[-1] for frame in lease.stack] == [
                "outer",
                "test_short_stack_on_demand",
            ]
            assert "called from" in lease.describe()
            response.close()
    finally:
        poolwatch.instrument(tracker=previous)


def test_lost_leases_are_capped_per_pool_but_still_counted() -> None:
    """Past max_lost_per_pool, old lost leases are dropped from detail but stay in `leased`."""
    tracker = Tracker(max_lost_per_pool=2)
    pool_obj = _Owner()
    pool = tracker.pool(pool_obj, "test", "capped")
    owners = [_Owner() for _ in range(5)]
    for owner in owners:
        lease = tracker.checkout(pool, id(owner), owner)
        tracker.set_owner(lease, owner)
    del owner, lease
    owners.clear()
    gc.collect()
    (snap,) = tracker.snapshot().pools
    assert snap.leased == 5
    assert snap.confirmed_leaks == 5
    assert len(snap.leases) == 2
    assert all(lease.state == "lost" for lease in snap.leases)


def test_a_failing_subscriber_is_counted_not_raised() -> None:
    """An event consumer that raises does not break the tracker; the fault is counted."""
    tracker = Tracker()
    seen = []
    tracker.subscribe(lambda event: 1 / 0)
    tracker.subscribe(seen.append)
    pool = tracker.pool(_Owner(), "test", "p")
    assert "is exhausted" in tracker.exhausted(pool)
    assert [event.kind for event in seen] == ["exhausted"]
    assert tracker.internal_errors["subscriber"] == 1


def test_two_threads_faulting_at_one_place_at_once_count_two() -> None:
    """internal_error's count is a read and a write: two threads counting the first fault of
    one place at once both count (the Counter's default runs Python between the two)."""
    tracker = Tracker()
    entered: list[str] = []
    second_in = threading.Event()

    class Watched(Counter[str]):
        def __missing__(self, key: str) -> int:
            entered.append(threading.current_thread().name)
            if len(entered) == 2:
                second_in.set()
            second_in.wait(1)  # without the lock, the other thread reads 0 meanwhile
            return 0

    tracker.internal_errors = Watched()
    threads = [
        threading.Thread(target=tracker.internal_error, args=("x.checkout", None)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert tracker.internal_errors["x.checkout"] == 2


def test_a_checkin_while_the_next_checkout_is_recording_is_no_orphan() -> None:
    """Thread A checks a connection out while thread B's checkin of its previous lease runs:
    the previous lease ends as returned, not as an orphan, and A's lease is the one leased."""
    in_checkout, go_on = threading.Event(), threading.Event()

    def clock() -> float:  # the checkout reads the clock while it builds its record
        if threading.current_thread().name == "A":
            in_checkout.set()
            go_on.wait(10)
        return time.monotonic()

    tracker = Tracker(clock=clock)
    pool_obj = _Owner()
    pool = tracker.pool(pool_obj, "test", "p")
    before = tracker.checkout(pool, 7)
    thread_a = threading.Thread(target=tracker.checkout, args=(pool, 7), name="A")
    thread_a.start()
    assert in_checkout.wait(10)
    tracker.checkin(pool, 7)  # B returns the connection the library is handing to A
    go_on.set()
    thread_a.join(10)
    (snap,) = tracker.snapshot().pools
    assert (snap.checkouts, snap.checkins, snap.orphans, snap.leased) == (2, 1, 0, 1)
    assert before.state == "returned"


def test_lease_records_wall_clock_and_task() -> None:
    """A lease taken inside a task records the task name and a wall-clock time."""
    tracker = Tracker()
    pool_obj = _Owner()
    pool = tracker.pool(pool_obj, "test", "p")
    conn = _Owner()

    async def take() -> None:
        tracker.checkout(pool, id(conn), conn)

    async def main() -> None:
        await asyncio.create_task(take(), name="taker-7")

    before = time.time()
    asyncio.run(main())
    (lease,) = tracker.snapshot().leases
    assert lease.task_name == "taker-7"
    assert lease.where == "task taker-7 on thread MainThread"
    assert before - 1 <= lease.acquired_wall <= time.time() + 1
    tracker.checkin(pool, id(conn))


def test_a_pool_first_seen_by_two_threads_at_once_gets_one_record() -> None:
    """Two threads registering the same new pool together share one record: neither's leases
    go into a record that the other replaced (CI once counted 15,999 of 16,000 checkouts)."""
    tracker = Tracker()
    pool_obj = _Owner()
    both_in = threading.Barrier(2, timeout=10)

    def name() -> str:
        both_in.wait()  # each thread has looked the pool up and found nothing
        return "shared"

    records: list[PoolRecord] = []
    threads = [
        threading.Thread(target=lambda: records.append(tracker.pool(pool_obj, "test", name)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(records) == 2
    assert records[0] is records[1] is tracker.find_pool(pool_obj)
    conn = _Owner()
    tracker.checkout(records[0], id(conn), conn)
    (snap,) = tracker.snapshot().pools
    assert (snap.checkouts, snap.leased) == (1, 1)


def test_a_pool_id_reused_before_the_report_keeps_the_old_pools_leases() -> None:
    """A new pool object at a collected one's address does not make that one's leases vanish."""
    tracker = Tracker()
    for _ in range(1000):  # CPython reuses a freed object's memory for the next of its size
        first = _Owner()
        address = id(first)
        lease = tracker.checkout(tracker.pool(first, "test", "first"), 1, _Owner())
        del first  # collected: its report waits in the tracker's queue
        second = _Owner()
        if id(second) == address:
            break
        tracker.checkin(lease.pool, 1)
    else:  # pragma: no cover - the allocator never reused the address
        pytest.skip("no address reuse on this interpreter")
    tracker.pool(second, "test", "second")  # registered before the queue is applied
    (closed,) = tracker.leaks_since(0)
    assert (closed.pool, closed.state) == ("test first", "closed")


def test_pool_collected_while_leased_ends_its_leases_as_closed() -> None:
    """A pool object that disappears with leases out reports them as confirmed leaks."""
    tracker = Tracker()
    pool_obj = _Owner()
    pool = tracker.pool(pool_obj, "test", "doomed")
    conn = _Owner()
    mark = tracker.seq
    tracker.checkout(pool, id(conn), conn)
    del pool_obj, pool
    gc.collect()
    (leak,) = tracker.leaks_since(mark)
    assert leak.state == "closed"
    assert "garbage collected while leased" in (leak.note or "")


def test_a_pool_and_a_lease_owner_collected_together_count_the_lease_once() -> None:
    """A client dropped with an unclosed response: both reports wait in the queue, and two
    threads apply them at once. The lease is one confirmed leak, with one event."""
    tracker = Tracker()
    pool_obj = _Owner()
    pool = tracker.pool(pool_obj, "test", "dropped")
    connections, owners = [_Owner(), _Owner()], [_Owner(), _Owner()]
    for connection, owner in zip(connections, owners, strict=True):
        tracker.set_owner(tracker.checkout(pool, id(connection), connection), owner)
    del owner
    events: list[tuple[int, str]] = []
    first_out, go_on = threading.Event(), threading.Event()

    def slow_subscriber(event: poolwatch.Event) -> None:
        assert event.lease is not None
        events.append((event.lease.seq, event.kind))
        if threading.current_thread().name == "applier" and not first_out.is_set():
            first_out.set()  # the pool's report is half applied: its first lease is out
            go_on.wait(10)

    tracker.subscribe(slow_subscriber)
    del pool_obj  # the pool's report, then the second lease's owner's, wait in the queue
    owners.pop()
    assert [item[0] for item in tracker._pending] == ["pool", "owner"]
    applier = threading.Thread(target=tracker.snapshot, name="applier")
    applier.start()
    assert first_out.wait(10)
    tracker.snapshot()  # this thread applies the owner's report meanwhile
    go_on.set()
    applier.join(10)
    assert sorted(events) == [(1, "leak.confirmed"), (2, "leak.confirmed")]
    assert pool.confirmed_leaks == 2


def test_end_record_ends_that_lease_not_the_one_now_under_its_key() -> None:
    """An adapter that looked at a lease, then ends it, ends that lease: if it was checked in
    and its key leased again meanwhile, the new lease (another request in flight) stays."""
    tracker = Tracker()
    pool_obj = _Owner()
    pool = tracker.pool(pool_obj, "test", "p")
    connection = _Owner()
    first = tracker.checkout(pool, 7, connection)
    tracker.checkin(pool, 7)
    second = tracker.checkout(pool, 7, connection)
    assert not tracker.end_record(first, "closed", "the client was closed")
    (snap,) = tracker.snapshot().pools
    assert (snap.leased, snap.confirmed_leaks, second.state) == (1, 0, None)
    assert tracker.end_record(second, "closed", "the client was closed")
    (snap,) = tracker.snapshot().pools
    assert (snap.leased, snap.confirmed_leaks, second.state) == (0, 1, "closed")


def test_a_reader_never_reads_past_a_report_another_thread_is_applying() -> None:
    """A test's leak check runs while a request thread is applying the garbage collector's
    report of a leak (a lease out of its pool, not yet among the ended ones): the check waits
    for it rather than pass."""
    tracker = Tracker()
    pool_obj, connection = _Owner(), _Owner()
    lease = tracker.checkout(tracker.pool(pool_obj, "test", "p"), id(connection), connection)
    taken = threading.Event()

    class Queue(deque[tuple[object, ...]]):
        def popleft(self) -> tuple[object, ...]:
            item = super().popleft()
            if threading.current_thread().name == "applier":
                taken.set()  # the report is off the queue and not applied yet
                threading.Event().wait(1)  # the reader runs now, or waits for this thread
            return item

    tracker._pending = Queue()  # the Python paths below use it: end_soon, snapshot's drain
    tracker.end_soon(lease, "gc_returned", "the garbage collector returned it")
    applier = threading.Thread(target=tracker.snapshot, name="applier")
    applier.start()
    assert taken.wait(10)
    (leak,) = tracker.leaks_since(0)
    assert leak.state == "gc_returned"
    applier.join(10)


def test_a_response_read_while_its_lease_ends_is_not_kept_on_it() -> None:
    """A report reads a lease's response from its connection (``response_of``) while another
    thread returns the lease and leases the connection again: the response read may be the
    next request's, so the ended lease neither shows nor keeps it."""
    reading, go_on = threading.Event(), threading.Event()
    carrying: list[ResponseFacts] = [ResponseFacts(200, "text/plain", 2, False)]

    def response_of(connection: object) -> ResponseFacts:
        if threading.current_thread().name == "reporter":
            reading.set()
            go_on.wait(10)  # the library answers late
        return carrying[0]  # what the connection carries when it answers

    tracker = Tracker()
    pool_obj, connection = _Owner(), _Owner()
    pool = tracker.pool(pool_obj, "test", "p", response_of=response_of)
    first = tracker.checkout(pool, id(connection), connection)
    seen: list[poolwatch.Snapshot] = []
    reporter = threading.Thread(target=lambda: seen.append(tracker.snapshot()), name="reporter")
    reporter.start()
    assert reading.wait(10)
    tracker.checkin(pool, id(connection))
    tracker.checkout(pool, id(connection), connection)  # the next request, on that connection
    carrying[0] = ResponseFacts(403, "text/html", 9, False)
    go_on.set()
    reporter.join(10)
    (reported,) = seen[0].leases
    assert reported.seq == first.seq
    assert reported.response is None
    assert first.response is None


def test_deferred_response_facts_are_computed_only_when_read() -> None:
    """attach_response((function, *args)): nothing runs for a returned lease; a report reads it
    once; a function that fails is counted and the lease reads as having no facts."""
    from poolwatch._models import ResponseFacts

    tracker = Tracker()
    pool_obj, conn = _Owner(), _Owner()
    pool = tracker.pool(pool_obj, "test", "p")
    calls: list[int] = []

    def facts(status: int) -> ResponseFacts:
        calls.append(status)
        if status == 500:
            raise ValueError("unreadable headers")
        return ResponseFacts(status=status)

    returned = tracker.checkout(pool, 1, conn)
    tracker.attach_response(returned, (facts, 200))
    tracker.checkin(pool, 1)
    kept = tracker.checkout(pool, 2, conn)
    tracker.attach_response(kept, (facts, 403))
    broken = tracker.checkout(pool, 3, conn)
    tracker.attach_response(broken, (facts, 500))
    assert calls == []
    by_key = {lease.connection_id: lease for lease in tracker.snapshot().leases}
    tracker.snapshot()
    assert calls == [403, 500]
    assert by_key[2].response == ResponseFacts(status=403)
    assert by_key[3].response is None
    assert tracker.internal_errors["test.response"] == 1
