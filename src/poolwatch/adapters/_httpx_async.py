"""The hooks on httpcore's async connection pool.

Written by hand; scripts/unasync.py generates _httpx_sync.py from it (`--check` in CI).

Each wrapper calls the library first or last exactly as the original would run, and hands what
it saw to ``Hooks`` (``_httpx.py``), whose methods never raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import wraps

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
    current = hooks.current
    original_handle = pool_cls.handle_async_request
    original_wait = request_cls.wait_for_connection
    original_stream_aclose = stream_cls.aclose
    original_pool_aclose = pool_cls.aclose

    async def handle_async_request(self: Any, request: Any) -> Any:
        call = hooks.enter(self, request)
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

    async def wait_for_connection(self: Any, timeout: float | None = None) -> Any:
        call = current.get(None)
        if call is None or not hooks.waiting(call, self):
            return await original_wait(self, timeout)
        try:
            connection = await original_wait(self, timeout)
        except BaseException as exc:
            hooks.wait_failed(call, self, exc)
            raise
        hooks.assigned(call, self, connection)
        return connection

    async def stream_aclose(self: Any) -> None:
        if not self._closed:
            hooks.closing(self)
        await original_stream_aclose(self)

    async def pool_aclose(self: Any) -> None:
        hooks.pool_closing(self)
        await original_pool_aclose(self)

    patcher.patch(pool_cls, "handle_async_request", wraps(handle_async_request, original_handle))
    patcher.patch(request_cls, "wait_for_connection", wraps(wait_for_connection, original_wait))
    patcher.patch(stream_cls, "aclose", wraps(stream_aclose, original_stream_aclose))
    patcher.patch(pool_cls, "aclose", wraps(pool_aclose, original_pool_aclose))
