"""The C hot path (_speedups.c) against its pure-Python twin, which is the reference.

Each test runs the same calls through a tracker on the C path and one switched to the Python
methods, and compares what they recorded. `make test` also runs the core tests a second time
with POOLWATCH_PURE_PYTHON=1, so the Python path keeps its own coverage.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import sysconfig
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from poolwatch import Tracker, _native
from poolwatch._callsite import TASK_CALLSITE
from poolwatch._models import UNKNOWN_CALLSITE

needs_c = pytest.mark.skipif(
    _native.speedups is None, reason="this run uses the pure-Python hot path"
)


def _python(tracker: Tracker) -> Tracker:
    """The same tracker class, switched to the Python hot path."""
    tracker.checkout = tracker._checkout
    tracker.checkin = tracker._checkin
    tracker.checkout_of = tracker._checkout_of
    tracker.checkin_of = tracker._checkin_of
    tracker.callsites.capture = tracker.callsites._capture
    return tracker


def test_the_c_hot_path_is_built_where_it_should_be() -> None:
    """CPython 3.11+ with the GIL gets the C module unless told not to: a broken build shows."""
    wanted = (
        platform.python_implementation() == "CPython"
        and sys.version_info >= (3, 11)
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
        and not os.environ.get("POOLWATCH_PURE_PYTHON")
    )
    assert (_native.speedups is not None) is wanted
    tracker = Tracker()
    if wanted:
        speedups = _native.speedups
        assert speedups is not None
        assert tracker.checkout.func is speedups.checkout  # type: ignore[attr-defined]
        assert tracker.callsites.capture.func is speedups.capture  # type: ignore[attr-defined]
    else:
        assert tracker.checkout == tracker._checkout


class _Pool:
    """A weak-referenceable stand-in for a library pool object."""


class _Conn:
    """A weak-referenceable stand-in for a connection."""


def _record(tracker: Tracker, lines: Callable[[Tracker, Any, _Conn], None]) -> list[Any]:
    pool = _Pool()
    record = tracker.pool(pool, "test", "pool")
    conn = _Conn()
    lines(tracker, record, conn)
    snapshot = tracker.snapshot()
    return [
        (p.checkouts, p.checkins, p.orphans, [(x.callsite, x.state, x.task_name) for x in p.leases])
        for p in snapshot.pools
    ]


def _checkouts(tracker: Tracker, record: Any, conn: _Conn) -> None:
    tracker.checkout(record, 1, conn)  # kept
    tracker.checkout(record, 2, conn)
    tracker.checkin(record, 2)  # returned
    tracker.checkout(record, 3)  # no connection object
    tracker.checkout(record, 3, object())  # not weak-referenceable: still a lease
    tracker.checkin(record, 404)  # unknown key: ignored
    tracker.checkin(record, 1, "discarded")


def test_a_connection_leased_again_orphans_the_older_lease() -> None:
    """On whichever path this run uses: the second lease of key 3 ends the first as orphaned."""
    counts = _record(Tracker(), _checkouts)[0][:3]
    assert counts == (4, 2, 1)
    tracker = Tracker()
    record = tracker.pool(_Pool(), "test", "pool")
    tracker.checkout(record, 7, _Conn())
    tracker.checkout(record, 7, _Conn())
    (orphan,) = tracker.orphans_since(0)
    assert (orphan.state, orphan.seq) == ("orphaned", 1)


@needs_c
def test_checkout_and_checkin_record_what_python_records() -> None:
    assert _record(Tracker(), _checkouts) == _record(_python(Tracker()), _checkouts)


def _capture(tracker: Tracker, how: str) -> Any:
    capture = tracker.callsites.capture
    if how == "direct":
        return capture()
    if how == "trusted":  # a trusted frame followed by user code: walked after all
        return capture(0, 0, 1)
    if how == "too_deep":  # more trusted frames than the stack has
        return capture(0, 0, 10_000)
    if how == "in_task":
        return _in_task(tracker)
    if how == "own_task":
        return _request_task(tracker)
    return capture(2)  # a short stack: handed to the Python code by the C one


def _in_task(tracker: Tracker) -> Any:
    async def main() -> Any:
        return tracker.callsites.capture()

    return asyncio.run(main())


def _request_task(tracker: Tracker) -> Any:
    async def request() -> Any:  # a coroutine run as its own task: no user frame in it
        return tracker.callsites.capture(0, 1)

    async def main() -> Any:
        return await asyncio.get_running_loop().create_task(request())

    return asyncio.run(main())


@needs_c
@pytest.mark.parametrize(
    "how",
    ["direct", "trusted", "too_deep", "in_task", "own_task", "stack"],
)
def test_capture_finds_what_python_finds(how: str) -> None:
    """Same line, same site: the C walk and the Python walk agree in every case."""
    fast, reference = (_capture(t, how) for t in (Tracker(), _python(Tracker())))
    assert fast == reference
    site = fast[0]
    if how == "own_task":
        assert site == TASK_CALLSITE
    else:
        assert site.filename == __file__
        assert site != UNKNOWN_CALLSITE


@needs_c
def test_an_owner_collected_while_leased_is_lost_on_both_paths() -> None:
    results = []
    for tracker in (Tracker(), _python(Tracker())):
        pool = _Pool()
        record = tracker.pool(pool, "test", "pool")
        conn, owner = _Conn(), _Conn()
        lease = tracker.checkout(record, 1, conn)
        tracker.set_owner(lease, owner)
        del owner  # collected at once (no cycle): its callback queues the lease
        tracker.checkout(record, 2, conn)  # the next call applies the queue
        results.append([(x.state, x.callsite.function) for x in tracker.snapshot().leases])
    assert results[0] == results[1]
    assert ("lost", "test_an_owner_collected_while_leased_is_lost_on_both_paths") in results[0]


@needs_c
def test_a_fault_inside_the_c_path_raises_like_the_python_one() -> None:
    """A broken clock fails the checkout the same way: adapters count it, never the caller."""

    def broken_clock() -> float:
        raise RuntimeError("clock is broken")

    for tracker in (Tracker(), _python(Tracker())):
        record = tracker.pool(_Pool(), "test", "pool")
        tracker._clock = broken_clock
        with pytest.raises(RuntimeError, match="clock is broken"):
            tracker.checkout(record, 1, _Conn())
        assert record.leases == {}
        assert record.checkouts == 0


def test_records_hold_no_strong_reference_to_the_connection() -> None:
    tracker = Tracker()
    record = tracker.pool(_Pool(), "test", "pool")
    conn = _Conn()
    watch = weakref.ref(conn)
    tracker.checkout(record, id(conn), conn)
    del conn
    assert watch() is None


@needs_c
def test_library_modules_added_later_move_call_sites_on_both_paths() -> None:
    """The C caches in front of the finder's dicts are emptied when its library set grows."""
    from tests import _wrapper

    results = []
    for tracker in (Tracker(), _python(Tracker())):
        record = tracker.pool(_Pool(), "test", "pool")
        conn = _Conn()
        sites = []
        for key in (1, 2):
            sites.append(_wrapper.check_out(tracker, record, key, conn).callsite)
            tracker.callsites.add_library_modules(["tests._wrapper"])
        results.append(sites)
    assert results[0] == results[1]
    before, after = results[0]
    assert before.filename == _wrapper.__file__
    assert (after.filename, after.function) == (
        __file__,
        "test_library_modules_added_later_move_call_sites_on_both_paths",
    )


