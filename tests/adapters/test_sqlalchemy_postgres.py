"""The key SQLAlchemy cases again on a real PostgreSQL server (psycopg 3, sync and asyncio).

The server is Debian's PostgreSQL on 127.0.0.1 (``tests/_postgres.py``). Skipped when no
PostgreSQL server is installed.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SAWarning
from sqlalchemy.exc import TimeoutError as QueuePoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import poolwatch
from poolwatch import Tracker

from .._helpers import line_after, pool_of
from .._postgres import PostgresUnavailable, running_postgres
from .test_sqlalchemy import take, take_and_drop, take_and_drop_async, take_async

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")
USER = "pw_alice"
PASSWORD = "hunter2pass"
QUERY = "application_name=s3cr3tq&connect_timeout=5"
SECRETS = (USER, PASSWORD, "s3cr3tq", "application_name", "connect_timeout")


@dataclass(frozen=True)
class Postgres:
    port: int

    def url(self, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres?{QUERY}"

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}/postgres"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL on 127.0.0.1 with password auth, in a temp dir, stopped afterwards."""
    try:
        with running_postgres(USER, PASSWORD) as port:
            yield Postgres(port)
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def make_engine(postgres: Postgres) -> Iterator[Callable[..., Engine]]:
    """Sync psycopg engines with explicit QueuePool settings, disposed after the test."""
    engines: list[Engine] = []

    def make(pool_size: int = 2, max_overflow: int = 0, timeout: float = 5.0) -> Engine:
        engine = create_engine(
            postgres.url(), pool_size=pool_size, max_overflow=max_overflow, pool_timeout=timeout
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@LEAK
def test_kept_connection_reported_and_with_block_clean(
    tracker: Tracker, make_engine: Callable[..., Engine], postgres: Postgres
) -> None:
    """A kept engine.connect() is leased at its line; `with engine.connect()` leaves nothing."""
    engine = make_engine(pool_size=2, max_overflow=1)
    with engine.connect() as conn:
        assert conn.execute(text("select current_user")).scalar() == USER
    assert pool_of(tracker).leased == 0
    kept = take(engine)
    pool = pool_of(tracker)
    assert pool.name == f"postgresql+psycopg://{postgres.name}"
    # The connection the with block returned is the one handed out again.
    assert repr(pool).endswith("[leased 1 | idle 0 | waiting 0 | max 3]>")
    (lease,) = pool.leases
    assert lease.callsite == line_after(take)
    kept.close()
    assert pool_of(tracker).leased == 0


@LEAK
def test_timeout_diagnosis_and_reports_hold_no_secret(
    tracker: Tracker, make_engine: Callable[..., Engine], postgres: Postgres
) -> None:
    """QueuePool's timeout is diagnosed; no report carries the user, password or query."""
    engine = make_engine(pool_size=1, max_overflow=0, timeout=0.05)
    held = take(engine)
    with pytest.raises(QueuePoolTimeout) as info:
        engine.connect()
    notes = "\n".join(info.value.__notes__)
    assert f"<Pool sqlalchemy postgresql+psycopg://{postgres.name} [leased 1 |" in notes
    assert f"1 x {line_after(take)}" in notes
    assert pool_of(tracker).exhaustions == 1
    held.close()
    with pytest.raises(poolwatch.LeakError) as leak_info, poolwatch.no_leaks(tracker=tracker):
        again = take(engine)
    texts = [
        notes,
        str(leak_info.value),
        repr(tracker.snapshot().pools),
        *(lease.describe() for lease in tracker.snapshot(sockets=True).leases),
        *(event.message for event in tracker.snapshot().events),
    ]
    blob = "\n".join(texts)
    for secret in SECRETS:
        assert secret not in blob
    again.close()


@LEAK
def test_dropped_connection_is_gc_returned_at_its_line(
    tracker: Tracker, make_engine: Callable[..., Engine]
) -> None:
    """A dropped psycopg connection comes back only through the collector, reported so."""
    engine = make_engine(pool_size=1)
    gc.collect()
    gc.disable()
    try:
        take_and_drop(engine)
        assert pool_of(tracker).leases[0].state == "leased"
        gc.collect()
    finally:
        gc.enable()
    (lease,) = tracker.leaks_since(0)
    assert (lease.state, lease.callsite) == ("gc_returned", line_after(take_and_drop))
    pool = pool_of(tracker)
    assert (pool.leased, pool.idle, pool.confirmed_leaks) == (0, 1, 1)


@pytest.mark.asyncio
@LEAK
async def test_async_engine_kept_dropped_and_clean(tracker: Tracker, postgres: Postgres) -> None:
    """psycopg async: kept names line and task, dropped is gc_returned, async with is clean."""
    engine = create_async_engine(postgres.url(), pool_size=2, max_overflow=0, pool_timeout=5)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select 1"))).scalar() == 1
        kept = await asyncio.create_task(take_async(engine), name="pg-task")
        pool = pool_of(tracker)
        assert pool.name == f"postgresql+psycopg://{postgres.name}"
        (lease,) = pool.leases
        assert (lease.callsite, lease.task_name) == (line_after(take_async), "pg-task")
        await kept.close()
        # The collector cannot close an asyncio connection: SQLAlchemy warns and drops it, and
        # psycopg warns that its connection was deleted while open.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await take_and_drop_async(engine)
            gc.collect()
        assert any(
            w.category is SAWarning and "garbage collector is trying" in str(w.message)
            for w in caught
        )
        (dropped,) = tracker.leaks_since(0)
        assert dropped.state == "gc_returned"
        assert dropped.callsite == line_after(take_and_drop_async)
        assert pool_of(tracker).leased == 0
    finally:
        await engine.dispose()


@pytest.mark.parametrize("leaks", [0, 5])
@LEAK
def test_exact_counts_for_60_tasks_in_asyncio_run(
    tracker: Tracker, postgres: Postgres, leaks: int
) -> None:
    """asyncio.run with 60 concurrent tasks on PostgreSQL: leased equals connections kept."""

    async def main() -> tuple[int, int, int]:
        engine = create_async_engine(postgres.url(), pool_size=5, max_overflow=10, pool_timeout=30)
        kept: list[AsyncConnection] = []

        async def one(i: int) -> None:
            conn = await engine.connect()
            await conn.execute(text("select pg_sleep(0.001)"))
            if i < leaks:
                kept.append(conn)
            else:
                await conn.close()

        try:
            await asyncio.gather(*(one(i) for i in range(60)))
            pool = pool_of(tracker)
            result = (pool.leased, pool.checkouts, pool.checkins)
            for conn in kept:
                await conn.close()
            return result
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == (leaks, 60, 60 - leaks)
