"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import poolwatch
from poolwatch import Tracker
from poolwatch._models import CallSite


def pool_of(tracker: Tracker, kind: str | None = None) -> poolwatch.PoolSnapshot:
    """The one pool (of ``kind``, when given) the tracker knows; fails if there are more."""
    (pool,) = [p for p in tracker.snapshot().pools if kind is None or p.kind == kind]
    return pool


def line_after(func: Callable[..., Any], offset: int = 1) -> CallSite:
    """The call site ``offset`` lines below ``func``'s ``def`` (where it takes a connection)."""
    code = func.__code__
    return CallSite(
        code.co_filename, code.co_firstlineno + offset, getattr(code, "co_qualname", code.co_name)
    )


def wait_for_waiter(tracker: Tracker, timeout: float = 5.0) -> poolwatch.PoolSnapshot:
    """Poll the single pool until a caller waits in it (or ``timeout`` passes); its snapshot."""
    deadline = time.monotonic() + timeout
    pool = pool_of(tracker)
    while pool.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
        pool = pool_of(tracker)
    return pool
