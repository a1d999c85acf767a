"""The C hot path (_speedups.c) against its pure-Python twin, which is the reference.

Each test runs the same calls through a tracker on the C path and one switched to the Python
methods, and compares what they recorded. `make test` also runs the core tests a second time
with POOLWATCH_PURE_PYTHON=1, so the Python path keeps its own coverage.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import os
import platform
import sys
import sysconfig
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from poolwatch import Tracker, _native
from poolwatch._callsite import TASK_CALLSITE
from poolwatch._models import UNKNOWN_CALLSITE, ResponseFacts

needs_c = pytest.mark.skipif(
    _native.speedups is None, reason="this run uses the pure-Python hot path"
)


def _python(tracker: Tracker) -> Tracker:
    """The same tracker class, switched to the Python hot path."""
    tracker.checkout = tracker._checkout
    tracker.checkin = tracker._checkin
    tracker.checkout_of = tracker._checkout_of
    tracker.checkin_of = tracker._checkin_of
    tracker.find_pool = tracker._find_pool
    tracker.set_owner = tracker._set_owner
    tracker.attach_response = tracker._attach_response
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


def test_each_thread_names_its_own_leases_even_with_a_reused_ident() -> None:
    """Threads run one after another often get the same ident: each lease names its thread."""
    results = []
    pool = _Pool()
    for tracker in (Tracker(), _python(Tracker())):
        record = tracker.pool(pool, "test", "pool")

        def lease(n: int, tracker: Tracker = tracker, record: Any = record) -> None:
            threading.current_thread().name = f"worker-{n}"
            tracker.checkout(record, n, _Conn())

        for n in range(4):
            worker = threading.Thread(target=lease, args=(n,))
            worker.start()
            worker.join()
        tracker.checkout(record, 99, _Conn())  # and this thread, after them
        results.append([(x.seq, x.thread_name) for x in tracker.snapshot().leases])
    assert results[0] == results[1]
    names = [name for _seq, name in sorted(results[0])]
    assert names == [*(f"worker-{n}" for n in range(4)), threading.current_thread().name]


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


class _Library:
    """A library class whose methods poolwatch replaces with hooks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self._closed = False

    def lease(self, pool: Any, key: Any, conn: Any) -> str:
        self.calls.append(("lease", pool, conn))
        if conn == "library fault":
            raise LookupError("the library's own error")
        return "leased"

    def finalize(self) -> None:
        self.calls.append(("finalize", None, None))


def _hooked(mode: str, **spec: Any) -> tuple[Any, list[Any], Tracker]:
    """A _Library subclass whose lease/finalize is hooked the way adapters hook methods."""
    from poolwatch.adapters._base import hook

    seen: list[Any] = []
    tracker = Tracker()

    class Hooked(_Library):
        pass

    def call(pool: Any, conn: Any) -> Any:
        seen.append(("call", pool, conn))
        if conn == "fault":
            raise RuntimeError("poolwatch fault")
        if conn == "interrupt":
            raise KeyboardInterrupt
        return None if conn == "unknown" else "lease record"

    def miss(pool: Any, conn: Any) -> Any:
        seen.append(("miss", pool, conn))
        return "registered"

    name = "finalize" if mode == "guard" else "lease"
    original = getattr(_Library, name)

    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(("slow", args, tuple(kwargs)))
        return original(self, *args, **kwargs)

    if mode != "guard":
        spec = {"call": call, "miss": miss, "first": 1, "second": 3, **spec}
    setattr(Hooked, name, hook(original, slow, tracker, "test.where", mode, **spec))
    library = Hooked()
    library.calls = seen  # one record of what ran, in order
    return library, seen, tracker


