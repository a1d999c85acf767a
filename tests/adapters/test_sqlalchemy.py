"""SQLAlchemy engines on real SQLite files: what poolwatch reports for each way to hold one.

Every engine is a real ``QueuePool`` (SQLAlchemy 2.x pools file databases) with ``pool_size``,
``max_overflow`` and ``timeout`` set explicitly; asyncio engines use aiosqlite.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SAWarning
from sqlalchemy.exc import TimeoutError as QueuePoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool, Pool, QueuePool

import poolwatch
from poolwatch import Tracker, _native
from poolwatch._models import UNKNOWN_CALLSITE
from poolwatch.adapters._sqlalchemy import SQLAlchemyAdapter, pool_name

from .. import _wrapper
from .._helpers import in_threads, line_after, pool_of, wait_for_waiter

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")
EVENTS = ("checkout", "checkin", "detach")


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Engines on a real SQLite file, each disposed after the test."""
    engines: list[Engine] = []

    def make(pool_size: int = 2, max_overflow: int = 0, timeout: float = 5.0, **kw: Any) -> Engine:
        engine = create_engine(
            f"sqlite:///{tmp_path / 'app.db'}",
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=timeout,
            **kw,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def async_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"


def take(engine: Engine) -> Connection:
    return engine.connect()


def take_and_drop(engine: Engine) -> None:
    conn = engine.connect()
    conn.execute(text("select 1"))


def test_kept_connection_is_a_lease_naming_its_line(
    tracker: Tracker, make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """engine.connect() kept open holds a lease at the line that took it, until closed."""
    engine = make_engine(pool_size=2, max_overflow=1)
    conn = take(engine)
    pool = pool_of(tracker)
    (lease,) = pool.leases
    assert lease.state == "leased"
    assert lease.callsite == line_after(take)
    assert lease.thread_name == threading.current_thread().name
    assert repr(pool) == (
        f"<Pool sqlalchemy sqlite+pysqlite:///{tmp_path / 'app.db'} "
        "[leased 1 | idle 0 | waiting 0 | max 3]>"
    )
    conn.close()
    pool = pool_of(tracker)
    assert (pool.leased, pool.idle, pool.checkouts, pool.checkins) == (0, 1, 1, 1)
    assert pool.confirmed_leaks == 0


def test_with_connect_and_session_are_clean(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """`with engine.connect()`, `engine.begin()` and a closed Session leave nothing leased."""
    engine = make_engine()
    with poolwatch.no_leaks(tracker=tracker):
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        with engine.begin() as conn:
            conn.execute(text("create table if not exists t (x integer)"))
        with Session(engine) as session:
            session.execute(text("select 1"))
    pool = pool_of(tracker)
    assert (pool.leased, pool.checkouts, pool.checkins, pool.confirmed_leaks) == (0, 3, 3, 0)


@LEAK
def test_kept_connection_fails_no_leaks_naming_the_line(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """no_leaks() raises LeakError for a connection still checked out, naming its line."""
    engine = make_engine()
    with pytest.raises(poolwatch.LeakError) as info, poolwatch.no_leaks(tracker=tracker):
        conn = take(engine)
    assert "1 connection leaked inside no_leaks()" in str(info.value)
    site = line_after(take)
    assert f"{Path(site.filename).name}:{site.lineno} in take" in str(info.value)
    conn.close()


@LEAK
def test_session_left_open_holds_its_connection(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """An ORM Session that ran a query keeps a lease until it is closed."""
    engine = make_engine()
    session = Session(engine)
    session.execute(text("select 1"))
    (lease,) = pool_of(tracker).leases
    assert lease.callsite.function == "test_session_left_open_holds_its_connection"
    session.close()
    assert pool_of(tracker).leased == 0


@LEAK
def test_dropped_connection_is_returned_only_by_the_cyclic_gc(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """A dropped Connection stays leased until the collector runs; then it is gc_returned."""
    engine = make_engine(pool_size=1)
    gc.collect()
    gc.disable()
    try:
        take_and_drop(engine)
        (lease,) = pool_of(tracker).leases
        assert lease.state == "leased"  # dropped, but nothing has given the slot back
        gc.collect()
    finally:
        gc.enable()
    pool = pool_of(tracker)
    assert (pool.leased, pool.idle, pool.confirmed_leaks) == (0, 1, 1)
    assert dict(pool.leaks_by_callsite) == {line_after(take_and_drop): 1}
    (event_,) = [e for e in tracker.snapshot().events if e.kind == "leak.confirmed"]
    assert event_.lease is not None
    assert event_.lease.state == "gc_returned"
    assert event_.lease.callsite == line_after(take_and_drop)
    assert "garbage collector returned it to the pool" in event_.message
    assert str(line_after(take_and_drop)) in event_.message
    (reported,) = tracker.leaks_since(0)
    assert reported.state == "gc_returned"
    assert "returned only by the garbage collector" in reported.describe()
    # The slot really came back: the pool of one hands out a connection at once.
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1


def query_and_drop_session(engine: Engine) -> int:
    session = Session(engine)
    return int(session.execute(text("select 1")).scalar_one())


@LEAK
def test_dropped_session_is_gc_returned_at_the_query_line(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """A Session dropped without close() gives its connection back only through the GC."""
    engine = make_engine(pool_size=1)
    gc.collect()
    gc.disable()
    try:
        assert query_and_drop_session(engine) == 1
        assert pool_of(tracker).leased == 1
        gc.collect()
    finally:
        gc.enable()
    (lease,) = tracker.leaks_since(0)
    assert (lease.state, lease.callsite) == ("gc_returned", line_after(query_and_drop_session, 2))


@LEAK
def test_gc_return_inside_the_trackers_lock_does_not_deadlock(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """The collector may return a connection while this thread holds the tracker's lock."""
    engine = make_engine(pool_size=1)
    gc.collect()
    gc.disable()
    finished = threading.Event()

    def collect_holding_the_lock() -> None:
        # What happens when an allocation inside a tracker critical section triggers the GC.
        with tracker._lock:
            gc.collect()
        finished.set()

    try:
        take_and_drop(engine)
        worker = threading.Thread(target=collect_holding_the_lock, daemon=True)
        worker.start()
        worker.join(10)
    finally:
        gc.enable()
    assert finished.is_set(), "the GC return deadlocked on the tracker's lock"
    (lease,) = tracker.leaks_since(0)
    assert (lease.state, lease.callsite) == ("gc_returned", line_after(take_and_drop))


@LEAK
def test_queuepool_timeout_is_counted_and_carries_a_diagnosis(
    tracker: Tracker, make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """QueuePool's TimeoutError is an exhaustion event and its notes name the holders."""
    engine = make_engine(pool_size=1, max_overflow=1, timeout=0.05)
    kept = [take(engine), take(engine)]
    with pytest.raises(QueuePoolTimeout) as info:
        engine.connect()
    pool = pool_of(tracker)
    assert pool.exhaustions == 1
    notes = "\n".join(info.value.__notes__)
    assert (
        f"<Pool sqlalchemy sqlite+pysqlite:///{tmp_path / 'app.db'} "
        "[leased 2 | idle 0 | waiting 0 | max 2]> is exhausted." in notes
    )
    site = line_after(take)
    assert f"2 x {site}" in notes
    (exhausted,) = [e for e in tracker.snapshot().events if e.kind == "exhausted"]
    assert exhausted.message == notes
    assert "QueuePool limit of size 1 overflow 1 reached" in str(info.value)
    for conn in kept:
        conn.close()


@LEAK
def test_thread_blocked_on_a_full_pool_is_visible_as_waiting(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """A thread blocked in engine.connect() shows as a waiter with its thread and line."""
    engine = make_engine(pool_size=1, timeout=10)
    held = engine.connect()
    done = threading.Event()

    def blocked_caller() -> None:
        with engine.connect():
            done.set()

    worker = threading.Thread(target=blocked_caller, name="blocked-worker")
    worker.start()
    pool = wait_for_waiter(tracker)
    assert pool.waiting == 1
    (waiter,) = pool.waiters
    assert waiter.thread_name == "blocked-worker"
    assert waiter.callsite.function.endswith("<locals>.blocked_caller")
    assert not done.is_set()
    held.close()
    worker.join(10)
    assert done.is_set()
    pool = pool_of(tracker)
    assert (pool.waiting, pool.leased, pool.exhaustions) == (0, 0, 0)


@pytest.mark.parametrize(
    ("pool_size", "max_overflow", "expected_max"), [(2, 3, 5), (3, 0, 3), (0, 0, None)]
)
def test_stats_come_from_the_pool_itself(
    tracker: Tracker,
    make_engine: Callable[..., Engine],
    pool_size: int,
    max_overflow: int,
    expected_max: int | None,
) -> None:
    """leased/idle/max agree with checkedout(), checkedin() and size() + max_overflow."""
    engine = make_engine(pool_size=pool_size, max_overflow=max_overflow)
    conns = [engine.connect() for _ in range(3)]
    conns.pop().close()
    pool = pool_of(tracker)
    qp = engine.pool
    assert isinstance(qp, QueuePool)
    assert pool.leased == qp.checkedout() == 2
    assert pool.idle == qp.checkedin()
    assert pool.max == expected_max
    for conn in conns:
        conn.close()
    assert pool_of(tracker).leased == qp.checkedout() == 0


def test_null_pool_is_tracked_without_a_limit(tracker: Tracker, tmp_path: Path) -> None:
    """A NullPool engine is tracked too: no max, never idle."""
    engine = create_engine(f"sqlite:///{tmp_path / 'null.db'}", poolclass=NullPool)
    conn = engine.connect()
    pool = pool_of(tracker)
    assert (pool.leased, pool.idle, pool.max) == (1, 0, None)
    conn.close()
    assert pool_of(tracker).leased == 0
    engine.dispose()


def test_engine_created_before_instrument_is_covered(tmp_path: Path) -> None:
    """Class-level listeners reach pools that existed before instrument()."""
    was_installed = "sqlalchemy" in poolwatch.instrumented()
    previous = poolwatch.get_tracker()
    poolwatch.uninstrument("sqlalchemy")
    engine = create_engine(f"sqlite:///{tmp_path / 'early.db'}", pool_size=1, max_overflow=0)
    engine.connect().close()
    fresh = Tracker()
    poolwatch.instrument(tracker=fresh)
    try:
        conn = engine.connect()
        assert pool_of(fresh).leased == 1
        conn.close()
        assert pool_of(fresh).checkins == 1
    finally:
        poolwatch.instrument(tracker=previous)
        if not was_installed:
            poolwatch.uninstrument("sqlalchemy")
        engine.dispose()


def _listeners(engine: Engine) -> dict[str, tuple[list[Any], ...]]:
    dispatch = Pool.dispatch
    return {
        name: (
            list(getattr(dispatch, name)._clslevel.get(Pool, ())),
            list(getattr(dispatch, name)._clslevel.get(QueuePool, ())),
            list(getattr(engine.pool.dispatch, name)),
        )
        for name in EVENTS
    }


def test_uninstrument_removes_every_listener_and_restores_queuepool(tmp_path: Path) -> None:
    """After uninstrument() no poolwatch listener is left and QueuePool is as it was."""
    was_installed = "sqlalchemy" in poolwatch.instrumented()
    poolwatch.uninstrument("sqlalchemy")
    engine = create_engine(f"sqlite:///{tmp_path / 'plain.db'}", pool_size=1, max_overflow=0)
    engine.connect().close()
    plain_listeners = _listeners(engine)
    plain_class = dict(vars(QueuePool))
    poolwatch.instrument("sqlalchemy")
    installed = _listeners(engine)
    assert all(
        len(installed[n][i]) == len(plain_listeners[n][i]) + 1 for n in EVENTS for i in (0, 2)
    )
    assert QueuePool._do_get is not plain_class["_do_get"]
    poolwatch.uninstrument("sqlalchemy")
    assert _listeners(engine) == plain_listeners
    assert dict(vars(QueuePool)) == plain_class
    for name in EVENTS:
        for listener in getattr(Pool.dispatch, name)._clslevel.get(Pool, ()):
            assert "poolwatch" not in getattr(listener, "__module__", "")
    if was_installed:
        poolwatch.instrument("sqlalchemy")
    engine.dispose()


def test_version_outside_tested_range_warns_and_still_works(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untested SQLAlchemy version gives a PoolwatchWarning, and leases are still tracked."""
    was_installed = "sqlalchemy" in poolwatch.instrumented()
    poolwatch.uninstrument("sqlalchemy")
    monkeypatch.setattr(SQLAlchemyAdapter, "tested", ((0, 1), (0, 2)))
    expected = f"tested with SQLAlchemy 0.1 to before 0.2; {sqlalchemy.__version__} is installed"
    try:
        with pytest.warns(poolwatch.PoolwatchWarning, match=expected):
            poolwatch.instrument("sqlalchemy")
        engine = make_engine()
        before = poolwatch.get_tracker().seq
        with engine.connect():
            assert poolwatch.get_tracker().seq == before + 1
    finally:
        poolwatch.uninstrument("sqlalchemy")
        monkeypatch.undo()
        if was_installed:
            poolwatch.instrument("sqlalchemy")


@pytest.mark.parametrize("leaks", [0, 13])
@LEAK
def test_exact_counts_under_8_threads(
    tracker: Tracker, make_engine: Callable[..., Engine], leaks: int
) -> None:
    """8 threads x 250 checkouts through one engine: leased equals the connections kept."""
    engine = make_engine(pool_size=8, max_overflow=16, timeout=30)
    leak_at = set(range(0, 2000, 2000 // leaks)[:leaks]) if leaks else set()

    def step(n: int) -> Connection | None:
        conn = engine.connect()
        conn.execute(text("select 1"))
        if n in leak_at:
            return conn
        conn.close()
        return None

    kept = in_threads(8, 250, step)
    pool = pool_of(tracker)
    assert pool.leased == len(kept) == leaks
    assert (pool.checkouts, pool.checkins) == (2000, 2000 - leaks)
    assert {lease.callsite.function.rsplit(".", 1)[-1] for lease in pool.leases} <= {"step"}
    for conn in kept:
        conn.close()
    assert pool_of(tracker).leased == 0


@LEAK
def test_fault_in_the_tracker_never_reaches_the_query(
    make_engine: Callable[..., Engine], faulty_tracker: Tracker
) -> None:
    """A tracker whose clock raises: queries still run and the faults are counted."""
    engine = make_engine()
    for _ in range(5):
        with engine.connect() as conn:
            assert conn.execute(text("select 41 + 1")).scalar() == 42
    assert faulty_tracker.internal_errors["sqlalchemy.checkout"] >= 5


def test_pool_name_keeps_no_query_string(tracker: Tracker, tmp_path: Path) -> None:
    """A SQLite URI file name's query string never reaches the pool name."""
    path = tmp_path / "uri.db"
    engine = create_engine(
        f"sqlite:///file:{path}?mode=rwc&vfs=unix-none&uri=true", pool_size=1, max_overflow=0
    )
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    assert pool_of(tracker).name == f"sqlite+pysqlite:///file:{path}"
    engine.dispose()


def test_postgresql_pool_name_has_no_user_password_or_query() -> None:
    """A psycopg engine's pool is named by host, port and database only."""
    engine = create_engine(
        "postgresql+psycopg://alice:hunter2pass@db.internal:6432/app"
        "?application_name=s3cr3tq&sslmode=disable&options=-csearch_path%3Dtok",
        pool_size=1,
        max_overflow=0,
    )
    name = pool_name(engine.pool)
    assert name == "postgresql+psycopg://db.internal:6432/app"
    for secret in ("alice", "hunter2pass", "s3cr3tq", "sslmode", "tok", "?"):
        assert secret not in name
    engine.dispose()


def test_invalidated_and_detached_connections_end_their_leases(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """An invalidated connection is discarded and a detached one leaves the pool: no leak."""
    engine = make_engine(pool_size=2)
    conn = engine.connect()
    conn.invalidate()
    conn.close()
    detached = engine.connect()
    detached.detach()
    detached.close()  # closes the DBAPI connection itself: it is no longer pooled
    pool = pool_of(tracker)
    assert (pool.leased, pool.checkouts, pool.checkins, pool.confirmed_leaks) == (0, 2, 2, 0)
    assert tracker.leaks_since(0) == []


def test_custom_creator_is_named_by_dialect(tracker: Tracker, tmp_path: Path) -> None:
    """An engine with creator= (no connect arguments to read) is named by its dialect."""
    import sqlite3

    path = tmp_path / "creator.db"
    engine = create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(path, check_same_thread=False),
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
    )
    with engine.connect():
        pass
    assert pool_of(tracker).name == "sqlite+pysqlite (custom creator)"
    engine.dispose()


# -- asyncio engines ------------------------------------------------------------------------


async def take_async(engine: AsyncEngine) -> AsyncConnection:
    return await engine.connect()


async def take_and_drop_async(engine: AsyncEngine) -> None:
    conn = await engine.connect()
    await conn.execute(text("select 1"))


@pytest.mark.asyncio
@LEAK
async def test_async_kept_connection_names_its_line_and_task(
    tracker: Tracker, tmp_path: Path
) -> None:
    """await engine.connect() kept: the lease names the coroutine's line and the task."""
    engine = create_async_engine(async_url(tmp_path), pool_size=2, max_overflow=0, pool_timeout=5)
    try:
        conn = await asyncio.create_task(take_async(engine), name="db-worker")
        pool = pool_of(tracker)
        (lease,) = pool.leases
        assert lease.callsite == line_after(take_async)
        assert lease.task_name == "db-worker"
        assert pool.name == f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"
        assert (pool.leased, pool.max) == (1, 2)
        await conn.close()
        assert pool_of(tracker).leased == 0
    finally:
        await engine.dispose()


@pytest.mark.asyncio
@LEAK
async def test_async_call_site_moves_past_a_wrapper_declared_after_its_first_use(
    tracker: Tracker, tmp_path: Path
) -> None:
    """A company wrapper declared a library after an asyncio engine's checkout went through
    it: the next lease names the wrapper's caller (the greenlet walk forgets what it knew)."""
    engine = create_async_engine(async_url(tmp_path), pool_size=2, max_overflow=0, pool_timeout=5)
    try:
        first = await _wrapper.connect_async(engine)
        tracker.callsites.add_library_modules(["tests._wrapper"])
        second = await _wrapper.connect_async(engine)
        sites = [lease.callsite for lease in pool_of(tracker).leases]
        assert [site.filename for site in sites] == [_wrapper.__file__, __file__]
        await first.close()
        await second.close()
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_async_with_connect_is_clean(tracker: Tracker, tmp_path: Path) -> None:
    """async with engine.connect() / engine.begin(): nothing leased, async no_leaks passes."""
    engine = create_async_engine(async_url(tmp_path), pool_size=2, max_overflow=0, pool_timeout=5)
    try:
        async with poolwatch.no_leaks(tracker=tracker):
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
            async with engine.begin() as conn:
                await conn.execute(text("create table if not exists t (x integer)"))
        pool = pool_of(tracker)
        assert (pool.leased, pool.checkouts, pool.checkins, pool.idle) == (0, 2, 2, 1)
    finally:
        await engine.dispose()


@pytest.mark.asyncio
@LEAK
async def test_async_dropped_connection_is_terminated_by_gc_and_reported(
    tracker: Tracker, tmp_path: Path
) -> None:
    """A dropped AsyncConnection is detached by the GC (SQLAlchemy warns); reported at its line."""
    engine = create_async_engine(async_url(tmp_path), pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        # SQLAlchemy warns when the collector cleans it up (at once or at gc.collect()).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SAWarning)
            await take_and_drop_async(engine)
            gc.collect()
        assert any("garbage collector is trying" in str(w.message) for w in caught)
        pool = pool_of(tracker)
        assert (pool.leased, pool.confirmed_leaks) == (0, 1)
        (lease,) = tracker.leaks_since(0)
        assert lease.state == "gc_returned"
        assert lease.callsite == line_after(take_and_drop_async)
        assert lease.note is not None
        assert "detached it from the pool" in lease.note
        async with engine.connect() as conn:  # the slot came back
            assert (await conn.execute(text("select 1"))).scalar() == 1
    finally:
        await engine.dispose()


@pytest.mark.asyncio
@LEAK
async def test_async_queue_pool_timeout_and_waiters(tracker: Tracker, tmp_path: Path) -> None:
    """AsyncAdaptedQueuePool: waiting tasks are counted and its TimeoutError is diagnosed."""
    engine = create_async_engine(async_url(tmp_path), pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        held = await take_async(engine)
        # A task whose coroutine is SQLAlchemy's own: no user line asked for this connection.
        waiter = asyncio.create_task(engine.connect().start(), name="waiter")
        deadline = time.monotonic() + 5
        while pool_of(tracker).waiting == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert pool_of(tracker).waiting == 1
        await held.close()
        second = await asyncio.wait_for(waiter, 5)
        assert pool_of(tracker).waiting == 0
        (lease,) = pool_of(tracker).leases
        assert lease.task_name == "waiter"
        assert lease.callsite == UNKNOWN_CALLSITE  # not the line that started the event loop
        short = create_async_engine(
            async_url(tmp_path), pool_size=1, max_overflow=0, pool_timeout=0.05
        )
        try:
            kept = await take_async(short)
            with pytest.raises(QueuePoolTimeout) as info:
                await short.connect()
            notes = "\n".join(info.value.__notes__)
            assert "[leased 1 | idle 0 | waiting 0 | max 1]> is exhausted." in notes
            assert f"1 x {line_after(take_async)}" in notes
            await kept.close()
        finally:
            await short.dispose()
        await second.close()
    finally:
        await engine.dispose()


def test_task_running_sqlalchemys_own_coroutine_is_not_blamed_on_asyncio_run(
    tracker: Tracker, tmp_path: Path
) -> None:
    """A task made from `engine.connect().start()`: no call site rather than asyncio.run's."""

    async def main() -> poolwatch.Lease:
        engine = create_async_engine(async_url(tmp_path), pool_size=1, max_overflow=0)
        try:
            conn = await asyncio.create_task(engine.connect().start(), name="bare")
            (lease,) = pool_of(tracker).leases
            await conn.close()
            return lease
        finally:
            await engine.dispose()

    lease = asyncio.run(main())
    assert (lease.callsite, lease.task_name) == (UNKNOWN_CALLSITE, "bare")


@pytest.mark.parametrize("leaks", [0, 7])
@LEAK
def test_exact_counts_for_100_tasks_in_asyncio_run(
    tracker: Tracker, tmp_path: Path, leaks: int
) -> None:
    """asyncio.run inside a test, 100 concurrent tasks: leased equals the connections kept."""

    async def main() -> tuple[int, int, int, set[str | None]]:
        engine = create_async_engine(
            async_url(tmp_path), pool_size=5, max_overflow=10, pool_timeout=30
        )
        kept: list[AsyncConnection] = []

        async def one(i: int) -> None:
            conn = await engine.connect()
            await conn.execute(text("select 1"))
            if i < leaks:
                kept.append(conn)
            else:
                await conn.close()

        try:
            await asyncio.gather(*(asyncio.create_task(one(i), name=f"t{i}") for i in range(100)))
            pool = pool_of(tracker)
            tasks = {lease.task_name for lease in pool.leases}
            result = (pool.leased, pool.checkouts, pool.checkins, tasks)
            for conn in kept:
                await conn.close()
            assert pool_of(tracker).leased == 0
            return result
        finally:
            await engine.dispose()

    leased, checkouts, checkins, tasks = asyncio.run(main())
    assert (leased, checkouts, checkins) == (leaks, 100, 100 - leaks)
    assert tasks == {f"t{i}" for i in range(leaks)}


def test_listeners_are_on_the_pool_class() -> None:
    """instrument() listens on sqlalchemy.pool.Pool itself, so every subclass is covered."""
    was_installed = "sqlalchemy" in poolwatch.instrumented()
    poolwatch.instrument("sqlalchemy")
    try:
        for name in EVENTS:
            found = [
                fn
                for fn in getattr(Pool.dispatch, name)._clslevel.get(Pool, ())
                if fn.__qualname__.startswith("SQLAlchemyAdapter._install")
            ]
            assert len(found) == 1
            assert event.contains(Pool, name, found[0])
            # checkout and checkin run on every checkout: C hooks where this build has them
            if name in ("checkout", "checkin") and _native.speedups is not None:
                assert type(found[0]) is _native.speedups.Hook
    finally:
        if not was_installed:
            poolwatch.uninstrument("sqlalchemy")
