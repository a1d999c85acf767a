"""aiohttp: hooks at ``BaseConnector``, one pool per connector.

Checkout is the ``Connection`` that ``connect`` hands out: both of its paths (a pooled connection
in ``_get``, a new one) end with ``Connection(connector, key, protocol, loop)`` right after
adding the protocol to ``connector._acquired``, with no await in between. Hooking that plain
constructor rather than the ``connect`` coroutine spares every request a coroutine layer. The
lease key is ``id(protocol)``, the ``ResponseHandler`` that stays in ``_acquired`` until
released; checkin is
``BaseConnector._release_acquired(key, proto)``, which every release path goes through: a
response released at payload EOF (a small body, read or not), ``release()``, ``close()``, a
request that failed or was cancelled (aiohttp closes the connection itself), and the error paths
inside ``connect``. So a cancelled request ends as a normal checkin, never as the user's leak.

Three ends are not plain checkins:

* ``_close()`` (``session.close()``, ``connector.close()``, an unclosed connector's ``__del__``)
  clears ``_acquired`` without calling ``_release_acquired``: a lease still out then is ended as
  ``closed``, a confirmed leak that a test's count would otherwise miss.
* ``ClientResponse.__del__`` / ``Connection.__del__`` release a connection dropped unreleased:
  the slot came back only because the garbage collector ran (``gc_returned``, a confirmed leak).
  Finalizers may run inside an allocation made while this thread holds the tracker's lock, so
  there leases are ended with the tracker's lock-free ``end_soon`` instead of deadlocking.
* A pool-wait timeout is counted as an exhaustion, with the diagnosis as an exception note.
  The wait (``_wait_for_available_connection``; ``connect`` itself in releases such as 3.9,
  which waited inline) marks the exception that ends it. A connect timeout
  (``ClientTimeout(connect=...)``) raises ``ConnectionTimeoutError`` from a ``TimeoutError``
  raised from that marked exception: its constructor, hooked, finds the mark and the note goes
  on the very exception the caller gets. The total timeout's ``TimerContext`` says, as it
  fires, which tasks it cancels; a wait ended that way is counted as it ends, and the note goes
  on the ``CancelledError`` that aiohttp raises the caller's bare ``TimeoutError`` from, so it
  prints with that error's traceback. A wait ended by the caller's own ``asyncio.timeout()`` /
  ``wait_for()`` is a cancellation like any other: it is not counted. None of these hooks run
  on a request that does not time out.

The facts of the response a lease carries (status, content type, framing) are read only when the
lease is reported (``_response_of``), not recorded on every request.

Why a pool is a connector, not a host: aiohttp enforces ``limit`` over ``_acquired`` across every
host, a waiter for any host is woken when any slot frees, and the timeout that users see comes
from that shared limit. ``limit_per_host`` is a second cap inside it, shown in the pool's name.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import TYPE_CHECKING, Any

from .._models import ResponseFacts
from ._base import Adapter, hook, wraps

if TYPE_CHECKING:
    from .._tracker import PoolRecord, PoolStats, Tracker

__all__ = ["AiohttpAdapter", "pool_name", "response_facts"]

#: Set on an exception that left ``_wait_for_available_connection``: the pool it waited on.
_MARK = "_poolwatch_pool_wait"
_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)  # distinct classes before Python 3.11
_CLOSED_NOTE = (
    "the connector was closed while this connection was leased (session.close(), or the "
    "connector collected unclosed, with a response never read or released)"
)
_GC_NOTE = (
    "the {what} was dropped unreleased; aiohttp's {what}.__del__ returned the connection "
    "only when the garbage collector ran"
)


def pool_name(connector: Any) -> str:
    """`TCPConnector 0x7f..; limit 100` (and `, 10 per host`): no host, so no credentials."""
    limit = getattr(connector, "_limit", 0)
    per_host = getattr(connector, "_limit_per_host", 0)
    text = f"{type(connector).__name__} {id(connector):#x}; "
    text += f"limit {limit}" if limit else "no limit"
    if per_host:
        text += f", {per_host} per host"
    return text


def _stats(connector: Any) -> PoolStats:
    limit = connector._limit
    idle = sum(len(conns) for conns in list(connector._conns.values()))
    # 3.9: {key: deque[Future]}; 3.10+: {key: OrderedDict[Future, None]}; len() fits both.
    waiting = sum(len(waiters) for waiters in list(connector._waiters.values()))
    return (limit or None), idle, waiting


def _socket_of(proto: Any) -> Any:
    transport = getattr(proto, "transport", None)
    return transport.get_extra_info("socket") if transport is not None else None


def _idle_of(connector: Any) -> list[Any]:
    sockets = []
    for conns in list(connector._conns.values()):
        for proto, _since in list(conns):
            sock = _socket_of(proto)
            if sock is not None:
                sockets.append(sock)
    return sockets


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def response_facts(response: Any) -> ResponseFacts:
    """Status, content type and framing of an aiohttp response; no other header value."""
    headers = response.headers
    return ResponseFacts(
        status=response.status,
        content_type=headers.get("Content-Type"),
        content_length=_int(headers.get("Content-Length")),
        chunked="chunked" in headers.get("Transfer-Encoding", "").lower(),
    )


def _response_of(proto: Any) -> ResponseFacts | None:
    """The facts of the response reading from ``proto``, read when a lease is reported.

    Recording them on every request would take a coroutine layer around the request, more
    than the rest of the hooks together. A response not yet at its body's end is reachable
    from its connection: ``ClientResponse.start`` registers the response's ``_response_eof``
    with the payload (``StreamReader.on_eof``), which the protocol holds as ``_payload``; at
    EOF the callbacks run, the connection is released and there is no lease left to describe.
    """
    from aiohttp.client_reqrep import ClientResponse

    payload = getattr(proto, "_payload", None)
    for callback in list(getattr(payload, "_eof_callbacks", ())):
        response = getattr(callback, "__self__", None)
        if isinstance(response, ClientResponse):
            return response_facts(response)
    return None


class _Finalizing(threading.local):
    """How deep this thread is in a connector's finalizer (a class default: a thread-local's
    missing attribute would raise and format an AttributeError)."""

    finalizing = 0


def _wait_mark(exc: BaseException | None) -> Any:
    """The pool whose wait this exception (or one in its cause chain) came out of."""
    seen: BaseException | None = exc
    for _ in range(8):  # ConnectionTimeoutError <- TimeoutError <- CancelledError, and margin
        if seen is None:
            return None
        mark = getattr(seen, _MARK, None)
        if mark is not None:
            return mark
        seen = seen.__cause__ or seen.__context__
    return None


class AiohttpAdapter(Adapter):
    name = "aiohttp"
    module = "aiohttp"
    distribution = "aiohttp"
    tested = ((3, 9), (4, 0))

    def _install(self, tracker: Tracker) -> None:
        from aiohttp import client_exceptions, client_reqrep, connector, helpers

        base = connector.BaseConnector
        find_pool = tracker.find_pool
        capture = tracker.capture
        checkout_of = tracker.checkout_of
        checkin_of = tracker.checkin_of
        # Finalizers (ClientResponse/Connection/connector __del__) release connections, and the
        # collector may run them inside an allocation made while this very thread holds the
        # tracker's lock: from there, leases are ended with the lock-free ``end_soon``, which
        # also takes the lease out at once, so the checkin the finalizer makes finds nothing.
        local = _Finalizing()

        def record_of(conn_pool: Any) -> PoolRecord:
            return find_pool(conn_pool) or tracker.pool(
                conn_pool,
                "aiohttp",
                pool_name(conn_pool),
                stats=_stats,
                socket_of=_socket_of,
                idle_of=_idle_of,
                response_of=_response_of,
            )

        original_connect = base.connect
        original_connection_init = connector.Connection.__init__
        original_release = base._release_acquired
        original_close = base._close
        original_connector_del = base.__del__
        original_response_del = client_reqrep.ClientResponse.__del__
        original_connection_del = connector.Connection.__del__
        original_wait = getattr(base, "_wait_for_available_connection", None)

        # The four hooks below run on every request. Where this build has the C hot path, each
        # is a C Hook (_base.hook) doing what the Python function does in its common case.
        def checkout_first(conn_pool: Any, protocol: Any) -> Any:
            """``checkout_of`` for a connector seen the first time: register it first."""
            record_of(conn_pool)
            return checkout_of(conn_pool, protocol)

        def connection_init(self: Any, conn_pool: Any, key: Any, protocol: Any, loop: Any) -> None:
            original_connection_init(self, conn_pool, key, protocol, loop)
            try:
                if checkout_of(conn_pool, protocol) is None:
                    checkout_first(conn_pool, protocol)
            except Exception as exc:
                tracker.internal_error("aiohttp.checkout", exc)

        # Tasks waiting for a slot, each with its wait token and whether aiohttp's own total
        # timeout (a TimerContext) fired on it: the timer says so before it cancels the task.
        waits: dict[Any, list[Any]] = {}

        def wait_begin(conn_pool: Any) -> Any:
            try:
                entry = [tracker.wait_begin(record_of(conn_pool), capture()), False]
                waits[asyncio.current_task()] = entry
                return entry
            except Exception as exc:
                tracker.internal_error("aiohttp.wait", exc)
                return None

        def wait_failed(conn_pool: Any, exc: BaseException, entry: list[Any]) -> None:
            """Mark the exception for a connect timeout to find; count a total timeout now.

            The total timeout's bare ``TimeoutError`` is raised by the TimerContext's
            ``__exit__``, bound when the request entered it: the diagnosis goes on this
            exception, which the ``TimeoutError`` is raised from, and prints with it.
            """
            try:
                wait_end(entry)  # over before the diagnosis, which counts the waiters
                record = record_of(conn_pool)
                setattr(exc, _MARK, record)
                if entry[1]:
                    tracker.exhausted(record, exc)
            except Exception as inner:
                tracker.internal_error("aiohttp.wait", inner)

        def wait_end(entry: list[Any]) -> None:
            try:
                tracker.wait_end(entry[0])
                task = asyncio.current_task()
                if waits.get(task) is entry:
                    del waits[task]
            except Exception as exc:
                tracker.internal_error("aiohttp.wait", exc)

        async def _connect_waiting(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
            """``connect`` for aiohttp releases that wait for a slot inside it (3.9)."""
            entry = None
            try:
                if self._available_connections(req.connection_key) <= 0:
                    entry = wait_begin(self)
            except Exception as exc:
                tracker.internal_error("aiohttp.wait", exc)
            try:
                return await original_connect(self, req, *args, **kwargs)
            except BaseException as exc:
                # Still full when the wait failed: it failed waiting for a slot, not connecting.
                if entry is not None and _still_full(self, req):
                    wait_failed(self, exc, entry)
                raise
            finally:
                if entry is not None:
                    wait_end(entry)

        def _still_full(conn_pool: Any, req: Any) -> bool:
            try:
                return bool(conn_pool._available_connections(req.connection_key) <= 0)
            except Exception as exc:
                tracker.internal_error("aiohttp.wait", exc)
                return False

        async def _wait_for_available_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
            assert original_wait is not None
            entry = wait_begin(self)
            try:
                return await original_wait(self, *args, **kwargs)
            except BaseException as exc:
                if entry is not None:
                    wait_failed(self, exc, entry)
                raise
            finally:
                if entry is not None:
                    wait_end(entry)

        def _release_acquired(self: Any, key: Any, proto: Any) -> None:
            try:
                # Nothing to check in for placeholders, connections handed out before
                # instrument(), or one a finalizer is returning (gc_returned took it out).
                checkin_of(self, proto)
            except Exception as exc:
                tracker.internal_error("aiohttp.checkin", exc)
            original_release(self, key, proto)

        def _close(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                record = None if self._closed else find_pool(self)
                if record is not None and record.leases:
                    if local.finalizing:
                        for lease in list(record.leases.values()):
                            tracker.end_soon(lease, "closed", _CLOSED_NOTE)
                    else:
                        for key in list(record.leases):
                            tracker.end(record, key, "closed", _CLOSED_NOTE)
            except Exception as exc:
                tracker.internal_error("aiohttp.close", exc)
            return original_close(self, *args, **kwargs)

        def gc_returned(conn_pool: Any, proto: Any, what: str, response: Any = None) -> None:
            """A finalizer is about to release ``proto``: the GC, not the code, returned it."""
            record = find_pool(conn_pool)
            lease = record.leases.get(id(proto)) if record is not None else None
            if lease is not None:
                if response is not None and lease.response is None and response.status:
                    tracker.attach_response(lease, response_facts(response))
                tracker.end_soon(lease, "gc_returned", _GC_NOTE.format(what=what))

        # The finalizers run for every response and connection: exact signatures, no packing.
        def response_del(self: Any) -> None:
            if not getattr(self, "_closed", True):  # dropped unreleased
                try:
                    conn = self._connection
                    if conn is not None and conn.protocol is not None:
                        gc_returned(conn._connector, conn.protocol, "ClientResponse", self)
                except Exception as exc:
                    tracker.internal_error("aiohttp.gc", exc)
            original_response_del(self)

        def connection_del(self: Any) -> None:
            if getattr(self, "_protocol", None) is not None:  # dropped unreleased
                try:
                    gc_returned(self._connector, self._protocol, "Connection")
                except Exception as exc:
                    tracker.internal_error("aiohttp.gc", exc)
            original_connection_del(self)

        def connector_del(self: Any, *args: Any, **kwargs: Any) -> None:
            local.finalizing += 1
            try:
                original_connector_del(self, *args, **kwargs)
            finally:
                local.finalizing -= 1

        # A connect timeout's ConnectionTimeoutError (ServerTimeoutError in 3.9) is built only
        # when a connect timeout happens, while its TimeoutError, raised from the CancelledError
        # that left the wait, is being handled: a hook there costs no request anything.
        def timeout_error_init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_timeout_error_init(self, *args, **kwargs)
            try:
                record = _wait_mark(sys.exc_info()[1])
                if record is not None:
                    tracker.exhausted(record, self)
            except Exception as exc:
                tracker.internal_error("aiohttp.exhausted", exc)

        def timer_timeout(self: Any) -> None:
            try:
                if waits and not self._cancelled:
                    for task in self._tasks:
                        entry = waits.get(task)
                        if entry is not None:
                            entry[1] = True
            except Exception as exc:
                tracker.internal_error("aiohttp.timer", exc)
            original_timer_timeout(self)

        timeout_error = getattr(client_exceptions, "ConnectionTimeoutError", None)
        if timeout_error is None:  # aiohttp 3.9 raises its base class
            timeout_error = client_exceptions.ServerTimeoutError
        original_timeout_error_init = timeout_error.__init__
        original_timer_timeout = helpers.TimerContext.timeout

        patch = self.patcher.patch
        patch(
            connector.Connection,
            "__init__",
            hook(
                original_connection_init,
                connection_init,
                tracker,
                "aiohttp.checkout",
                "after",
                call=checkout_of,
                miss=checkout_first,
                first=1,
                second=3,
            ),
        )
        if original_wait is None:  # before _wait_for_available_connection, connect waited
            patch(base, "connect", wraps(_connect_waiting, original_connect))
        patch(
            base,
            "_release_acquired",
            hook(
                original_release,
                _release_acquired,
                tracker,
                "aiohttp.checkin",
                "before",
                call=checkin_of,
                first=0,
                second=2,
            ),
        )
        patch(base, "_close", wraps(_close, original_close))
        patch(base, "__del__", wraps(connector_del, original_connector_del))
        if original_wait is not None:
            patch(
                base,
                "_wait_for_available_connection",
                wraps(_wait_for_available_connection, original_wait),
            )
        patch(timeout_error, "__init__", wraps(timeout_error_init, original_timeout_error_init))
        patch(helpers.TimerContext, "timeout", wraps(timer_timeout, original_timer_timeout))
        patch(
            client_reqrep.ClientResponse,
            "__del__",
            hook(
                original_response_del,
                response_del,
                tracker,
                "aiohttp.gc",
                "guard",
                attr="_closed",
                value=True,
            ),
        )
        patch(
            connector.Connection,
            "__del__",
            hook(
                original_connection_del,
                connection_del,
                tracker,
                "aiohttp.gc",
                "guard",
                attr="_protocol",
                value=None,
            ),
        )