@needs_c
def test_c_hooks_call_around_the_library_method_and_keep_its_errors() -> None:
    after, seen, _tracker = _hooked("after")
    assert after.lease("pool", "key", "conn") == "leased"
    assert seen == [("lease", "pool", "conn"), ("call", "pool", "conn")]
    seen.clear()
    assert after.lease("pool", "key", "unknown") == "leased"  # None: the pool is new
    unknown = ("pool", "unknown")
    assert seen == [("lease", *unknown), ("call", *unknown), ("miss", *unknown)]
    seen.clear()
    with pytest.raises(LookupError, match="the library's own error"):
        after.lease("pool", "key", "library fault")
    assert seen == [("lease", "pool", "library fault")]  # nothing tracked after it failed

    before, seen, _tracker = _hooked("before")
    assert before.lease("pool", "key", "conn") == "leased"
    assert seen == [("call", "pool", "conn"), ("lease", "pool", "conn")]


@needs_c
def test_c_hooks_count_their_own_faults_and_never_raise_them() -> None:
    for mode in ("after", "before"):
        library, _seen, tracker = _hooked(mode)
        assert library.lease("pool", "key", "fault") == "leased"
        assert tracker.internal_errors["test.where"] == 1
        assert ("lease", "pool", "fault") in library.calls
        with pytest.raises(KeyboardInterrupt):  # not an Exception: as `except Exception`
            library.lease("pool", "key", "interrupt")


@needs_c
def test_c_hooks_hand_keyword_calls_and_guarded_cases_to_the_python_hook() -> None:
    library, seen, _tracker = _hooked("after")
    assert library.lease("pool", "key", conn="conn") == "leased"
    assert seen == [("slow", ("pool", "key"), ("conn",)), ("lease", "pool", "conn")]

    library, seen, _tracker = _hooked("guard", attr="_closed", value=True)
    library.finalize()  # _closed is False: the Python hook decides
    library._closed = True
    library.finalize()
    del library._closed
    library.finalize()  # no such attribute: the Python hook again
    finalized = ("finalize", None, None)
    assert seen == [("slow", (), ()), finalized, finalized, ("slow", (), ()), finalized]


@needs_c
def test_c_hooks_read_arguments_from_attributes_and_track_while_told() -> None:
    """first/second as attribute names of args[0]; attr/value make the call conditional."""
    spec = {"first": "pool_name", "second": "conn_name", "attr": "_closed", "value": False}
    library, seen, tracker = _hooked("before", **spec)
    library.pool_name, library.conn_name = "the pool", "the conn"  # type: ignore[attr-defined]
    assert library.lease("pool", "key", "conn") == "leased"
    assert seen == [("call", "the pool", "the conn"), ("lease", "pool", "conn")]
    seen.clear()
    library._closed = True  # condition not met: the original alone
    assert library.lease("pool", "key", "conn") == "leased"
    assert seen == [("lease", "pool", "conn")]
    seen.clear()
    del library._closed  # the condition's attribute is missing: the Python hook decides
    assert library.lease("pool", "key", "conn") == "leased"
    assert seen == [("slow", ("pool", "key", "conn"), ()), ("lease", "pool", "conn")]
    seen.clear()
    library._closed = False
    del library.conn_name  # type: ignore[attr-defined]  # an argument missing: our fault
    assert library.lease("pool", "key", "conn") == "leased"
    assert seen == [("lease", "pool", "conn")]
    assert tracker.internal_errors["test.where"] == 1


@needs_c
def test_c_hooks_reject_a_spec_they_cannot_run() -> None:
    speedups = _native.speedups
    assert speedups is not None
    args = (_Library.lease, _Library.lease, print, "test.where")
    with pytest.raises(ValueError, match="first and second are positions"):
        speedups.Hook(speedups.BEFORE, *args, call=print, first=-1)
    with pytest.raises(ValueError, match="an httpcore hook its state tuple"):
        speedups.Hook(speedups.HTTPCORE_WAIT, *args, state=("not a ContextVar", print))
    with pytest.raises(ValueError, match="an httpcore hook its state tuple"):
        speedups.Hook(speedups.AFTER, *args, call=print, state=(print,))
    with pytest.raises(ValueError, match="a RESULT hook attr and a callable call"):
        speedups.Hook(speedups.RESULT, *args, call=print)
    with pytest.raises(ValueError, match="a urllib3 checkout attr and its state"):
        speedups.Hook(speedups.URLLIB3_CHECKOUT, *args, attr="block", state=(print, print))
    with pytest.raises(ValueError, match="a urllib3 checkout attr and its state"):
        speedups.Hook(speedups.URLLIB3_CHECKOUT, *args, state=(print, print, object()))


