"""httpx and httpcore, sync and async: hooks at httpcore's connection pool.

Every httpx client reaches an httpcore ``ConnectionPool`` / ``AsyncConnectionPool`` (default
transports, ``transport=``, ``mounts=``, proxies: ``HTTPProxy`` and ``SOCKSProxy`` subclass the
pool), and so do programs that use httpcore directly. So the hooks sit on the pool's classes,
never on httpx, and catch every client however it was built:

- ``handle_request`` carries the pool and the lease between the hooks below (a ``ContextVar``
  that lives as long as the call), attaches the response facts and, when the call fails, tells a
  cleaned-up failure from a connection the library orphaned.
- checkout is ``PoolRequest.wait_for_connection`` returning: the pool has assigned a connection
  to the request, which is what httpcore's repr counts as an active request. Waiting there while
  the request is queued is a pool wait; ``PoolTimeout`` raised there is an exhaustion.
- checkin is ``PoolByteStream.close`` / ``aclose`` (the response's stream), which removes the
  request from the pool. The stream is the lease's owner: collected while leased means the user
  dropped an unclosed response and the pool keeps the slot for ever (see FACTS.md).

The async hooks are written once in ``_httpx_async.py``; ``_httpx_sync.py`` is generated from it
by ``scripts/unasync.py`` (as httpcore does for itself). The wrappers do the common case of a
request themselves (each Python frame on the per-request path costs about as much as the C
tracker calls it makes); for every other case they call the plain functions of ``Hooks`` here,
so what is decided (orphan or not, the wording of a diagnosis) exists once.

Lease keys are ``id(pool_request)``, not the connection: an HTTP/2 connection carries several
requests at once, each its own lease.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

from .._models import ResponseFacts
from .._native import speedups
from ._base import Adapter, hook, wraps

if TYPE_CHECKING:
    from .._tracker import LeaseRecord, PoolRecord, PoolStats, Tracker

__all__ = ["Call", "Hooks", "HttpxAdapter", "pool_state", "response_facts"]


def _origin(request: Any) -> str:
    """`http://127.0.0.1:8080`: scheme, host and port only; never credentials or the target."""
    origin = request.url.origin
    host = origin.host.decode("ascii")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal (httpcore's own str() leaves it bare)
    return f"{origin.scheme.decode('ascii')}://{host}:{origin.port}"


def _stats(pool: Any) -> PoolStats:
    # Lists are copied without the pool's lock: a sync pool's lock is not re-entrant and the
    # snapshot may be taken from anywhere; a copy of a list is atomic under the GIL.
    cap = pool._max_connections
    idle = sum(1 for connection in list(pool._connections) if connection.is_idle())
    waiting = sum(1 for request in list(pool._requests) if request.connection is None)
    return (None if cap >= sys.maxsize else cap), idle, waiting


def _socket_of(connection: Any) -> Any:
    """The socket under a pool connection: HTTPConnection -> HTTP11/HTTP2 (-> via a proxy)."""
    for _ in range(4):
        stream = getattr(connection, "_network_stream", None)
        if stream is not None:
            return stream.get_extra_info("socket")
        connection = getattr(connection, "_connection", None)
        if connection is None:
            return None
    return None


def _idle_of(pool: Any) -> list[Any]:
    sockets = (_socket_of(c) for c in list(pool._connections) if c.is_idle())
    return [sock for sock in sockets if sock is not None]


def _int(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


#: Facts seen before, by their raw header values: a service sees few distinct responses, and
#: building a frozen dataclass costs more than this lookup. Bounded: cleared when full.
_FACTS: dict[tuple[int, bytes | None, bytes | None, bytes | None], ResponseFacts] = {}
_FACTS_MAX = 512


def response_facts(status: int, headers: Any) -> ResponseFacts:
    """Status, content type and framing from httpcore's raw headers; no other header value."""
    content_type = length = encoding = None
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            encoding = value
    key = (status, content_type, length, encoding)
    facts = _FACTS.get(key)
    if facts is None:
        chunked = encoding is not None and b"chunked" in encoding.lower()
        facts = ResponseFacts(
            status,
            content_type.decode("latin-1") if content_type is not None else None,
            _int(length) if length is not None and not chunked else None,
            chunked,
        )
        if len(_FACTS) >= _FACTS_MAX:
            _FACTS.clear()
        _FACTS[key] = facts
    return facts


def pool_state(pool: Any) -> str:
    """httpcore's own repr of the pool, built without taking its (non re-entrant) lock."""
    requests = list(pool._requests)
    connections = list(pool._connections)
    queued = sum(1 for r in requests if r.connection is None)
    idle = sum(1 for c in connections if c.is_idle())
    return (
        f"<{type(pool).__name__} [Requests: {len(requests) - queued} active, {queued} queued | "
        f"Connections: {len(connections) - idle} active, {idle} idle]>"
    )


