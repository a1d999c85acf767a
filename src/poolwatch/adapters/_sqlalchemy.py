"""SQLAlchemy: the official pool events, listened to on the ``Pool`` class.

Listening on the class covers every pool of every engine, sync and asyncio, created before or
after ``instrument()``; ``uninstrument()`` removes exactly those listeners (``event.remove``).

- ``checkout`` (first checkout of a ``_ConnectionFairy``) opens the lease. The key is the
  connection record, which stays with its pool slot while the DBAPI connection under it may be
  replaced (recycle, invalidation); the fairy, the user's handle, is the lease's connection.
- ``checkin`` closes it. When the fairy is already gone, SQLAlchemy is returning the slot from
  the fairy's finalizer (``_finalize_fairy(..., is_gc_cleanup=True)``): nobody closed the
  connection and only the garbage collector gave it back. That lease ends as ``gc_returned``,
  with the line that took it; in production such a slot comes back whenever the cyclic
  collector happens to run. ``detach`` is the same for asyncio dialects, whose finalizer
  cannot reset the connection and detaches (terminates) it instead.
- ``QueuePool._do_get`` is wrapped for what events do not give: a ``TimeoutError`` (code
  3o7r) is counted as an exhaustion and gets the diagnosis as a note, and a thread about to
  block for a connection is shown as a waiter.

Asyncio engines run the pool inside a greenlet whose frames end in SQLAlchemy; the call site
is then looked up in the suspended frames of the greenlet that switched to it (the user's
coroutine). Frames of code SQLAlchemy generates (``<sqlalchemy generated ...>``) are skipped.

The checkout and checkin listeners and ``_do_get`` run on every checkout. Where this build has
the C hot path they are C hooks (``_speedups.c``) doing the common case, and the Python ones
here, the reference, do the rest: a pool seen first, a retried checkout, generated code, a
fairy the garbage collector returns, a pool at its limit (which may block).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from functools import partial
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from .._callsite import TASK_CALLSITE
from .._models import UNKNOWN_CALLSITE, CallSite
from .._native import speedups
from ._base import Adapter, hook, listener

if TYPE_CHECKING:
    from .._callsite import CallSiteFinder
    from .._tracker import LeaseRecord, PoolRecord, PoolStats, Tracker

__all__ = ["SQLAlchemyAdapter", "pool_name"]

Site = tuple[CallSite, tuple[CallSite, ...]]

_ASYNCIO_DIR = os.path.join(os.path.dirname(asyncio.__file__), "")

#: Keys of the DBAPI connect() parameters that may name the pool; never user or password.
_HOST_KEYS = ("host", "hostname", "unix_socket")
_DATABASE_KEYS = ("database", "dbname", "db")


def _closure(func: Any) -> dict[str, Any]:
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None)
    if code is None or not cells:
        return {}
    out = {}
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    return out


def pool_name(pool: Any) -> str:
    """`postgresql+psycopg://db.internal:5432/app`, `sqlite+pysqlite:////tmp/app.db`.

    A pool has no URL, and the engine that has one is not reachable from it. The connect
    arguments that ``create_engine`` derived from the URL are, in the closure of the pool's
    creator: the name is rebuilt from the dialect and only host, port and database, so it
    never holds a user name, password or query string. A pool built with a custom
    ``creator=`` is named by dialect (or pool class) alone.
    """
    dialect = getattr(pool, "_dialect", None)
    name, driver = getattr(dialect, "name", None), getattr(dialect, "driver", None)
    scheme = f"{name}+{driver}" if name and driver else (name or type(pool).__name__)
    found = _closure(vars(pool).get("_creator_arg"))
    cparams: Any = found.get("cparams")
    cargs: Any = found.get("cargs_tup")
    if not hasattr(cparams, "get"):
        return f"{scheme} (custom creator)"
    host = next((str(cparams[k]) for k in _HOST_KEYS if cparams.get(k)), "")
    if ":" in host and not host.startswith(("[", "/")):
        host = f"[{host}]"
    port = cparams.get("port")
    database = next((str(cparams[k]) for k in _DATABASE_KEYS if cparams.get(k)), "")
    if not database and cargs and isinstance(cargs[0], str):  # sqlite: the file name
        database = cargs[0]
    # SQLite URI file names carry their own query string (`file:app.db?mode=ro`).
    database = database.split("?", 1)[0]
    return f"{scheme}://{host}{f':{port}' if port else ''}/{database}"


def _safe_name(pool: Any) -> str:
    try:
        return pool_name(pool)
    except Exception:  # an unexpected creator: a plainer name beats no lease
        return f"{type(pool).__name__} at {id(pool):#x}"


def _waiting(queue: Any) -> int | None:
    condition = getattr(queue, "not_empty", None)  # sqlalchemy.util.queue.Queue
    if condition is not None:
        waiters = getattr(condition, "_waiters", None)
        return len(waiters) if waiters is not None else None
    # AsyncAdaptedQueue creates its asyncio.Queue on first use: read it only if it exists,
    # never create it from a sampling thread.
    inner = vars(queue).get("_queue")
    if inner is None:
        return 0
    getters = getattr(inner, "_getters", None)
    if getters is None:
        return None
    return sum(1 for future in list(getters) if not future.done())


def _stats(pool: Any) -> PoolStats:
    """(max, idle, waiting) from QueuePool's own counters; what other pools can tell."""
    queue = getattr(pool, "_pool", None)
    max_overflow = getattr(pool, "_max_overflow", None)
    if queue is not None and max_overflow is not None:  # QueuePool, AsyncAdaptedQueuePool
        cap = None if max_overflow < 0 else pool.size() + max_overflow
        created = hasattr(queue, "not_empty") or "_queue" in vars(queue)
        idle = pool.checkedin() if created else 0
        return cap, idle, _waiting(queue)
    kind = type(pool).__name__
    if kind == "NullPool":
        return None, 0, None
    if kind in ("StaticPool", "AssertionPool"):
        return 1, None, None
    return None, None, None