class _Answer:
    """What a hooked method returns: its ``_body`` says whether the hook's call is made."""

    def __init__(self, body: Any) -> None:
        self._body = body


@needs_c
def test_a_result_hook_calls_after_the_original_when_the_result_says_so() -> None:
    """RESULT: call(args[0], result) when result.<attr> is value or missing; never else."""
    from poolwatch.adapters._base import hook

    seen: list[Any] = []
    tracker = Tracker()

    class Library:
        fail = False  # makes the hook's call raise

        def respond(self, body: Any = None) -> Any:
            if body == "library fault":
                raise LookupError("the library's own error")
            answer = _Answer(body)
            if body == "no attribute":
                del answer._body
            return answer

    def call(library: Any, answer: Any) -> None:
        seen.append(("call", library, answer))
        if library.fail:
            raise RuntimeError("poolwatch fault")

    original = Library.respond

    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(("slow", args, tuple(kwargs)))
        return original(self, *args, **kwargs)

    Library.respond = hook(  # type: ignore[method-assign]
        original, slow, tracker, "test.where", "result", call=call, attr="_body", value=None
    )
    library = Library()
    unread = library.respond()
    assert seen == [("call", library, unread)]
    assert library.respond(b"read")._body == b"read"  # not None: no call
    missing = library.respond("no attribute")  # no such attribute: the call decides
    assert seen == [("call", library, unread), ("call", library, missing)]
    seen.clear()
    with pytest.raises(LookupError, match="the library's own error"):
        library.respond("library fault")
    assert seen == []  # nothing called after the library failed
    assert library.respond(body=None)._body is None  # keywords: the Python hook
    assert seen == [("slow", (), ("body",))]
    library.fail = True
    assert library.respond()._body is None  # the call raised: counted, never raised
    assert tracker.internal_errors["test.where"] == 1


@needs_c
def test_urllib3_hooks_are_c_and_hand_a_blocking_pool_to_python() -> None:
    """The per-request urllib3 hooks run in C; a blocking pool's checkout (its waits are timed)
    and a pool's first checkout (it is registered) run the Python hook, which captures its call
    site through the finder's capture; the C hook has checkout capture it."""
    import urllib3
    from urllib3.connection import HTTPConnection
    from urllib3.connectionpool import HTTPConnectionPool

    import poolwatch

    speedups = _native.speedups
    assert speedups is not None
    tracker = Tracker()
    python_captures: list[Any] = []
    capture = tracker.callsites.capture

    def spy(*args: Any) -> Any:
        python_captures.append(args)
        return capture(*args)

    tracker.callsites.capture = spy
    previous = poolwatch.get_tracker()
    poolwatch.instrument(tracker=tracker)  # as the tracker fixture does
    try:
        hooks = [
            vars(HTTPConnectionPool)["_get_conn"],
            vars(HTTPConnectionPool)["_put_conn"],
            vars(HTTPConnection)["getresponse"],
        ]
        assert [type(x) for x in hooks] == [speedups.Hook] * 3
        counts = []
        for block in (False, True):
            pool = urllib3.HTTPConnectionPool("127.0.0.1", 9, maxsize=1, block=block)
            for _ in range(3):
                pool._put_conn(pool._get_conn())  # no request: no socket is opened
            record = tracker.find_pool(pool)
            assert record is not None
            assert (record.checkouts, record.checkins, len(record.leases)) == (3, 3, 0)
            counts.append(len(python_captures))
            pool.close()
        assert counts == [1, 4]  # non-blocking: the first sighting only; blocking: every one
        assert dict(tracker.internal_errors) == {}
    finally:
        poolwatch.instrument(tracker=previous)