def _stranded(pool: Any) -> list[Any]:
    """Connections in the pool that are not idle, not closed and serve no request.

    httpcore 1.0 leaves one behind when a request is cancelled after the pool assigned it a
    new connection but before that connection connected (upstream issue #1093): it is neither
    idle, closed nor expired, so no cleanup branch matches it, and it counts against
    ``max_connections`` until the pool is closed.
    """
    # Connections first: a request is queued before any connection is made for it, so every
    # connection in this copy that serves a request has that request in the later copy.
    connections = list(pool._connections)
    serving = {id(r.connection) for r in list(pool._requests) if r.connection is not None}
    return [
        c
        for c in connections
        if id(c) not in serving and not (c.is_idle() or c.is_closed() or c.is_available())
    ]


def _live(lease: LeaseRecord) -> bool:
    """Still leased (not returned, ended, or lost to the garbage collector)."""
    return lease.pool.leases.get(lease.key) is lease


class Call:
    """One ``handle_request`` call as the hooks see it: ``call = new_call(); call.record = ...``.

    No ``__init__``: the fields start as these class defaults, and making one runs no Python
    frame (one per request would cost about as much as the tracker's own checkout). Where this
    build has the C hot path, ``new_call`` makes its C twin, which the C hooks also make.
    """

    record: PoolRecord
    site: Any = None
    wait: int | None = None
    pool_request: Any = None
    connection: Any = None
    lease: LeaseRecord | None = None


new_call: Callable[[], Call] = speedups.Call if speedups is not None else Call