@needs_c
def test_checkout_of_and_checkin_of_find_the_pool_as_python_does() -> None:
    """By library object: nothing for a pool not registered (or a dead one's reused id)."""
    results = []
    for tracker in (Tracker(), _python(Tracker())):
        pool, stranger, conn = _Pool(), _Pool(), _Conn()
        seen = [tracker.checkout_of(pool, conn), tracker.checkin_of(pool, conn)]
        record = tracker.pool(pool, "test", "pool")
        lease = tracker.checkout_of(pool, conn)
        seen.append(lease is not None and (lease.pool, lease.key) == (record, id(conn)))
        seen.append(tracker.checkout_of(stranger, conn))
        tracker._pools[id(stranger)] = record  # as if stranger reused a dead pool's id
        seen.append(tracker.checkout_of(stranger, conn))
        seen.append(tracker.checkin_of(stranger, conn))
        seen.append(tracker.checkin_of(pool, conn) is lease)
        seen.append(tracker.checkin_of(pool, conn))
        seen.append((record.checkouts, record.checkins, lease.state if lease else None))
        seen.append(lease.callsite.function if lease else None)
        results.append(seen)
    assert results[0] == results[1]
    assert results[0] == [
        None, None, True, None, None, None, True, None, (1, 1, "returned"),
        "test_checkout_of_and_checkin_of_find_the_pool_as_python_does",
    ]  # fmt: skip