@needs_c
def test_httpcore_sync_hooks_are_c_and_its_call_reads_like_the_python_one() -> None:
    """The per-request sync hooks run in C; the async ones stay Python (C cannot await)."""
    import contextvars

    import httpcore

    import poolwatch
    from poolwatch.adapters._httpx import Call, new_call

    speedups = _native.speedups
    assert speedups is not None
    call = new_call()
    assert type(call) is speedups.Call
    assert [getattr(call, name) for name in Call.__annotations__] == [None] * 6
    call.lease = "lease"
    assert call.lease == "lease"
    was = poolwatch.instrumented()
    poolwatch.instrument("httpx")
    try:
        sync = [httpcore.ConnectionPool.handle_request, httpcore.ConnectionPool.close]
        wait = httpcore._sync.connection_pool.PoolRequest.wait_for_connection
        stream_close = httpcore._sync.connection_pool.PoolByteStream.close
        assert [type(x) for x in (sync[0], wait, stream_close)] == [speedups.Hook] * 3
        assert not isinstance(httpcore.AsyncConnectionPool.handle_async_request, speedups.Hook)
        # httpcore passes timeout= by keyword: the C hook takes it, outside a tracked call too
        request = httpcore._sync.connection_pool.PoolRequest(None)
        request.assign_to_connection("a connection")
        ctx = contextvars.copy_context()
        assert ctx.run(lambda: request.wait_for_connection(timeout=1.0)) == "a connection"
    finally:
        poolwatch.uninstrument("httpx")
        if "httpx" in was:
            poolwatch.instrument("httpx")


