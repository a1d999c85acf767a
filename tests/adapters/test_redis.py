"""redis-py against a real redis-server on 127.0.0.1: what poolwatch reports for each pool."""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis.connection import BlockingConnectionPool, ConnectionPool

import poolwatch
from poolwatch import Tracker
from poolwatch.adapters._redis import pool_name

from .._helpers import in_threads, line_after, pool_of, wait_for_waiter

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server on 127.0.0.1 on a free port, no persistence, stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--daemonize", "no", "--logfile", str(workdir / "log")]
    proc = subprocess.Popen(
        [binary, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "log").read_text() if (workdir / "log").exists() else ""
                pytest.fail(f"redis-server did not start on port {port}: {log[-500:]}")
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def take(pool: ConnectionPool) -> Any:
    return pool.get_connection()


@LEAK
def test_connection_never_released_is_a_lease_with_line_and_socket(
    tracker: Tracker, redis_port: int
) -> None:
    """get_connection() without release(): leased at its line, joined to its real socket."""
    pool = ConnectionPool(host="127.0.0.1", port=redis_port, max_connections=4)
    conn = take(pool)
    snap = tracker.snapshot(sockets=True)
    (pool_snap,) = snap.pools
    (lease,) = pool_snap.leases
    assert lease.callsite == line_after(take)
    assert lease.socket is not None
    assert lease.socket.peer == ("127.0.0.1", redis_port)
    assert repr(pool_snap) == (
        f"<Pool redis redis://127.0.0.1:{redis_port}/0 [leased 1 | idle 0 | waiting 0 | max 4]>"
    )
    pool.release(conn)
    pool_snap = pool_of(tracker)
    assert (pool_snap.leased, pool_snap.idle, pool_snap.checkouts, pool_snap.checkins) == (
        0,
        1,
        1,
        1,
    )
    idle = tracker.idle_sockets()
    assert [info.peer for _, info in idle] == [("127.0.0.1", redis_port)]
    pool.disconnect()


def test_client_commands_pipelines_and_closed_pubsub_are_clean(
    tracker: Tracker, redis_port: int
) -> None:
    """Redis commands, a pipeline and a closed PubSub leave nothing leased."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    with poolwatch.no_leaks(tracker=tracker):
        client.set("poolwatch:k", "v")
        assert client.get("poolwatch:k") == b"v"
        with client.pipeline() as pipe:
            assert pipe.incr("poolwatch:n").get("poolwatch:n").execute()[1] is not None
        pubsub = client.pubsub()
        pubsub.subscribe("poolwatch:channel")
        pubsub.close()
    pool = pool_of(tracker)
    assert pool.leased == 0
    assert pool.checkouts == pool.checkins >= 4
    client.close()


@LEAK
def test_open_pubsub_holds_its_connection(tracker: Tracker, redis_port: int) -> None:
    """A PubSub subscribed and not closed holds a connection at the subscribe line."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    pubsub = client.pubsub()
    pubsub.subscribe("poolwatch:channel")
    (lease,) = pool_of(tracker).leases
    assert lease.callsite.function == "test_open_pubsub_holds_its_connection"
    pubsub.close()
    assert pool_of(tracker).leased == 0
    client.close()


@LEAK
def test_max_connections_error_is_counted_and_diagnosed(tracker: Tracker, redis_port: int) -> None:
    """ConnectionPool's MaxConnectionsError is an exhaustion and its notes name the holders."""
    pool = ConnectionPool(host="127.0.0.1", port=redis_port, max_connections=2)
    kept = [take(pool), take(pool)]
    with pytest.raises(redis.exceptions.MaxConnectionsError) as info:
        pool.get_connection()
    snap = pool_of(tracker)
    assert snap.exhaustions == 1
    notes = "\n".join(info.value.__notes__)
    assert (
        f"<Pool redis redis://127.0.0.1:{redis_port}/0 [leased 2 | idle 0 | waiting 0 | max 2]>"
        " is exhausted." in notes
    )
    assert f"2 x {line_after(take)}" in notes
    (event,) = [e for e in tracker.snapshot().events if e.kind == "exhausted"]
    assert event.message == notes
    for conn in kept:
        pool.release(conn)
    pool.disconnect()


@LEAK
def test_blocking_pool_timeout_is_counted_and_diagnosed(tracker: Tracker, redis_port: int) -> None:
    """BlockingConnectionPool's 'No connection available.' is an exhaustion with a diagnosis."""
    pool = BlockingConnectionPool(
        host="127.0.0.1", port=redis_port, max_connections=1, timeout=0.05
    )
    kept = take(pool)
    with pytest.raises(redis.exceptions.ConnectionError, match="No connection available") as info:
        pool.get_connection()
    snap = pool_of(tracker)
    assert (snap.exhaustions, snap.waiting, snap.max) == (1, 0, 1)
    notes = "\n".join(info.value.__notes__)
    assert "[leased 1 | idle 0 | waiting 0 | max 1]> is exhausted." in notes
    assert f"1 x {line_after(take)}" in notes
    pool.release(kept)
    pool.disconnect()


def test_refused_connection_is_not_an_exhaustion(tracker: Tracker) -> None:
    """A ConnectionError because nothing listens is not counted as pool exhaustion."""
    port = _free_port()
    pool = BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=1, timeout=1)
    with pytest.raises(redis.exceptions.ConnectionError):
        pool.get_connection()
    snap = pool_of(tracker)
    assert (snap.exhaustions, snap.leased) == (0, 0)
    pool.disconnect()


