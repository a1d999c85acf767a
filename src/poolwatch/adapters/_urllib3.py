"""urllib3 (and so requests and botocore): hooks at ``HTTPConnectionPool``.

Checkout is ``_get_conn``, checkin ``_put_conn``. On error paths urllib3 closes the connection
and returns ``None`` in its place (``_put_conn(None)``); that is paired with the lease the same
thread took last from the same pool, since ``urlopen`` runs both calls in one thread with no
other checkout of that pool between them. ``HTTPConnection.getresponse`` gives the response (a
method with no arguments: hooking ``_make_request`` instead cost re-packing its ten keyword
arguments on every request). When the response holds the connection (its body is not
preloaded), its facts go on the lease and the response becomes the lease's owner: collected
while still leased means the slot is lost for good (see FACTS.md).

The three hooks run on every request: where this build has the C hot path they are C ``Hook``s
(``_speedups.c``) doing the common case, a non-blocking pool seen before, and handing the rest
to the Python hooks here, which stay the reference.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .._models import ResponseFacts
from ._base import Adapter, hook

if TYPE_CHECKING:
    from .._tracker import PoolRecord, PoolStats, Tracker

__all__ = ["Urllib3Adapter", "pool_name", "response_facts"]


def pool_name(pool: Any) -> str:
    """`http://127.0.0.1:8080`: scheme, host and port only, so never credentials or paths."""
    host = pool.host or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{pool.scheme}://{host}:{pool.port}"


def _stats(pool: Any, maxsize: int | None = None) -> PoolStats:
    queue = pool.pool
    if queue is None:  # closed: its queue is gone, its capacity was what it was
        return maxsize, 0, 0
    idle = sum(1 for conn in list(queue.queue) if conn is not None)
    waiters = getattr(getattr(queue, "not_empty", None), "_waiters", None)
    return queue.maxsize, idle, len(waiters) if waiters is not None else None


def _idle_of(pool: Any) -> list[Any]:
    queue = pool.pool
    if queue is None:
        return []
    return [conn.sock for conn in list(queue.queue) if conn is not None and conn.sock is not None]


def _socket_of(conn: Any) -> Any:
    return getattr(conn, "sock", None)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _content_type(headers: Any) -> str | None:
    # HTTPHeaderDict.get goes through Mapping.get and a lower-casing __getitem__ (~0.7 us);
    # its own lower-cased map answers the same in one dict lookup.
    container = getattr(headers, "_container", None)
    if isinstance(container, dict):
        item = container.get("content-type")
        return ", ".join(item[1:]) if item else None
    value = headers.get("content-type")
    return value if isinstance(value, str) else None


def response_facts(status: int, headers: Any, length: int | None, chunked: bool) -> ResponseFacts:
    """Status, content type and framing of an unread urllib3 response; no other header value.

    From the values read off the response as it came: content length and chunking are what
    urllib3 itself parsed (``length_remaining``, ``chunked``), exact while the body is unread,
    which is when a lease can leak. Called only when a lease is read (deferred facts).
    """
    if length is None:
        length = _int(headers.get("content-length"))
    return ResponseFacts(
        status=status,
        content_type=_content_type(headers),
        content_length=length,
        chunked=chunked,
    )


class Urllib3Adapter(Adapter):
    name = "urllib3"
    module = "urllib3"
    distribution = "urllib3"
    tested = ((2, 0), (3, 0))

    def _install(self, tracker: Tracker) -> None:
        from urllib3 import connection, connectionpool
        from urllib3.exceptions import EmptyPoolError

        cls = connectionpool.HTTPConnectionPool
        last = threading.local()
        # The hooks run on every request: they call the tracker's hot-path methods (C where
        # this build has them) and the call-site finder directly.
        find_pool = tracker.find_pool
        capture = tracker.callsites.capture
        checkout = tracker.checkout
        checkin_of = tracker.checkin_of

        def register(pool: Any) -> PoolRecord:
            maxsize = pool.pool.maxsize if pool.pool is not None else None
            return tracker.pool(
                pool,
                "urllib3",
                pool_name(pool),
                stats=lambda p: _stats(p, maxsize),
                socket_of=_socket_of,
                idle_of=_idle_of,
            )

        original_get = cls._get_conn
        original_put = cls._put_conn
        original_getresponse = connection.HTTPConnection.getresponse

        def _get_conn(self: Any, timeout: float | None = None) -> Any:
            try:
                record = find_pool(self) or register(self)
                # Jump over this hook and urlopen, our expected caller (checked if user code
                # turns out to call _get_conn itself).
                site = capture(tracker.stack_depth, 1, 1)
                token = tracker.wait_begin(record, site) if self.block else None
            except Exception as exc:
                tracker.internal_error("urllib3.checkout", exc)
                last.lease = None  # see below
                return original_get(self, timeout)
            try:
                conn = original_get(self, timeout)
            except BaseException as exc:
                # This call leased nothing: the _put_conn(None) of urlopen's error path must
                # not end the lease this thread took before (see missed).
                last.lease = None
                if token is not None:
                    tracker.wait_end(token)
                    token = None
                if isinstance(exc, EmptyPoolError):
                    try:
                        tracker.exhausted(record, exc)
                    except Exception as inner:
                        tracker.internal_error("urllib3.exhausted", inner)
                raise
            finally:
                if token is not None:
                    tracker.wait_end(token)
            try:
                last.lease = checkout(record, id(conn), conn, site)
            except Exception as exc:
                last.lease = None
                tracker.internal_error("urllib3.checkout", exc)
            return conn

        def missed(pool: Any, conn: Any) -> None:
            # checkin_of found no lease: a pool or connection from before instrument(), or
            # urllib3 closed the connection on an error path and gives back None in its place:
            # the lease _get_conn took last on this thread (None when that call leased nothing).
            if conn is None:
                record = find_pool(pool)
                lease = getattr(last, "lease", None)
                if record is not None and lease is not None and lease.pool is record:
                    tracker.checkin_record(lease, "discarded")

        def _put_conn(self: Any, conn: Any) -> None:
            try:
                if checkin_of(self, conn) is None:
                    missed(self, conn)
            except Exception as exc:
                tracker.internal_error("urllib3.checkin", exc)
            return original_put(self, conn)

        def responded(conn: Any, response: Any) -> None:
            # An unread body holds the connection. _get_conn ran just before on this thread:
            # its lease is this connection's.
            lease = getattr(last, "lease", None)
            if lease is not None and lease.key == id(conn):
                # The facts as values read now, computed only if the lease is ever read: a
                # streamed response is nearly always released a moment later.
                length, chunked = response.length_remaining, bool(response.chunked)
                tracker.attach_response(
                    lease, (response_facts, response.status, response.headers, length, chunked)
                )
                tracker.set_owner(lease, response)

        def getresponse(self: Any) -> Any:
            response = original_getresponse(self)
            try:
                # A preloaded body was read inside getresponse and urlopen returns the
                # connection: only an unread one (streaming) holds the connection and can leak.
                if getattr(response, "_body", None) is None:
                    responded(self, response)
            except Exception as exc:
                tracker.internal_error("urllib3.response", exc)
            return response

        # In C where this build has it: the Python hooks above for everything else (a blocking
        # pool, a pool seen first, an unexpected call) and on the pure-Python path.
        get_conn = hook(
            original_get,
            _get_conn,
            tracker,
            "urllib3.checkout",
            "urllib3_checkout",
            attr="block",
            value=False,
            state=(find_pool, checkout, last),
        )
        put_conn = hook(
            original_put,
            _put_conn,
            tracker,
            "urllib3.checkin",
            "before",
            call=checkin_of,
            miss=missed,
        )
        get_response = hook(
            original_getresponse,
            getresponse,
            tracker,
            "urllib3.response",
            "result",
            call=responded,
            attr="_body",
            value=None,
        )
        self.patcher.patch(cls, "_get_conn", get_conn)
        self.patcher.patch(cls, "_put_conn", put_conn)
        self.patcher.patch(connection.HTTPConnection, "getresponse", get_response)