class _Response:
    """What httpcore's pool returns, as far as the responded step reads it."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers, self.stream = status, headers, _Conn()


@needs_c
def test_httpcore_responded_in_c_records_what_python_records() -> None:
    """Facts and owner on a lease still out; nothing on one returned; our faults counted."""
    import httpcore

    from poolwatch.adapters._httpx import Hooks, new_call

    seen = []
    for tracker in (Tracker(), _python(Tracker())):
        hooks = Hooks(tracker, httpcore.PoolTimeout)
        if tracker.checkout == tracker._checkout:
            hooks.responded = hooks._responded
        record = tracker.pool(_Pool(), "test", "pool")
        calls = []
        for key in (1, 2, 3):
            call = new_call()
            call.record = record
            call.lease = tracker.checkout(record, key, _Conn())
            calls.append(call)
        tracker.checkin(record, 2)  # returned before its response: nothing attached
        response = _Response(403, [(b"Content-Type", b"text/html"), (b"Content-Length", b"9")])
        hooks.responded(calls[0], response)
        hooks.responded(calls[1], response)
        hooks.responded(calls[2], object())  # no status: our fault, counted, never raised
        hooks.responded(new_call(), response)  # no lease: nothing to do
        owner = calls[0].lease.owner_ref  # type: ignore[union-attr]
        seen.append(
            (
                calls[0].lease.response,  # type: ignore[union-attr]
                owner is not None and owner() is response.stream,
                calls[1].lease.response,  # type: ignore[union-attr]
                calls[2].lease.response,  # type: ignore[union-attr]
                dict(tracker.internal_errors),
            )
        )
    assert seen[0] == seen[1]
    facts = ResponseFacts(status=403, content_type="text/html", content_length=9)
    assert seen[0] == (facts, True, None, None, {"httpx.response": 1})


@needs_c
def test_attach_response_in_c_sets_what_python_sets() -> None:
    results = []
    for tracker in (Tracker(), _python(Tracker())):
        record = tracker.pool(_Pool(), "test", "pool")
        lease = tracker.checkout(record, 1, _Conn())
        tracker.attach_response(lease, (ResponseFacts, 404))
        results.append(lease.response)
    assert results == [ResponseFacts(status=404)] * 2
    with pytest.raises(TypeError, match="attach_response"):
        Tracker().attach_response([], ResponseFacts(status=200))  # type: ignore[arg-type]


@needs_c
def test_a_c_hook_binds_like_the_function_it_replaces() -> None:
    import inspect

    library, _seen, _tracker = _hooked("after")
    hooked = type(library).lease
    assert hooked.__wrapped__ is _Library.lease
    assert hooked.__name__ == "lease"
    assert inspect.signature(hooked) == inspect.signature(_Library.lease)
    bound = library.lease
    assert bound.__self__ is library
    assert bound("pool", "key", "conn") == "leased"
    assert type(library).lease(library, "pool", "key", "conn") == "leased"


@needs_c
def test_a_returned_record_is_refilled_only_when_nobody_else_holds_it() -> None:
    tracker = Tracker()
    pool, conn = _Pool(), _Conn()
    record = tracker.pool(pool, "test", "pool")
    kept = tracker.checkout(record, 1, conn)
    tracker.attach_response(kept, ResponseFacts(status=403))
    assert tracker.checkin(record, 1) is kept
    before = list(kept)
    second = tracker.checkout(record, 1, conn)
    assert second is not kept
    assert list(kept) == before

    tracker.checkin(record, 1)
    del second  # now only the pool's spare slot holds it
    spare = id(record.spare)
    third = tracker.checkout(record, 1, conn)
    assert id(third) == spare
    assert record.spare is None
    assert (third.state, third.response, third.note, third.seq) == (None, None, None, 3)
    assert third.connection is not None
    assert third.connection() is conn
    assert [x.seq for x in tracker.snapshot().leases] == [3]


def _suspended_in(where: Callable[[], None]) -> Any:
    """A greenlet suspended inside ``where`` (which switches back to its parent)."""
    greenlet = pytest.importorskip("greenlet")
    child = greenlet.greenlet(where)
    child.switch()
    return child


def _user_switches_back() -> None:
    import greenlet

    greenlet.getcurrent().parent.switch()  # this line is the call site


@needs_c
def test_capture_at_walks_another_stack_as_capture_walks_this_one() -> None:
    """capture_at(frame): the first user frame of a suspended greenlet's stack, else UNKNOWN."""
    import greenlet

    speedups = _native.speedups
    assert speedups is not None
    tracker = Tracker()
    finder = tracker.callsites
    child = _suspended_in(_user_switches_back)
    site, stack = speedups.capture_at(finder, child.gr_frame)
    assert (site.filename, site.function) == (__file__, "_user_switches_back")
    assert stack == ()
    # the same line, interned once: asked again, the same object
    assert speedups.capture_at(finder, child.gr_frame)[0] is site
    # library frames only: heapq, called by greenlet with no Python frame below it
    main = greenlet.getcurrent()
    library_only = greenlet.greenlet(functools.partial(heapq.nlargest, 1, [1], key=main.switch))
    library_only.switch()
    assert library_only.gr_frame.f_code.co_name == "nlargest"
    assert speedups.capture_at(finder, library_only.gr_frame) == (UNKNOWN_CALLSITE, ())
    library_only.throw(greenlet.GreenletExit)
    # a finished frame, which its frame object owns: walked through f_back, to this test
    finished: list[Any] = []
    heapq.nlargest(1, [1], key=lambda item: finished.append(sys._getframe(1)))
    assert finished[0].f_code.co_name == "nlargest"
    site = speedups.capture_at(finder, finished[0])[0]
    assert site.function == "test_capture_at_walks_another_stack_as_capture_walks_this_one"
    with pytest.raises(TypeError, match=r"capture_at\(finder, frame\)"):
        speedups.capture_at(finder, "not a frame")
    child.throw(greenlet.GreenletExit)


