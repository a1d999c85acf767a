"""The hooks on httpcore's sync connection pool.

GENERATED from _httpx_async.py by scripts/unasync.py: edit that file, rerun the script.

Each wrapper calls the library first or last exactly as the original would run, and hands what
it saw to ``Hooks`` (``_httpx.py``), whose methods never raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import wraps

if TYPE_CHECKING:
    from ._base import Patcher
    from ._httpx import Hooks

__all__ = ["hook_sync"]


def hook_sync(patcher: Patcher, hooks: Hooks) -> None:
    """Patch httpcore's ConnectionPool, PoolRequest and PoolByteStream."""
    from httpcore._sync import connection_pool as module

    pool_cls = module.ConnectionPool
    request_cls = module.PoolRequest
    stream_cls = module.PoolByteStream
    current = hooks.current
    original_handle = pool_cls.handle_request
    original_wait = request_cls.wait_for_connection
    original_stream_close = stream_cls.close
    original_pool_close = pool_cls.close

    def handle_request(self: Any, request: Any) -> Any:
        call = hooks.enter(self, request)
        if call is None:
            return original_handle(self, request)
        token = current.set(call)
        try:
            response = original_handle(self, request)
        except BaseException as exc:
            hooks.failed(call, exc)
            raise
        finally:
            current.reset(token)
        hooks.responded(call, response)
        return response

    def wait_for_connection(self: Any, timeout: float | None = None) -> Any:
        call = current.get(None)
        if call is None or not hooks.waiting(call, self):
            return original_wait(self, timeout)
        try:
            connection = original_wait(self, timeout)
        except BaseException as exc:
            hooks.wait_failed(call, self, exc)
            raise
        hooks.assigned(call, self, connection)
        return connection

    def stream_close(self: Any) -> None:
        if not self._closed:
            hooks.closing(self)
        original_stream_close(self)

    def pool_close(self: Any) -> None:
        hooks.pool_closing(self)
        original_pool_close(self)

    patcher.patch(pool_cls, "handle_request", wraps(handle_request, original_handle))
    patcher.patch(request_cls, "wait_for_connection", wraps(wait_for_connection, original_wait))
    patcher.patch(stream_cls, "close", wraps(stream_close, original_stream_close))
    patcher.patch(pool_cls, "close", wraps(pool_close, original_pool_close))