@LEAK
def test_thread_blocked_on_a_blocking_pool_is_a_waiter(tracker: Tracker, redis_port: int) -> None:
    """A thread waiting in BlockingConnectionPool shows as a waiter with its thread and line."""
    pool = BlockingConnectionPool(host="127.0.0.1", port=redis_port, max_connections=1, timeout=10)
    held = take(pool)
    done = threading.Event()

    def blocked_caller() -> None:
        conn = pool.get_connection()
        pool.release(conn)
        done.set()

    worker = threading.Thread(target=blocked_caller, name="redis-waiter")
    worker.start()
    snap = wait_for_waiter(tracker)
    assert snap.waiting == 1
    (waiter,) = snap.waiters
    assert waiter.thread_name == "redis-waiter"
    assert waiter.callsite.function.endswith("<locals>.blocked_caller")
    pool.release(held)
    worker.join(10)
    assert done.is_set()
    snap = pool_of(tracker)
    assert (snap.waiting, snap.leased, snap.exhaustions) == (0, 0, 0)
    pool.disconnect()


@pytest.mark.parametrize("leaks", [0, 11])
@LEAK
def test_exact_counts_under_8_threads(tracker: Tracker, redis_port: int, leaks: int) -> None:
    """8 threads x 250 commands and checkouts through one pool: leased equals kept, exactly."""
    pool = ConnectionPool(host="127.0.0.1", port=redis_port, max_connections=64)
    client = redis.Redis(connection_pool=pool)
    leak_at = set(range(0, 1000, 1000 // leaks)[:leaks]) if leaks else set()

    def step(n: int) -> Any:
        client.incr("poolwatch:count")
        conn = pool.get_connection()
        if n in leak_at:
            return conn
        pool.release(conn)
        return None

    kept = in_threads(8, 125, step)
    snap = pool_of(tracker)
    assert snap.leased == len(kept) == leaks
    assert (snap.checkouts, snap.checkins) == (2000, 2000 - leaks)
    for conn in kept:
        pool.release(conn)
    assert pool_of(tracker).leased == 0
    client.close()
    pool.disconnect()


def test_uninstrument_restores_both_pool_classes_exactly() -> None:
    """After uninstrument() both pool classes hold exactly the attributes they had before."""
    was_installed = "redis" in poolwatch.instrumented()
    poolwatch.uninstrument("redis")
    plain = {cls: dict(vars(cls)) for cls in (ConnectionPool, BlockingConnectionPool)}
    try:
        poolwatch.instrument("redis")
        assert ConnectionPool.get_connection is not plain[ConnectionPool]["get_connection"]
        assert BlockingConnectionPool.release is not plain[BlockingConnectionPool]["release"]
        poolwatch.uninstrument("redis")
        assert {cls: dict(vars(cls)) for cls in plain} == plain
    finally:
        if was_installed:
            poolwatch.instrument("redis")


def test_pool_name_has_no_credentials(tmp_path: Path) -> None:
    """Pools are named by scheme, host, port and db; never user or password."""
    pool = ConnectionPool.from_url("redis://alice:hunter2pass@127.0.0.1:6380/3?socket_timeout=5")
    assert pool_name(pool) == "redis://127.0.0.1:6380/3"
    secure = ConnectionPool.from_url("rediss://:hunter2pass@cache.internal:6390/0")
    assert pool_name(secure) == "rediss://cache.internal:6390/0"
    unix = ConnectionPool.from_url(f"unix://alice:hunter2pass@{tmp_path / 'r.sock'}?db=2")
    assert pool_name(unix) == f"unix://{tmp_path / 'r.sock'}/2"
    for name in (pool_name(pool), pool_name(secure), pool_name(unix)):
        assert "hunter2pass" not in name
        assert "alice" not in name


@LEAK
def test_fault_in_the_tracker_never_reaches_the_command(
    redis_port: int, faulty_tracker: Tracker
) -> None:
    """A tracker whose clock raises: commands still succeed and the faults are counted."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    for i in range(5):
        client.set("poolwatch:f", i)
        assert client.get("poolwatch:f") == str(i).encode()
    assert faulty_tracker.internal_errors["redis.checkout"] >= 5
    client.close()


@pytest.mark.allow_leaks(reason="the inner pytester session leaks on purpose")
def test_plugin_fails_a_test_that_keeps_a_connection(
    pytester: pytest.Pytester, redis_port: int
) -> None:
    """With no extra step, tests keeping a redis connection (sync or asyncio) fail at the line."""
    source = f"""
import redis

def test_kept():
    pool = redis.ConnectionPool(host="127.0.0.1", port={redis_port})
    conn = pool.get_connection()

def test_clean():
    client = redis.Redis(host="127.0.0.1", port={redis_port})
    client.ping()
    client.close()

async def take(pool):
    return await pool.get_connection()

def test_asyncio_run_kept():
    async def main():
        pool = redis.asyncio.ConnectionPool(host="127.0.0.1", port={redis_port})
        return await asyncio.create_task(take(pool), name="cache-task")
    kept = asyncio.run(main())
"""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_r="import asyncio\nimport redis.asyncio" + source)
    # In a subprocess: the asyncio connections left open are collected (and warn) when it ends.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "ignore::ResourceWarning"
    )
    result.assert_outcomes(passed=3, errors=2)
    lines = ("import asyncio\nimport redis.asyncio" + source).strip().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "conn =" in text)
    async_line = next(n for n, text in enumerate(lines, 1) if "return await pool" in text)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_kept*",
            "*poolwatch: 1 connection leaked in test_r.py::test_kept:",
            f"*redis redis://127.0.0.1:{redis_port}/0: test_r.py:{line} in test_kept",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_asyncio_run_kept*",
            f"*redis redis://127.0.0.1:{redis_port}/0: test_r.py:{async_line} in take",
            "*on task cache-task on thread MainThread*",
        ]
    )


# -- redis.asyncio --------------------------------------------------------------------------


async def take_async(pool: aredis.ConnectionPool) -> Any:
    return await pool.get_connection()


async def take_and_drop_async(pool: aredis.ConnectionPool) -> None:
    conn = await pool.get_connection()
    await conn.send_command("PING")
    assert await conn.read_response() == b"PONG"


@pytest.mark.asyncio
@LEAK
async def test_async_kept_connection_names_line_task_and_socket(
    tracker: Tracker, redis_port: int
) -> None:
    """await pool.get_connection() kept: leased at its line, on its task, joined to its socket."""
    pool = aredis.ConnectionPool(host="127.0.0.1", port=redis_port, max_connections=3)
    conn = await asyncio.create_task(take_async(pool), name="cache-task")
    (lease,) = tracker.snapshot(sockets=True).leases
    assert (lease.callsite, lease.task_name) == (line_after(take_async), "cache-task")
    assert lease.socket is not None
    assert lease.socket.peer == ("127.0.0.1", redis_port)
    assert repr(pool_of(tracker)) == (
        f"<Pool redis redis://127.0.0.1:{redis_port}/0 [leased 1 | idle 0 | waiting 0 | max 3]>"
    )
    await pool.release(conn)
    snap = pool_of(tracker)
    assert (snap.leased, snap.idle, snap.checkouts, snap.checkins) == (0, 1, 1, 1)
    await pool.disconnect()


@pytest.mark.asyncio
async def test_async_client_commands_and_pipeline_are_clean(
    tracker: Tracker, redis_port: int
) -> None:
    """redis.asyncio commands and a pipeline leave nothing leased (async no_leaks passes)."""
    client = aredis.Redis(host="127.0.0.1", port=redis_port)
    async with poolwatch.no_leaks(tracker=tracker):
        await client.set("poolwatch:a", "1")
        assert await client.get("poolwatch:a") == b"1"
        async with client.pipeline() as pipe:
            assert (await pipe.incr("poolwatch:an").get("poolwatch:an").execute())[1]
    snap = pool_of(tracker)
    assert snap.leased == 0
    assert snap.checkouts == snap.checkins >= 3
    await client.aclose()


@pytest.mark.asyncio
@LEAK
async def test_async_dropped_connection_stays_leased_at_its_line(
    tracker: Tracker, redis_port: int
) -> None:
    """A dropped asyncio connection is never collected (the pool holds it): leased for good."""
    pool = aredis.ConnectionPool(host="127.0.0.1", port=redis_port, max_connections=1)
    await take_and_drop_async(pool)
    gc.collect()
    (lease,) = tracker.leaks_since(0)
    assert (lease.state, lease.callsite) == ("leased", line_after(take_and_drop_async))
    with pytest.raises(redis.exceptions.MaxConnectionsError):
        await pool.get_connection()
    await pool.disconnect()  # closes in-use connections too


@pytest.mark.asyncio
@LEAK
async def test_async_dropped_connection_after_reset_is_gc_returned(
    tracker: Tracker, redis_port: int
) -> None:
    """After pool.reset() the in-use set is weak: a dropped connection is gc_returned."""
    pool = aredis.ConnectionPool(host="127.0.0.1", port=redis_port, max_connections=1)
    pool.reset()
    # redis-py warns "unclosed Connection" from the collected connection's __del__.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await take_and_drop_async(pool)
        gc.collect()
    assert any(w.category is ResourceWarning for w in caught)
    (lease,) = tracker.leaks_since(0)
    assert (lease.state, lease.callsite) == ("gc_returned", line_after(take_and_drop_async))
    assert lease.note is not None
    assert "garbage collected" in lease.note
    snap = pool_of(tracker)
    assert (snap.leased, snap.confirmed_leaks) == (0, 1)
    again = await pool.get_connection()  # the slot of one came back
    await pool.release(again)
    await pool.disconnect()


@pytest.mark.asyncio
@LEAK
async def test_async_pools_exhaustion_counted_and_waiters_visible(
    tracker: Tracker, redis_port: int
) -> None:
    """asyncio pools: MaxConnectionsError and 'No connection available.' carry a diagnosis."""
    plain = aredis.ConnectionPool(host="127.0.0.1", port=redis_port, max_connections=1)
    kept = await take_async(plain)
    with pytest.raises(redis.exceptions.MaxConnectionsError) as info:
        await plain.get_connection()
    assert f"1 x {line_after(take_async)}" in "\n".join(info.value.__notes__)
    await plain.release(kept)
    await plain.disconnect()

    blocking = aredis.BlockingConnectionPool(
        host="127.0.0.1", port=redis_port, max_connections=1, timeout=5
    )
    held = await take_async(blocking)
    waiter = asyncio.create_task(blocking.get_connection(), name="waiter")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [
        p for p in tracker.snapshot().pools if p.waiting == 1
    ]:
        await asyncio.sleep(0.01)
    (waiting,) = [p for p in tracker.snapshot().pools if p.waiting == 1]
    assert (waiting.leased, waiting.max) == (1, 1)
    await blocking.release(held)
    second = await asyncio.wait_for(waiter, 5)
    blocking.timeout = 0.05
    with pytest.raises(redis.exceptions.ConnectionError, match="No connection available") as err:
        await blocking.get_connection()
    notes = "\n".join(err.value.__notes__)
    assert "[leased 1 | idle 0 | waiting 0 | max 1]> is exhausted." in notes
    assert sum(p.exhaustions for p in tracker.snapshot().pools) == 2
    await blocking.release(second)
    assert sum(p.leased for p in tracker.snapshot().pools) == 0
    await blocking.disconnect()


@pytest.mark.parametrize("leaks", [0, 9])
@LEAK
def test_exact_counts_for_200_tasks_in_asyncio_run(
    tracker: Tracker, redis_port: int, leaks: int
) -> None:
    """asyncio.run, 200 tasks through one blocking pool: leased equals connections kept."""

    async def main() -> tuple[int, int, int, set[str | None]]:
        # The plain asyncio pool raises at once past max_connections: 200 tasks need to wait.
        pool = aredis.BlockingConnectionPool(
            host="127.0.0.1", port=redis_port, max_connections=50, timeout=30
        )
        client = aredis.Redis(connection_pool=pool)
        kept: list[Any] = []

        async def one(i: int) -> None:
            await client.incr("poolwatch:tasks")
            if i < leaks:
                kept.append(await pool.get_connection())

        await asyncio.gather(*(asyncio.create_task(one(i), name=f"t{i}") for i in range(200)))
        snap = pool_of(tracker)
        result = (snap.leased, snap.checkouts, snap.checkins, {x.task_name for x in snap.leases})
        for conn in kept:
            await pool.release(conn)
        await client.aclose()
        await pool.disconnect()
        return result

    leased, checkouts, checkins, tasks = asyncio.run(main())
    assert (leased, checkouts, checkins) == (leaks, 200 + leaks, 200)
    assert tasks == {f"t{i}" for i in range(leaks)}
