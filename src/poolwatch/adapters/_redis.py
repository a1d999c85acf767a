"""redis-py: hooks at ``ConnectionPool`` and ``BlockingConnectionPool`` (which overrides both),
sync (``redis.connection``) and asyncio (``redis.asyncio.connection``).

Checkout is ``get_connection``, checkin ``release``. The pool keeps every connection it handed
out in its own bookkeeping, so a connection taken with ``get_connection()`` and never released
is never collected: it stays leased for good (FACTS.md). The key is the connection object's
id; the connection stays alive as long as the pool does, so the id cannot be reused under a
live lease.

Exhaustion: ``ConnectionPool`` raises ``MaxConnectionsError('Too many connections')`` at once;
``BlockingConnectionPool`` raises ``ConnectionError('No connection available.')`` after its
timeout (raised while handling ``queue.Empty``, which tells it from a refused connection). Both
are counted and get the diagnosis as a note. A thread blocked in a ``BlockingConnectionPool``
shows as a waiter.

The asyncio pools keep their in-use connections in a ``WeakSet``: a connection taken and
dropped is collected, and its slot comes back to the pool's count only then (the socket is
closed by the connection's ``__del__``). Such a lease ends as ``gc_returned`` at the line that
took it.
"""

from __future__ import annotations

import queue
import weakref
from typing import TYPE_CHECKING, Any

from ._base import Adapter, wraps

if TYPE_CHECKING:
    from .._tracker import PoolRecord, PoolStats, Tracker

__all__ = ["RedisAdapter", "pool_name"]

#: redis-py's ``max_connections`` when none is given: no limit in practice.
_UNBOUNDED = 2**31


def pool_name(pool: Any) -> str:
    """`redis://127.0.0.1:6379/0`, `rediss://...`, `unix:///run/redis.sock/0`: no credentials."""
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    db = kwargs.get("db", 0)
    path = kwargs.get("path")
    if path:
        return f"unix://{path}/{db}"
    host = str(kwargs.get("host", "localhost"))
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    connection_class = getattr(pool, "connection_class", None)
    scheme = "rediss" if "SSL" in getattr(connection_class, "__name__", "") else "redis"
    return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{db}"


def _stats(pool: Any) -> PoolStats:
    cap = getattr(pool, "max_connections", None)
    if cap is not None and cap >= _UNBOUNDED:
        cap = None
    blocking_queue = getattr(pool, "pool", None)
    if blocking_queue is not None and hasattr(blocking_queue, "queue"):  # BlockingConnectionPool
        # None placeholders are capacity not yet connected, not idle connections.
        queued = sum(1 for conn in list(blocking_queue.queue) if conn is not None)
        threads = getattr(getattr(blocking_queue, "not_empty", None), "_waiters", None)
        return cap, queued, len(threads) if threads is not None else None
    available = getattr(pool, "_available_connections", None)
    idle = len(available) if available is not None else None
    condition = getattr(pool, "_condition", None)  # asyncio BlockingConnectionPool
    if condition is not None:
        tasks = getattr(condition, "_waiters", None)
        return cap, idle, sum(1 for w in list(tasks) if not w.done()) if tasks else 0
    return cap, idle, 0


def _socket_of(connection: Any) -> Any:
    sock = getattr(connection, "_sock", None)  # sync connections
    if sock is not None:
        return sock
    writer = getattr(connection, "_writer", None)  # asyncio connections
    return writer.get_extra_info("socket") if writer is not None else None


def _idle_of(pool: Any) -> list[Any]:
    blocking_queue = getattr(pool, "pool", None)
    if blocking_queue is not None and hasattr(blocking_queue, "queue"):
        conns = [conn for conn in list(blocking_queue.queue) if conn is not None]
    else:
        conns = list(getattr(pool, "_available_connections", None) or ())
    return [sock for sock in map(_socket_of, conns) if sock is not None]