class _Record:
    """What SQLAlchemy's _ConnectionRecord is to the listeners: it names its pool."""

    def __init__(self, pool: Any) -> None:
        self._ConnectionRecord__pool = pool


def _sqlalchemy_hooks(
    tracker: Tracker, parents: Callable[[], Any] = lambda: None, finder: Any = None
) -> tuple[Any, Any, list[tuple[Any, ...]]]:
    """The two SQLAlchemy listener hooks on ``tracker``, with Python listeners that record.
    With no ``finder``, ``parents()`` is what walks the parent greenlets."""
    speedups = _native.speedups
    assert speedups is not None
    slow: list[tuple[Any, ...]] = []
    checkout = speedups.Hook(
        speedups.SQLALCHEMY_CHECKOUT,
        print,
        lambda *args, **kwargs: slow.append(("checkout", *args, *kwargs.values())),
        tracker.internal_error,
        "sqlalchemy.checkout",
        state=(
            tracker.find_pool,
            functools.partial(tracker.callsites.capture, 0),
            tracker.checkout,
            parents,
            finder,
        ),
    )
    checkin = speedups.Hook(
        speedups.SQLALCHEMY_CHECKIN,
        print,
        lambda *args, **kwargs: slow.append(("checkin", *args, *kwargs.values())),
        tracker.internal_error,
        "sqlalchemy.checkin",
        state=(tracker.find_pool, tracker.checkin),
    )
    return checkout, checkin, slow


@needs_c
def test_sqlalchemy_listeners_in_c_lease_and_return_as_the_python_ones() -> None:
    """The common case in C; a pool seen first, a record leased twice, a collected fairy and
    keyword calls go to the Python listener."""
    tracker = Tracker()
    checkout, checkin, slow = _sqlalchemy_hooks(tracker)
    pool, known = _Pool(), _Pool()
    record = _Record(known)
    pool_record = tracker.pool(known, "sqlalchemy", "db")
    first, unregistered = _Conn(), _Record(pool)
    checkout("dbapi", unregistered, first)  # a pool not registered: Python registers it
    assert slow == [("checkout", "dbapi", unregistered, first)]
    slow.clear()

    fairy = _Conn()
    checkout("dbapi", record, fairy)  # this line is the call site
    (lease,) = pool_record.leases.values()
    assert lease.key == id(record)
    assert lease.connection() is fairy
    assert (lease.callsite.filename, lease.callsite.function) == (
        __file__,
        "test_sqlalchemy_listeners_in_c_lease_and_return_as_the_python_ones",
    )
    checkout("dbapi", record, fairy)  # leased already (a retried checkout): Python decides
    assert slow == [("checkout", "dbapi", record, fairy)]
    slow.clear()
    checkin("dbapi", record)
    assert (len(pool_record.leases), lease.state) == (0, "returned")
    checkin("dbapi", record)  # nothing leased under it: nothing to do
    assert slow == []

    checkout("dbapi", record, _Conn())  # the fairy dies at once
    checkin(None, record)  # its weak reference is dead: the collector's case, for Python
    assert slow == [("checkin", None, record)]
    slow.clear()
    checkout("dbapi", record, fairy=fairy)  # keywords: as SQLAlchemy never calls, Python
    checkin(None, record=record)
    assert slow == [("checkout", "dbapi", record, fairy), ("checkin", None, record)]
    slow.clear()

    tracker.checkin(pool_record, id(record))  # what the Python listener would have done
    checkout("dbapi", record, fairy)
    (lease,) = pool_record.leases.values()
    checkin(None, record)  # a live fairy whose DBAPI connection is gone: discarded
    assert (slow, lease.state, len(pool_record.leases)) == ([], "discarded", 0)