class _SiteFinder:
    """Call sites the tracker's finder cannot see from SQLAlchemy's own frames.

    Two cases: asyncio engines run the pool inside a greenlet whose frames end in SQLAlchemy
    (the user's coroutine is in the suspended frames of the greenlet that switched to it), and
    SQLAlchemy generates some wrappers (the ORM Session's) whose file name is
    ``<sqlalchemy generated ...>``, outside any library directory.
    """

    def __init__(self, finder: CallSiteFinder, depth: int) -> None:
        self._finder = finder
        self._depth = depth
        self._skip: dict[str, bool] = {}
        self._generation = finder.generation
        self._interned: dict[tuple[int, int], tuple[CallSite, CodeType]] = {}
        # speedups.capture_at where the finder's capture is the C one and sites carry no stack
        self._capture_at = (
            speedups.capture_at if speedups is not None and finder.native and depth == 0 else None
        )
        #: the finder the C checkout listener walks the parent greenlets with, where it can
        #: (else it calls find_in_parents)
        self.c_finder = finder if self._capture_at is not None else None

    def _is_library(self, filename: str) -> bool:
        if self._generation != self._finder.generation:  # library modules were declared
            self._generation = self._finder.generation
            self._skip = {}
        hit = self._skip.get(filename)
        if hit is None:
            hit = self._skip[filename] = filename.startswith(
                "<sqlalchemy"
            ) or self._finder.is_library(filename)
        return hit

    def _site(self, frame: FrameType) -> CallSite:
        code = frame.f_code
        key = (id(code), frame.f_lineno or 0)
        hit = self._interned.get(key)
        if hit is not None:
            return hit[0]
        site = CallSite(code.co_filename, key[1], getattr(code, "co_qualname", code.co_name))
        if len(self._interned) < 10_000:
            self._interned[key] = (site, code)  # the code object pinned: its id stays unique
        return site

    def find(self, start: FrameType | None) -> Site | None:
        """The first user frame from ``start`` outward, then in the parent greenlets."""
        found = self._walk(start)
        if found is not None:
            return found
        return self.find_in_parents()

    def find_in_parents(self) -> Site | None:
        """The first user frame in the greenlets that switched to this one, nearest first."""
        greenlet = sys.modules.get("greenlet")
        if greenlet is None:
            return None
        outer = greenlet.getcurrent().parent
        while outer is not None:
            frame = outer.gr_frame
            if self._capture_at is not None and frame is not None:
                # The tracker's finder, in C: the same answer but for the event loop (a
                # greenlet with no user frame before it) and generated code, which _walk
                # tells apart. Its library files are a subset of _walk's: none found there
                # means none here either.
                pair = self._capture_at(self._finder, frame)
                if pair[0] is UNKNOWN_CALLSITE or pair[0] is TASK_CALLSITE:
                    outer = outer.parent
                    continue
                if not pair[0].filename.startswith("<sqlalchemy"):
                    return pair  # type: ignore[no-any-return]
            found = self._walk(frame)
            if found is not None:
                return found
            outer = outer.parent
        return None

    def _walk(self, frame: FrameType | None) -> Site | None:
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(_ASYNCIO_DIR):
                # The event loop: the task's own coroutine was SQLAlchemy's (e.g. a task made
                # from `engine.connect().start()`). Past here is whoever started the loop, not
                # who asked for the connection: better no call site than a wrong one.
                return None
            if not self._is_library(filename):
                return self._site(frame), self._stack(frame.f_back)
            frame = frame.f_back
        return None

    def _stack(self, frame: FrameType | None) -> tuple[CallSite, ...]:
        stack: list[CallSite] = []
        while frame is not None and len(stack) < self._depth:
            if not self._is_library(frame.f_code.co_filename):
                stack.append(self._site(frame))
            frame = frame.f_back
        return tuple(stack)


