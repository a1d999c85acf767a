"""The hooks on httpcore's async connection pool.

Written by hand; scripts/unasync.py generates _httpx_sync.py from it (`--check` in CI).

Each wrapper calls the library first or last exactly as the original would run. The common
case of every request (a pool seen before, a connection the pool assigned at once, a response,
its stream closed) is done here with the tracker's hot-path methods; every other case goes to
``Hooks`` (``_httpx.py``), whose methods never raise. ``wait_for_connection`` and the stream's
close are plain functions even here: when the pool has assigned the connection, waiting for it
returns at once, so the lease starts as the wait is called and the original's coroutine is
returned as it is. Where this build has the C hot path, they run as C hooks (``_speedups.c``),
and so does the sync ``handle_request``; each does the same common case and calls the wrapper
here for the rest (an async one cannot run in C: C cannot await).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import hook, wraps
from ._httpx import Call, new_call

if TYPE_CHECKING:
    from ._base import Patcher
    from ._httpx import Hooks

__all__ = ["hook_async"]


def hook_async(patcher: Patcher, hooks: Hooks) -> None:
    """Patch httpcore's AsyncConnectionPool, AsyncPoolRequest and PoolByteStream."""
    from httpcore._async import connection_pool as module

    pool_cls = module.AsyncConnectionPool
    request_cls = module.AsyncPoolRequest
    stream_cls = module.PoolByteStream
    tracker = hooks.tracker
    current = hooks.current
    original_handle = pool_cls.handle_async_request
    original_wait = request_cls.wait_for_connection
    original_stream_aclose = stream_cls.aclose
    original_pool_aclose = pool_cls.aclose

    async def handle_async_request(self: Any, request: Any) -> Any:
        call = None
        try:
            record = tracker.find_pool(self)
            if record is None:  # a pool seen for the first time
                call = hooks.enter(self, request)
            else:
                call = new_call()
                call.record = record
        except Exception as exc:
            tracker.internal_error("httpx.request", exc)
        if call is None:
            return await original_handle(self, request)
        token = current.set(call)
        try:
            response = await original_handle(self, request)
        except BaseException as exc:
            hooks.failed(call, exc)
            raise
        finally:
            current.reset(token)
        hooks.responded(call, response)
        return response

    def wait_for_connection(self: Any, timeout: float | None = None) -> Any:
        call = current.get(None)
        if call is None:
            return original_wait(self, timeout)
        connection = self.connection
        if call.pool_request is not None or connection is None:
            # Queued (a pool wait, maybe a timeout), or httpcore's retry on another connection.
            return waited(call, self, timeout)
        # The pool assigned this request a connection as it queued it: the lease starts, at the
        # call site checkout finds, and the original returns that connection at once.
        call.pool_request = self
        try:
            call.connection = connection
            call.lease = tracker.checkout(call.record, id(self), connection)
        except Exception as exc:
            tracker.internal_error("httpx.checkout", exc)
        return original_wait(self, timeout)

    async def waited(call: Call, pool_request: Any, timeout: float | None) -> Any:
        if not hooks.waiting(call, pool_request):
            return await original_wait(pool_request, timeout)
        try:
            connection = await original_wait(pool_request, timeout)
        except BaseException as exc:
            hooks.wait_failed(call, pool_request, exc)
            raise
        hooks.assigned(call, pool_request, connection)
        return connection

    def stream_aclose(self: Any) -> Any:
        # The request leaves the pool as its stream's close is called (what the C hook does).
        # A second close finds no lease to check in: no need to read the stream's _closed.
        hooks.closing(self)
        return original_stream_aclose(self)

    async def pool_aclose(self: Any) -> None:
        hooks.pool_closing(self)
        await original_pool_aclose(self)

    handle = hooks.handle_async(handle_async_request, original_handle)
    wait = hooks.wait(wait_for_connection, original_wait)
    patcher.patch(pool_cls, "handle_async_request", handle)
    patcher.patch(request_cls, "wait_for_connection", wait)
    patcher.patch(
        stream_cls,
        "aclose",
        hook(
            original_stream_aclose,
            stream_aclose,
            tracker,
            "httpx.checkin",
            "before",
            call=tracker.checkin_of,
            first="_pool",
            second="_pool_request",
        ),
    )
    patcher.patch(pool_cls, "aclose", wraps(pool_aclose, original_pool_aclose))
