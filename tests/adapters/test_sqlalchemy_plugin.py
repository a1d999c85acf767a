"""The pytest plugin on real SQLAlchemy test files (pytester): no extra step, sync and async."""

from __future__ import annotations

import pytest

INNER = pytest.mark.allow_leaks(reason="the inner pytester session leaks on purpose")
INI = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"

SYNC_TESTS = """
import gc
import pytest
from sqlalchemy import create_engine, text

@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", pool_size=2, max_overflow=0,
                           pool_timeout=5)
    yield engine
    engine.dispose()

def open_report(engine):
    conn = engine.connect()
    conn.execute(text("select 1"))
    return conn

def count_rows(engine):
    conn = engine.connect()
    return conn.execute(text("select 1")).scalar()

def test_kept(engine):
    kept = open_report(engine)

def test_dropped(engine):
    assert count_rows(engine) == 1
    gc.collect()

def test_clean(engine):
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
"""

ASYNC_TESTS = """
import asyncio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

async def open_report(engine):
    conn = await engine.connect()
    await conn.execute(text("select 1"))
    return conn

@pytest.mark.asyncio
async def test_async_kept(tmp_path):
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", pool_size=1,
                                 max_overflow=0, pool_timeout=5)
    conn = await asyncio.create_task(open_report(engine), name="report-task")
    # the test ends with the connection still checked out

def test_asyncio_run_kept(tmp_path):
    async def main():
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", pool_size=1,
                                     max_overflow=0, pool_timeout=5)
        return await asyncio.create_task(open_report(engine), name="run-task")
    kept = asyncio.run(main())

@pytest.mark.asyncio
async def test_async_clean(tmp_path):
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", pool_size=1,
                                 max_overflow=0, pool_timeout=5)
    async with engine.connect() as conn:
        await conn.execute(text("select 1"))
    await engine.dispose()
"""


def line_of(source: str, text: str) -> int:
    """The line number of ``text`` in a file written by makepyfile (which strips the source)."""
    return next(n for n, line in enumerate(source.strip().splitlines(), 1) if text in line)


@INNER
def test_plugin_fails_kept_and_gc_returned_connections(pytester: pytest.Pytester) -> None:
    """A kept engine.connect() and a GC-returned one fail their tests; a `with` block passes."""
    pytester.makeini(INI)
    pytester.makepyfile(test_db=SYNC_TESTS)
    # In a subprocess: the connections the inner tests leak are collected there, not later in
    # an unrelated outer test.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=2)
    kept_line = line_of(SYNC_TESTS, "conn = engine.connect()")
    dropped_line = next(
        n
        for n, line in enumerate(SYNC_TESTS.strip().splitlines(), 1)
        if "conn = engine.connect()" in line and n > kept_line
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_kept*",
            "*poolwatch: 1 connection leaked in test_db.py::test_kept:",
            f"*sqlalchemy sqlite+pysqlite:///*app.db: test_db.py:{kept_line} in open_report",
            "*leased * s ago on thread MainThread*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_dropped*",
            "*poolwatch: 1 connection leaked in test_db.py::test_dropped:",
            f"*sqlalchemy sqlite+pysqlite:///*app.db: test_db.py:{dropped_line} in count_rows",
            "*returned only by the garbage collector; leased * s ago on thread MainThread*"
            "never closed: the garbage collector returned it to the pool*",
        ]
    )


@INNER
def test_plugin_covers_async_engines_with_pytest_asyncio_and_asyncio_run(
    pytester: pytest.Pytester,
) -> None:
    """Async engine leaks fail their tests under pytest-asyncio and asyncio.run, naming the task."""
    pytester.makeini(INI)
    pytester.makepyfile(test_adb=ASYNC_TESTS)
    # The dropped AsyncConnections make SQLAlchemy warn from its GC finalizer: not our subject,
    # and in a subprocess so that they are collected there, not in a later outer test.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "ignore::sqlalchemy.exc.SAWarning"
    )
    result.assert_outcomes(passed=3, errors=2)
    line = line_of(ASYNC_TESTS, "conn = await engine.connect()")
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_async_kept*",
            f"*sqlalchemy sqlite+aiosqlite:///*a.db: test_adb.py:{line} in open_report",
            "*on task report-task on thread MainThread*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_asyncio_run_kept*",
            f"*sqlalchemy sqlite+aiosqlite:///*b.db: test_adb.py:{line} in open_report",
            "*on task run-task on thread MainThread*",
        ]
    )