#: Python 3.15 may keep a weakref to an object in a cycle alive while its finalizers run
#: (cpython gh-135552); before it, a dead weak reference is the whole sign.
_WEAKREF_MAY_OUTLIVE_FINALIZER = sys.version_info >= (3, 15)


def _collected(lease: LeaseRecord) -> bool:
    """True when the lease's fairy was collected: the checkin comes from its finalizer."""
    ref = lease.connection
    if ref is None:
        return False
    fairy = ref()
    if fairy is None:
        return True
    if not _WEAKREF_MAY_OUTLIVE_FINALIZER:
        return False
    # A fairy whose finalizer has fired but which still holds its record is being collected
    # too. (A cancelled reset detaches the record first: not the GC.)
    finalizer = getattr(fairy, "_finalizer", None)
    return (
        finalizer is not None
        and not finalizer.alive
        and getattr(fairy, "_connection_record", None) is not None
    )


class SQLAlchemyAdapter(Adapter):
    name = "sqlalchemy"
    module = "sqlalchemy"
    distribution = "SQLAlchemy"
    tested = ((2, 0), (2, 2))

    def __init__(self) -> None:
        super().__init__()
        self._listeners: list[tuple[str, Callable[..., None]]] = []

    def _install(self, tracker: Tracker) -> None:
        from sqlalchemy import event
        from sqlalchemy import exc as sa_exc
        from sqlalchemy.pool import Pool, QueuePool

        find_pool = tracker.find_pool
        capture = tracker.callsites.capture
        sites = _SiteFinder(tracker.callsites, tracker.stack_depth)

        def record_of(pool: Any) -> PoolRecord:
            return find_pool(pool) or tracker.pool(
                pool, "sqlalchemy", lambda: _safe_name(pool), stats=_stats
            )

        def pool_of(connection_record: Any) -> PoolRecord | None:
            pool = getattr(connection_record, "_ConnectionRecord__pool", None)
            return find_pool(pool) if pool is not None else None

        def on_checkout(dbapi_connection: Any, connection_record: Any, fairy: Any) -> None:
            # An exception here would fail the user's checkout: never let one out.
            try:
                # the record's pool (the fairy's too), read as the checkin reads it
                record = record_of(connection_record._ConnectionRecord__pool)
                key = id(connection_record)
                lease = record.leases.get(key)
                if (
                    lease is not None
                    and lease.connection is not None
                    and lease.connection() is fairy
                ):
                    return  # a listener after ours raised DisconnectionError: the same checkout
                site = capture(tracker.stack_depth, 1)  # 1: this listener
                if site[0] is UNKNOWN_CALLSITE:
                    # Library frames only, up to the bottom of this greenlet: an asyncio
                    # engine's, switched to by the user's coroutine.
                    site = sites.find_in_parents() or site
                elif site[0].filename.startswith("<sqlalchemy"):
                    site = sites.find(sys._getframe(1)) or site
                tracker.checkout(record, key, fairy, site)
            except Exception as exc:
                tracker.internal_error("sqlalchemy.checkout", exc)

        def end(connection_record: Any, how: str, gc_note: str) -> None:
            record = pool_of(connection_record)
            if record is None:
                return
            key = id(connection_record)
            lease = record.leases.get(key)
            if lease is None:
                return
            if _collected(lease):
                # Inside the collector, maybe while this thread holds the tracker's lock:
                # end_soon takes none.
                tracker.end_soon(lease, "gc_returned", f"{gc_note}; taken at {lease.callsite}")
            else:
                tracker.checkin(record, key, how)

        def on_checkin(dbapi_connection: Any, connection_record: Any) -> None:
            try:
                end(
                    connection_record,
                    "returned" if dbapi_connection is not None else "discarded",
                    "never closed: the garbage collector returned it to the pool",
                )
            except Exception as exc:
                tracker.internal_error("sqlalchemy.checkin", exc)

        def on_detach(dbapi_connection: Any, connection_record: Any) -> None:
            try:
                end(
                    connection_record,
                    "detached",
                    "never closed: the garbage collector detached it from the pool "
                    "(an asyncio driver cannot be reset there)",
                )
            except Exception as exc:
                tracker.internal_error("sqlalchemy.detach", exc)

        original_get = QueuePool._do_get

        def _do_get(self: Any) -> Any:
            token = None
            try:
                # Only a sync pool that is at its limit with nothing idle blocks; asyncio
                # pools report their waiters through the queue's getters.
                if self._max_overflow > -1 and self._overflow >= self._max_overflow:
                    queue = getattr(self._pool, "queue", None)
                    if queue is not None and not queue:
                        token = tracker.wait_begin(record_of(self), capture(tracker.stack_depth, 1))
            except Exception as exc:
                tracker.internal_error("sqlalchemy.wait", exc)
            try:
                return original_get(self)
            except sa_exc.TimeoutError as error:
                if token is not None:  # no longer waiting: the diagnosis must not count it
                    tracker.wait_end(token)
                    token = None
                # _do_get calls itself when it may not wait: count the error once.
                if not getattr(error, "_poolwatch_counted", False):
                    try:
                        error._poolwatch_counted = True  # type: ignore[attr-defined]
                        tracker.exhausted(record_of(self), error)
                    except Exception as inner:
                        tracker.internal_error("sqlalchemy.exhausted", inner)
                raise
            finally:
                if token is not None:
                    tracker.wait_end(token)

        # The checkout and checkin listeners run on every checkout: in C where this build has
        # it, for the common case (see _speedups.c), with the Python ones for the rest.
        fast_checkout = listener(
            on_checkout,
            tracker,
            "sqlalchemy.checkout",
            "sqlalchemy_checkout",
            (
                find_pool,
                partial(capture, tracker.stack_depth),
                tracker.checkout,
                sites.find_in_parents,
                sites.c_finder,
            ),
        )
        fast_checkin = listener(
            on_checkin,
            tracker,
            "sqlalchemy.checkin",
            "sqlalchemy_checkin",
            (find_pool, tracker.checkin),
        )
        try:
            for name, fn in (
                ("checkout", fast_checkout),
                ("checkin", fast_checkin),
                ("detach", on_detach),
            ):
                event.listen(Pool, name, fn)
                self._listeners.append((name, fn))
            # in C where this build has it: the original alone while the pool cannot block
            self.patcher.patch(
                QueuePool,
                "_do_get",
                hook(original_get, _do_get, tracker, "sqlalchemy.wait", "sqlalchemy_get"),
            )
        except BaseException:
            self._remove_listeners()
            raise

    def _remove_listeners(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.pool import Pool

        while self._listeners:
            name, listener = self._listeners.pop()
            if event.contains(Pool, name, listener):
                event.remove(Pool, name, listener)

    def uninstall(self) -> None:
        if self._listeners:
            self._remove_listeners()
        super().uninstall()