@needs_c
def test_sqlalchemy_checkout_in_c_finds_the_user_line_in_a_parent_greenlet() -> None:
    """An asyncio engine's checkout runs in a greenlet with no user frame: given the tracker's
    finder, the C listener walks the greenlets that switched to it itself (no Python call)."""
    import greenlet

    tracker = Tracker()
    parents: list[int] = []
    checkout, _, slow = _sqlalchemy_hooks(tracker, lambda: parents.append(1), tracker.callsites)
    known = _Pool()
    pool_record = tracker.pool(known, "sqlalchemy", "db")
    record, fairy = _Record(known), _Conn()
    # map and list are C: the child greenlet calls the listener with no Python frame at all
    child = greenlet.greenlet(functools.partial(list, map(checkout, ["dbapi"], [record], [fairy])))
    child.switch()  # this line is the call site
    (lease,) = pool_record.leases.values()
    assert (lease.callsite.filename, lease.callsite.function) == (
        __file__,
        "test_sqlalchemy_checkout_in_c_finds_the_user_line_in_a_parent_greenlet",
    )
    assert (parents, slow) == ([], [])  # neither find_in_parents nor the Python listener
    assert dict(tracker.internal_errors) == {}


@needs_c
def test_sqlalchemy_listeners_in_c_count_their_faults_and_never_raise_them() -> None:
    tracker = Tracker()
    checkout, checkin, slow = _sqlalchemy_hooks(tracker)
    known = _Pool()
    tracker.pool(known, "sqlalchemy", "db")
    checkout("dbapi", object(), _Conn())  # no pool on the record: our fault, counted
    checkin("dbapi", object())  # not a _ConnectionRecord: the Python listener decides
    assert tracker.internal_errors["sqlalchemy.checkout"] == 1
    assert [call[0] for call in slow] == ["checkin"]
    speedups = _native.speedups
    assert speedups is not None
    with pytest.raises(ValueError, match="a SQLAlchemy listener its state tuple of callables"):
        speedups.Hook(speedups.SQLALCHEMY_CHECKIN, print, print, print, "w", state=(print,))


@needs_c
def test_sqlalchemy_do_get_in_c_leaves_only_a_pool_that_may_block_to_python() -> None:
    """SQLALCHEMY_GET: QueuePool's own _do_get while the pool cannot block (no overflow limit,
    or below it); the Python hook at the limit, and whenever the counters are not ints."""
    from sqlalchemy.pool import QueuePool

    from poolwatch.adapters._base import hook

    speedups = _native.speedups
    assert speedups is not None
    seen: list[str] = []

    class Pool:
        def __init__(self, max_overflow: Any, overflow: Any) -> None:
            self._max_overflow, self._overflow = max_overflow, overflow

        def _do_get(self) -> str:
            seen.append("original")
            return "entry"

    original = Pool._do_get

    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append("slow")
        return original(self, *args, **kwargs)

    Pool._do_get = hook(  # type: ignore[method-assign]
        original, slow, Tracker(), "test.where", "sqlalchemy_get"
    )
    cases = {
        (-1, 7): "original",  # no limit: never waits
        (2, -3): "original",  # below the limit
        (2, 1): "original",
        (2, 2): "slow",  # at the limit: may wait, may time out
        (0, 0): "slow",
        (2, 3): "slow",
        (2, None): "slow",  # not what QueuePool keeps: the Python hook looks
        (2**70, 0): "slow",  # too large for a C long
    }
    for (max_overflow, overflow), path in cases.items():
        seen.clear()
        assert Pool(max_overflow, overflow)._do_get() == "entry"
        assert seen == [path, "original"][: 1 if path == "original" else 2]
    seen.clear()
    del (pool := Pool(2, 0))._overflow  # no such attribute: the Python hook
    assert pool._do_get() == "entry"
    assert seen == ["slow", "original"]

    import poolwatch

    previous = poolwatch.get_tracker()
    poolwatch.instrument("sqlalchemy", tracker=Tracker())
    try:
        assert type(vars(QueuePool)["_do_get"]) is speedups.Hook
    finally:
        poolwatch.instrument(tracker=previous)