class RedisAdapter(Adapter):
    name = "redis"
    module = "redis"
    distribution = "redis"
    tested = ((8, 0), (9, 0))

    def _install(self, tracker: Tracker) -> None:
        from redis import connection as redis_connection
        from redis import exceptions as redis_exceptions

        find_pool = tracker.find_pool
        capture = tracker.capture
        redis_connection_error = redis_exceptions.ConnectionError
        max_connections_error = getattr(redis_exceptions, "MaxConnectionsError", None)

        def record_of(pool: Any) -> PoolRecord:
            return find_pool(pool) or tracker.pool(
                pool,
                "redis",
                pool_name(pool),
                stats=_stats,
                socket_of=_socket_of,
                idle_of=_idle_of,
            )

        def is_exhaustion(error: BaseException) -> bool:
            if max_connections_error is not None and isinstance(error, max_connections_error):
                return True
            # BlockingConnectionPool raises it while handling queue.Empty (asyncio: from a
            # TimeoutError); older redis-py raised a plain ConnectionError('Too many
            # connections').
            if isinstance(error.__context__, queue.Empty):
                return True
            return str(error) in (
                "Too many connections",
                "No connection available.",
            )

        def wrap_get(cls: type, blocking: bool) -> None:
            original = cls.get_connection  # type: ignore[attr-defined]

            def get_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
                token = None
                try:
                    record = record_of(self)
                    site = capture()
                    if blocking and not self.pool.queue:  # nothing left: this call waits
                        token = tracker.wait_begin(record, site)
                except Exception as exc:
                    tracker.internal_error("redis.checkout", exc)
                    return original(self, *args, **kwargs)
                try:
                    conn = original(self, *args, **kwargs)
                except redis_connection_error as error:
                    if token is not None:
                        tracker.wait_end(token)
                        token = None
                    try:
                        if is_exhaustion(error):
                            tracker.exhausted(record, error)
                    except Exception as inner:
                        tracker.internal_error("redis.exhausted", inner)
                    raise
                finally:
                    if token is not None:
                        tracker.wait_end(token)
                try:
                    tracker.checkout(record, id(conn), conn, site)
                except Exception as exc:
                    tracker.internal_error("redis.checkout", exc)
                return conn

            self.patcher.patch(cls, "get_connection", wraps(get_connection, original))

        def wrap_release(cls: type) -> None:
            original = cls.release  # type: ignore[attr-defined]

            def release(self: Any, connection: Any) -> Any:
                try:
                    record = find_pool(self)
                    if record is not None:
                        tracker.checkin(record, id(connection))
                except Exception as exc:
                    tracker.internal_error("redis.checkin", exc)
                return original(self, connection)

            self.patcher.patch(cls, "release", wraps(release, original))

        wrap_get(redis_connection.ConnectionPool, blocking=False)
        wrap_release(redis_connection.ConnectionPool)
        wrap_get(redis_connection.BlockingConnectionPool, blocking=True)
        wrap_release(redis_connection.BlockingConnectionPool)

        try:
            from redis.asyncio import connection as async_connection
        except ImportError:  # pragma: no cover - redis-py without asyncio support
            return

        # Weak references to leased asyncio connections, whose callbacks end the lease when the
        # pool's WeakSet lets a dropped connection go. Removed at release.
        watched: dict[int, weakref.ref[Any]] = {}

        def watch(lease: Any, conn: Any) -> None:
            key = id(conn)

            def collected(_ref: Any) -> None:
                # A garbage-collector callback: end_soon takes no lock.
                if watched.get(key) is _ref:
                    del watched[key]
                tracker.end_soon(
                    lease,
                    "gc_returned",
                    "never released: the connection was garbage collected and the pool "
                    f"forgot it; taken at {lease.callsite}",
                )

            watched[key] = weakref.ref(conn, collected)

        def wrap_async_get(cls: type) -> None:
            original = cls.get_connection  # type: ignore[attr-defined]

            async def get_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    record = record_of(self)
                    site = capture()
                except Exception as exc:
                    tracker.internal_error("redis.checkout", exc)
                    return await original(self, *args, **kwargs)
                try:
                    conn = await original(self, *args, **kwargs)
                except redis_connection_error as error:
                    try:
                        if is_exhaustion(error):
                            tracker.exhausted(record, error)
                    except Exception as inner:
                        tracker.internal_error("redis.exhausted", inner)
                    raise
                try:
                    watch(tracker.checkout(record, id(conn), conn, site), conn)
                except Exception as exc:
                    tracker.internal_error("redis.checkout", exc)
                return conn

            self.patcher.patch(cls, "get_connection", wraps(get_connection, original))

        def wrap_async_release(cls: type) -> None:
            original = cls.release  # type: ignore[attr-defined]

            async def release(self: Any, connection: Any) -> Any:
                try:
                    record = find_pool(self)
                    if record is not None:
                        watched.pop(id(connection), None)
                        tracker.checkin(record, id(connection))
                except Exception as exc:
                    tracker.internal_error("redis.checkin", exc)
                return await original(self, connection)

            self.patcher.patch(cls, "release", wraps(release, original))

        wrap_async_get(async_connection.ConnectionPool)
        wrap_async_release(async_connection.ConnectionPool)
        # BlockingConnectionPool.release calls ConnectionPool.release: the second checkin of
        # the same connection finds no lease and does nothing.
        wrap_async_get(async_connection.BlockingConnectionPool)
        wrap_async_release(async_connection.BlockingConnectionPool)