class Hooks:
    """What the generated sync and hand-written async wrappers call: plain, never raising."""

    def __init__(self, tracker: Tracker, pool_timeout: type[BaseException]) -> None:
        self.tracker = tracker
        self.pool_timeout = pool_timeout
        self.current: ContextVar[Call | None] = ContextVar("poolwatch_httpcore_call")
        # What the C hooks are given: (var, find_pool, failed, attach_response, set_owner, facts)
        self.state = (
            self.current,
            tracker.find_pool,
            self.failed,
            tracker.attach_response,
            tracker.set_owner,
            response_facts,
        )
        self.responded: Callable[[Call, Any], None] = self._responded
        if speedups is not None:
            self.responded = partial(
                speedups.httpcore_responded, tracker.internal_error, self.state
            )

    def enter(self, pool: Any, request: Any) -> Call | None:
        """A request enters a pool seen for the first time (the wrappers looked): register it."""
        tracker = self.tracker
        try:
            record = tracker.pool(
                pool,
                "httpx",
                _origin(request),
                stats=_stats,
                socket_of=_socket_of,
                idle_of=_idle_of,
            )
            call = new_call()
            call.record = record
            return call
        except Exception as exc:
            tracker.internal_error("httpx.request", exc)
            return None

    def waiting(self, call: Call, pool_request: Any) -> bool:
        """The request is about to wait for its connection; False = do not follow it."""
        tracker = self.tracker
        try:
            if call.pool_request is None:
                call.pool_request = pool_request
            elif call.pool_request is not pool_request:
                return False  # not the request this call queued (never in httpcore 1.0)
            if call.site is None:  # 1: this method; the wrapper above it is poolwatch's too
                call.site = tracker.callsites.capture(tracker.stack_depth, 1)
            if pool_request.connection is None:
                call.wait = tracker.wait_begin(call.record, call.site)
            return True
        except Exception as exc:
            tracker.internal_error("httpx.checkout", exc)
            return False

    def assigned(self, call: Call, pool_request: Any, connection: Any) -> None:
        """The pool gave the request a connection: the lease starts."""
        tracker = self.tracker
        try:
            if call.wait is not None:
                tracker.wait_end(call.wait)
                call.wait = None
            call.connection = connection
            lease = call.lease
            if lease is not None and _live(lease):
                # httpcore retries on another connection (ConnectionNotAvailable: two queued
                # requests were given the same idle connection). Still one request, one lease.
                tracker.reconnect(lease, connection)
            else:
                call.lease = tracker.checkout(call.record, id(pool_request), connection, call.site)
        except Exception as exc:
            tracker.internal_error("httpx.checkout", exc)

    def wait_failed(self, call: Call, pool_request: Any, exc: BaseException) -> None:
        """Waiting ended in an exception: a pool timeout, or a cancellation."""
        tracker = self.tracker
        try:
            if call.wait is not None:
                tracker.wait_end(call.wait)
                call.wait = None
            if isinstance(exc, self.pool_timeout):
                self.exhausted(call.record, exc)
            connection = pool_request.connection
            if connection is not None:
                # Assigned while the waiter was being cancelled or timed out: the waiter never
                # saw it, but the pool did. Lease it so that ``failed`` can tell what became of it.
                self.assigned(call, pool_request, connection)
        except Exception as inner:
            tracker.internal_error("httpx.wait", inner)

    def exhausted(self, record: PoolRecord, exc: BaseException) -> None:
        """Count a ``PoolTimeout`` and make its message say why.

        httpcore raises it with an empty message and httpx re-raises ``httpx.PoolTimeout(str(exc))``
        from it, so only the message reaches httpx users: a note on the httpcore exception would
        be lost to ``str()`` and printed twice in tracebacks. So the diagnosis goes in ``args``.
        """
        tracker = self.tracker
        text = tracker.exhausted(record)
        pool = record.ref()
        if pool is not None:
            text += f"\n  httpcore's view: {pool_state(pool)}"
            stranded = _stranded(pool)
            if stranded:
                states = ", ".join(sorted({c.info() for c in stranded}))
                text += (
                    f"\n  {len(stranded)} connection{'s' if len(stranded) > 1 else ''} in it "
                    f"serve{'' if len(stranded) > 1 else 's'} no request ({states}): orphaned "
                    "by cancelled requests, each holds its slot until the client is closed."
                )
        message = str(exc)
        exc.args = (f"{message}\n{text}" if message else text,)

    def _responded(self, call: Call, response: Any) -> None:
        """``responded``: the pool returned ``response`` for the call's lease (C where the hot
        path is). Its stream owns the lease; its facts are computed only if the lease is ever
        read: nearly all are returned a moment later."""
        lease = call.lease
        if lease is None:
            return
        tracker = self.tracker
        try:
            if _live(lease):
                tracker.attach_response(lease, (response_facts, response.status, response.headers))
                tracker.set_owner(lease, response.stream)
        except Exception as exc:
            tracker.internal_error("httpx.response", exc)

    def failed(self, call: Call, exc: BaseException) -> None:
        """The request failed after the pool's own cleanup: clean, or an orphaned connection."""
        tracker = self.tracker
        try:
            if call.wait is not None:
                tracker.wait_end(call.wait)
                call.wait = None
            lease = call.lease
            if lease is None or not _live(lease):
                return
            pool = call.record.ref()
            connection = call.connection
            if (
                pool is not None
                and connection is not None
                and any(c is connection for c in _stranded(pool))
            ):
                note = (
                    f"{type(exc).__name__} ended the request after the pool had assigned it a "
                    f"connection; httpcore kept that connection ({connection.info()}) with no "
                    f"request on it, so its slot stays taken until the client is closed: "
                    f"{pool_state(pool)}"
                )
                tracker.end_record(lease, "orphaned", note)
            else:
                how = "failed" if isinstance(exc, Exception) else "cancelled"
                tracker.checkin_record(lease, how)
        except Exception as inner:
            tracker.internal_error("httpx.failed", inner)

    def closing(self, stream: Any) -> None:
        """A response stream closes: its request leaves the pool."""
        try:
            self.tracker.checkin_of(stream._pool, stream._pool_request)
        except Exception as exc:
            self.tracker.internal_error("httpx.checkin", exc)

    def handle_async(self, wrapper: Any, original: Any) -> Any:
        """What replaces ``AsyncConnectionPool.handle_async_request``: the Python wrapper, a
        coroutine (C cannot await)."""
        return wraps(wrapper, original)

    def handle_sync(self, wrapper: Any, original: Any) -> Any:
        """What replaces ``ConnectionPool.handle_request``: its C twin where this build has one
        (``_speedups.c``), which runs ``wrapper`` for every case it does not handle itself."""
        return hook(
            original, wrapper, self.tracker, "httpx.failed", "httpcore_handle", state=self.state
        )

    def wait(self, wrapper: Any, original: Any) -> Any:
        """What replaces ``wait_for_connection`` (a plain function for both pools, see
        ``_httpx_async.py``): its C twin where this build has one."""
        state = (self.current, self.tracker.checkout)
        return hook(original, wrapper, self.tracker, "httpx.checkout", "httpcore_wait", state=state)

    def pool_closing(self, pool: Any) -> None:
        """The pool closes: responses still open were never closed by the code that took them.

        Only leases with a response: a request still waiting for its headers is another
        task's or thread's call in flight, which fails on its own.
        """
        tracker = self.tracker
        try:
            record = tracker.find_pool(pool)
            if record is None:
                return
            for lease in list(record.leases.values()):
                if lease.response is not None:
                    # This lease, not whatever its key holds by now: reading its response may
                    # run Python, and meanwhile it may end and its key be leased again.
                    tracker.end_record(
                        lease, "closed", "the client was closed with this response open"
                    )
        except Exception as exc:
            tracker.internal_error("httpx.close", exc)


class HttpxAdapter(Adapter):
    """httpx and httpcore (sync and async) through httpcore's ConnectionPool."""

    name = "httpx"
    module = "httpcore"
    distribution = "httpcore"
    tested = ((1, 0), (1, 1))

    def _install(self, tracker: Tracker) -> None:
        import httpcore

        from ._httpx_async import hook_async
        from ._httpx_sync import hook_sync

        hooks = Hooks(tracker, httpcore.PoolTimeout)
        hook_async(self.patcher, hooks)
        hook_sync(self.patcher, hooks)
